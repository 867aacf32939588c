//! `TidingsClient`: one install — its state directory, its relay and, once signed in, its
//! account (device-link's [`Account`] engine: config sync, inbox, push handling).
//!
//! Every exported async method hands its work to the crate's runtime
//! ([`Inner::run`], tracked so `stop` can wait for it); the background loops (polling, the Fast Mode supervisor) run
//! there too, from `connect` until `stop` / `shutdown` or the object is freed.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tidings_device_link::{
    account::{Account, Progress as AccountProgress, ProgressStage as AccountStage, RelaySettings},
    client::RelayClient,
    config::Documents,
    identity::parse_account_id,
    state::DeviceState,
};
use tokio::task::JoinHandle;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use zeroize::Zeroizing;

use crate::{
    cancel::{Cancellation, cancellable},
    driver::DriverState,
    error::{Result, TidingsError},
    events::{Event, EventListener, Events},
    link::LinkState,
    push::key32,
    runtime,
    types::{
        CONFIG_NAMESPACE, ClientOptions, ConfigChange, ConfigDocument, DecryptedPush, MESSAGE_NAMESPACE,
        Operation, Progress, ProgressStage, PushKind, PushOutcome, SendReceipt, SyncSummary, hash_hex,
    },
};

/// How long `stop` waits for running tasks: each ends at its next await, so only a state
/// write or a callback in progress can hold it up.
const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// `handle_push`'s default budget: Android gives `onMessageReceived` about 10 s.
const DEFAULT_PUSH_BUDGET_MS: u32 = 8_000;

/// Shared by the client object and its background tasks.
pub(crate) struct Inner {
    pub dir: PathBuf,
    pub key: Zeroizing<[u8; 32]>,
    pub settings: RelaySettings,
    /// For calls that need no account (sending, checking the relay).
    pub relay: RelayClient,
    pub options: ClientOptions,
    pub events: Events,
    /// This client's handle on the state directory: device id, push key, and its own
    /// blobs. The account engine has its own for everything account-related; the two never
    /// write the same file (see `DeviceState`: one file per blob), except that the engine's
    /// sign-out deletes this handle's Web Push keys while the loops are stopped.
    pub(crate) store: Mutex<DeviceState>,
    account: RwLock<Option<Account>>,
    pub driver: Mutex<DriverState>,
    /// Serialises Subscribe / Unsubscribe, so a renewal never races a new token.
    pub registration: tokio::sync::Mutex<()>,
    /// Bumped whenever the loops should look again (mode change, sign-in).
    pub wake: tokio::sync::watch::Sender<u64>,
    pub link: tokio::sync::Mutex<LinkState>,
    pub shutdown: CancellationToken,
    /// Every task of this client (calls and loops), so `stop` can wait for them.
    calls: TaskTracker,
    /// The background loops, aborted at sign-out and stop.
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("relay", &self.settings.url)
            .finish_non_exhaustive()
    }
}

/// One install: state directory, relay connection, account, Fast/Slow Mode driver.
#[derive(uniffi::Object)]
pub struct TidingsClient {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for TidingsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TidingsClient").finish_non_exhaustive()
    }
}

impl Drop for TidingsClient {
    fn drop(&mut self) {
        self.inner.stop();
    }
}

#[uniffi::export(async_runtime = "tokio")]
impl TidingsClient {
    /// Opens the install's state in `state_dir` (created on first use) under `state_key`
    /// (32 bytes the app keeps in the Keychain / Keystore), for the relay at `relay_url`
    /// (`https://host:port`, or `http://` for a local relay). Reads the state off the
    /// caller's thread and does no network I/O: call `connect` to start receiving. Open
    /// each state directory with one client at a time (a notification extension uses
    /// `NotificationProcessor`, which only reads).
    #[uniffi::constructor(default(listener = None, options = None))]
    pub async fn open(
        state_dir: String,
        state_key: Vec<u8>,
        relay_url: String,
        listener: Option<Arc<dyn EventListener>>,
        options: Option<ClientOptions>,
    ) -> Result<Arc<TidingsClient>> {
        let key = Zeroizing::new(key32(&state_key, "state_key")?);
        let handle = runtime::handle();
        let opened = handle.spawn_blocking(move || {
            let options = options.unwrap_or_default();
            Inner::open(PathBuf::from(state_dir), key, &relay_url, listener, options)
        });
        let inner = opened.await.map_err(|e| TidingsError::State {
            kind: crate::error::StateFailure::Internal,
            reason: format!("opening the state failed: {e}"),
        })??;
        Ok(Arc::new(TidingsClient {
            inner: Arc::new(inner),
        }))
    }

    /// Sets (or with `None` removes) the listener events go to.
    pub fn set_listener(&self, listener: Option<Arc<dyn EventListener>>) {
        self.inner.events.set_listener(listener);
    }

    /// Starts receiving: the polling loops, the Fast Mode supervisor (renewal, fallback)
    /// and the upload of changes an earlier run could not send. Then checks that the relay
    /// answers: an unreachable relay fails with `Unreachable`, but the loops run anyway and
    /// retry. Calling it again only re-checks the relay.
    pub async fn connect(&self) -> Result<()> {
        let inner = self.inner.clone();
        self.inner
            .run(async move {
                inner.ingest_journal();
                inner.start_loops();
                inner.relay.relay_info().await?;
                Ok(())
            })
            .await
    }

    /// Stops the client for good (also done when the object is freed): cancels its calls
    /// and background loops and waits until they have ended (each ends at its next await,
    /// so this is brief), after which nothing touches the state directory and no event is
    /// reported. Queued config changes stay queued for the next run. Not `close`: Kotlin's
    /// generated `AutoCloseable.close()` frees the object itself.
    pub fn stop(&self) {
        self.inner.stop();
    }

    /// `stop` for async callers: cancels the client's calls and loops and waits, off the
    /// caller's thread and for at most 10 s, until they have ended. After it returns
    /// nothing touches the state directory and no event is reported.
    pub async fn shutdown(&self) {
        let inner = self.inner.clone();
        let stopped = runtime::handle().spawn_blocking(move || inner.stop());
        // Only a panic inside `stop` could fail this; the client is cancelled either way.
        let _ = stopped.await;
    }

    // ---- account ------------------------------------------------------------------

    /// Creates a new account (a fresh 12-word phrase) on this signed-out install and
    /// returns its account id. Show `phrase()` to the user to write down. Writes the
    /// state off the caller's thread; touches no network.
    pub async fn create_account(&self) -> Result<String> {
        let inner = self.inner.clone();
        self.inner
            .run(async move {
                if inner.account().is_some() {
                    return Err(TidingsError::AlreadySignedIn);
                }
                let (account, _phrase) =
                    Account::create(&inner.dir, &inner.key, inner.settings.clone()).await?;
                let id = account.account_id();
                *inner.account_slot() = Some(account);
                inner.poke();
                Ok(id)
            })
            .await
    }

    /// Restores an account from its 12- or 24-word phrase: derives the keys, then fetches
    /// and merges the account's config before anything is uploaded (progress through
    /// `on_progress`). Returns the account id. A mistyped word fails with `BadWord`
    /// (its position; `suggest_words` offers the closest words), a wrong word with
    /// `BadChecksum`.
    ///
    /// `cancel` ends it with `Cancelled`, leaving no account behind (the identity is
    /// written last).
    #[uniffi::method(default(cancel = None))]
    pub async fn restore_account(&self, phrase: String, cancel: Option<Arc<Cancellation>>) -> Result<String> {
        let phrase = Zeroizing::new(phrase);
        let inner = self.inner.clone();
        self.inner
            .run(cancellable(cancel, async move {
                if inner.account().is_some() {
                    return Err(TidingsError::AlreadySignedIn);
                }
                let progress = inner.progress_reporter(Operation::Restore);
                let account =
                    Account::restore(&inner.dir, &inner.key, inner.settings.clone(), &phrase, progress)
                        .await?;
                Ok(inner.adopt(account))
            }))
            .await
    }

    /// The recovery phrase, if signed in. Show it only on the user's request.
    pub fn phrase(&self) -> Option<String> {
        self.inner.account().map(|a| a.recovery_phrase().to_string())
    }

    /// The account id (`"01"` + 64 hex digits), if signed in: what others send to.
    pub fn account_id(&self) -> Option<String> {
        self.inner.account().map(|a| a.account_id())
    }

    /// This install's push key (32 bytes): store it where the Notification Service
    /// Extension can read it (a shared Keychain group) for `decrypt_push`.
    pub fn push_key(&self) -> Vec<u8> {
        self.inner.lock_store().push_key().to_vec()
    }

    /// This install's device id (16 bytes, as hex): tells the account's devices apart.
    pub fn device_id(&self) -> String {
        hex::encode(self.inner.lock_store().device_id())
    }

    // ---- messages -------------------------------------------------------------------

    /// Sends `data` (the app's own encrypted envelope) to another account's mailbox.
    /// Idempotent: sending the same bytes twice stores them once.
    pub async fn send(&self, recipient_account_id: String, data: Vec<u8>) -> Result<SendReceipt> {
        let recipient =
            parse_account_id(&recipient_account_id).map_err(|_| TidingsError::InvalidAccountId)?;
        let inner = self.inner.clone();
        self.inner
            .run(async move {
                let resp = inner
                    .relay
                    .store(&recipient, MESSAGE_NAMESPACE, &data, inner.options.message_ttl_ms)
                    .await?;
                Ok(SendReceipt {
                    hash: hash_hex(&resp.hash),
                    seq: resp.seq,
                    expires_ms: resp.expires_ms,
                    duplicate: resp.duplicate,
                })
            })
            .await
    }

    /// Sends `plaintext` to another account as a sealed message (DESIGN.md "Sealed
    /// messages between accounts"): only the recipient can open it, it names this
    /// account as the sender to the recipient alone (so its notification can show a
    /// contact's name), and the relay sees only a padded ciphertext. The recipient's
    /// `IncomingMessage` has `sender_account_id` and `plaintext` set.
    pub async fn send_message(
        &self,
        recipient_account_id: String,
        plaintext: Vec<u8>,
    ) -> Result<SendReceipt> {
        let inner = self.inner.clone();
        self.inner
            .run(async move {
                let account = inner.require_account()?;
                let plaintext = Zeroizing::new(plaintext);
                let resp = account.send_sealed(&recipient_account_id, &plaintext).await?;
                Ok(SendReceipt {
                    hash: hash_hex(&resp.hash),
                    seq: resp.seq,
                    expires_ms: resp.expires_ms,
                    duplicate: resp.duplicate,
                })
            })
            .await
    }

    /// Fetches everything new once — messages and config — without waiting: for a
    /// background refresh (Android WorkManager, iOS background fetch) or pull-to-refresh.
    /// Returns the new messages (also reported through `on_message`, and pending until
    /// acknowledged). `cancel` ends it with `Cancelled`; what was fetched by then stays
    /// pending.
    #[uniffi::method(default(cancel = None))]
    pub async fn sync_now(&self, cancel: Option<Arc<Cancellation>>) -> Result<SyncSummary> {
        let inner = self.inner.clone();
        self.inner
            .run(cancellable(cancel, async move { inner.sync_now().await }))
            .await
    }

    /// Handles a push the app received (the `enc` field of the APNs payload or the FCM
    /// data): decrypts it, saves the message as pending and reports it unless it arrived
    /// already, fetches it when the push did not carry it, and merges config changes.
    /// Also tells the Fast/Slow driver that pushes arrive.
    ///
    /// Returns within `budget_ms` (default 8 000, for Android's ~10 s
    /// `onMessageReceived`): a fetch or sync that does not finish in time is left to
    /// polling (`complete` is false), and nothing is lost.
    #[uniffi::method(default(budget_ms = None))]
    pub async fn handle_push(&self, enc: String, budget_ms: Option<u32>) -> Result<PushOutcome> {
        let inner = self.inner.clone();
        let budget = Duration::from_millis(u64::from(budget_ms.unwrap_or(DEFAULT_PUSH_BUDGET_MS)));
        self.inner
            .run(async move { inner.handle_push(&enc, budget).await })
            .await
    }
}

impl Inner {
    /// Reads the state in `dir` and builds the client around it; on a blocking thread of
    /// the crate's runtime (tonic channels start their worker on the runtime they are made
    /// in, and the account engine's open is a short read of the state files).
    fn open(
        dir: PathBuf,
        key: Zeroizing<[u8; 32]>,
        relay_url: &str,
        listener: Option<Arc<dyn EventListener>>,
        options: ClientOptions,
    ) -> Result<Inner> {
        let store = DeviceState::open(&dir, &key)?;
        let mut settings = RelaySettings::new(relay_url);
        settings.message_ttl_ms = options.message_ttl_ms;
        options.apply_to(&mut settings.client);
        let handle = runtime::handle();
        let _guard = handle.enter();
        let relay = RelayClient::connect_lazy(&settings.url, settings.client.clone())?;
        let account = match store.identity()? {
            Some(_) => Some(handle.block_on(Account::open(&dir, &key, settings.clone()))?),
            None => None,
        };
        let driver = DriverState::load(&store, &options)?;
        let (wake, _) = tokio::sync::watch::channel(0);
        Ok(Inner {
            dir,
            key,
            settings,
            relay,
            options,
            events: Events::start(listener),
            store: Mutex::new(store),
            account: RwLock::new(account),
            driver: Mutex::new(driver),
            registration: tokio::sync::Mutex::new(()),
            wake,
            link: tokio::sync::Mutex::new(LinkState::default()),
            shutdown: CancellationToken::new(),
            calls: TaskTracker::new(),
            tasks: Mutex::new(Vec::new()),
        })
    }

    pub(crate) fn account_slot(&self) -> std::sync::RwLockWriteGuard<'_, Option<Account>> {
        self.account.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The signed-in account.
    pub(crate) fn account(&self) -> Option<Account> {
        self.account
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The signed-in account, or `NotSignedIn`.
    pub(crate) fn require_account(&self) -> Result<Account> {
        self.account().ok_or(TidingsError::NotSignedIn)
    }

    /// This client's device-state handle.
    pub(crate) fn lock_store(&self) -> MutexGuard<'_, DeviceState> {
        // A panic while it was held left the state as its last completed write did.
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tells the loops to look again.
    pub(crate) fn poke(&self) {
        self.wake.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Takes a restored or linked account as this install's; returns its id.
    pub(crate) fn adopt(&self, account: Account) -> String {
        let id = account.account_id();
        let documents = account.documents();
        *self.account_slot() = Some(account);
        self.config_changed(None, &documents);
        self.poke();
        id
    }

    /// Reports an account engine's restore progress as `on_progress` events.
    pub(crate) fn progress_reporter(
        &self,
        operation: Operation,
    ) -> impl Fn(AccountProgress) + Send + Sync + 'static {
        let events = self.events.clone();
        move |p: AccountProgress| {
            events.send(Event::Progress(Progress {
                operation,
                stage: match p.stage {
                    AccountStage::Fetching => ProgressStage::Fetching,
                    AccountStage::Merging => ProgressStage::Merging,
                    AccountStage::Done => ProgressStage::Done,
                },
                done: p.messages,
                total: p.total,
                bytes: p.bytes,
            }));
        }
    }

    /// Starts the background loops once.
    pub(crate) fn start_loops(self: &Arc<Self>) {
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        if !tasks.is_empty() || self.shutdown.is_cancelled() {
            return;
        }
        let handle = runtime::handle();
        let calls = &self.calls;
        tasks.push(calls.spawn_on(crate::driver::poll_loop(self.clone(), MESSAGE_NAMESPACE), handle));
        tasks.push(calls.spawn_on(crate::driver::poll_loop(self.clone(), CONFIG_NAMESPACE), handle));
        tasks.push(calls.spawn_on(crate::driver::supervisor(self.clone()), handle));
        tasks.push(calls.spawn_on(crate::sign_out::unsubscribe_loop(self.clone()), handle));
    }

    /// Aborts the loops; true when they were running.
    fn abort_loops(&self) -> bool {
        let tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        let running = !tasks.is_empty();
        for t in tasks.iter() {
            t.abort();
        }
        running
    }

    /// Aborts the loops and waits until they have ended (an abort takes effect at the
    /// task's next await, possibly after a state write); true when they were running.
    pub(crate) async fn stop_loops(&self) -> bool {
        let running = self.abort_loops();
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        for t in tasks {
            // Aborted, or ended on its own: either way it no longer runs.
            let _ = t.await;
        }
        running
    }

    /// Runs one exported call on the runtime, tracked and cancelled by `stop`.
    pub(crate) async fn run<T, F>(&self, fut: F) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        runtime::run(&self.calls, &self.shutdown, fut).await
    }

    /// Stops everything for good: no callback is made, and (called off the runtime) no
    /// task touches the state directory once this returns, so the app may delete it.
    pub(crate) fn stop(&self) {
        self.shutdown.cancel();
        self.abort_loops();
        self.calls.close();
        self.events.close();
        runtime::wait_blocking(&self.calls, STOP_WAIT);
    }

    /// One round of polling `namespace` (long-polling up to `wait_ms`). Returns how many
    /// new messages (or config changes) it brought.
    pub(crate) async fn poll_namespace(&self, namespace: i32, wait_ms: u32) -> Result<u32> {
        let account = self.require_account()?;
        if namespace == CONFIG_NAMESPACE {
            let before = account.documents();
            let changed = if wait_ms > 0 {
                account.sync_wait(wait_ms).await?
            } else {
                account.sync().await?
            };
            if changed {
                self.config_changed(Some(&before), &account.documents());
            }
            return Ok(u32::from(changed));
        }
        let ticket = self.poll_ticket();
        let fresh = account.receive(wait_ms).await?;
        let fresh = self.report_messages(fresh);
        self.note_polled(ticket, &fresh);
        Ok(u32::try_from(fresh.len()).unwrap_or(u32::MAX))
    }

    /// Reports which documents differ from `before` (all four when it is unknown).
    pub(crate) fn config_changed(&self, before: Option<&Documents>, after: &Documents) {
        let mut documents = Vec::new();
        let all = before.is_none();
        if all || before.is_some_and(|b| b.profile != after.profile) {
            documents.push(ConfigDocument::Profile);
        }
        if all || before.is_some_and(|b| b.contacts != after.contacts) {
            documents.push(ConfigDocument::Contacts);
        }
        if all || before.is_some_and(|b| b.conversations != after.conversations) {
            documents.push(ConfigDocument::Conversations);
        }
        if all || before.is_some_and(|b| b.settings != after.settings) {
            documents.push(ConfigDocument::Settings);
        }
        if !documents.is_empty() {
            self.events.send(Event::ConfigChanged(ConfigChange { documents }));
        }
    }

    async fn sync_now(&self) -> Result<SyncSummary> {
        let account = self.require_account()?;
        let mut fresh = self.ingest_journal();
        let ticket = self.poll_ticket();
        let polled = self.report_messages(account.receive(0).await?);
        self.note_polled(ticket, &polled);
        fresh.extend(polled);
        let before = account.documents();
        let changed = account.sync().await?;
        if changed {
            self.config_changed(Some(&before), &account.documents());
        }
        let count = fresh.len() as u64;
        self.events.send(Event::Progress(Progress {
            operation: Operation::Sync,
            stage: ProgressStage::Done,
            done: count,
            total: Some(count),
            bytes: fresh.iter().map(|m| m.data.len() as u64).sum(),
        }));
        Ok(SyncSummary {
            messages: fresh,
            config_changed: changed,
        })
    }

    pub(crate) async fn handle_push(&self, enc: &str, budget: Duration) -> Result<PushOutcome> {
        let account = self.require_account()?;
        let push_key = Zeroizing::new(*self.lock_store().push_key());
        let note = tidings_device_link::client::decrypt_push(enc, &push_key)?;
        let push = DecryptedPush::from_wire(&note);
        if let Ok(hash) = <[u8; 32]>::try_from(note.hash.as_slice()) {
            self.note_pushed(&hash);
        }
        let before = (push.kind == PushKind::Config).then(|| account.documents());
        let Ok(outcome) = tokio::time::timeout(budget, account.handle_push(enc)).await else {
            tracing::debug!("push handling ran out of its budget; polling brings the rest");
            return Ok(PushOutcome {
                push,
                messages: Vec::new(),
                duplicate: false,
                config_changed: false,
                complete: false,
            });
        };
        let outcome = outcome?;
        if let Some(before) = before.filter(|_| outcome.config_changed) {
            self.config_changed(Some(&before), &account.documents());
        }
        let messages = self.report_messages(outcome.messages);
        let duplicate = push.kind == PushKind::Message && !messages.iter().any(|m| m.hash == push.hash);
        Ok(PushOutcome {
            push,
            messages,
            duplicate,
            config_changed: outcome.config_changed,
            complete: true,
        })
    }
}

/// Unix ms by the system clock.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &std::path::Path) -> Arc<TidingsClient> {
        runtime::handle()
            .block_on(TidingsClient::open(
                dir.to_str().unwrap().to_owned(),
                vec![1; 32],
                "http://127.0.0.1:9".into(),
                None,
                None,
            ))
            .unwrap()
    }

    #[test]
    fn an_account_survives_reopening_and_signs_out() {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path());
        assert_eq!(c.account_id(), None);
        let id = runtime::handle().block_on(c.create_account()).unwrap();
        assert_eq!(
            runtime::handle().block_on(c.create_account()),
            Err(TidingsError::AlreadySignedIn)
        );
        let phrase = c.phrase().unwrap();
        assert_eq!(phrase.split(' ').count(), 12);
        drop(c);
        let c = open(dir.path());
        assert_eq!(c.account_id().as_deref(), Some(id.as_str()));
        assert_eq!(c.phrase().as_deref(), Some(phrase.as_str()));
        assert_eq!(c.push_key().len(), 32);
        // Signing out needs no relay (nothing was registered) and forgets the account.
        runtime::handle().block_on(c.sign_out()).unwrap();
        assert_eq!(c.account_id(), None);
        drop(c);
        assert_eq!(open(dir.path()).account_id(), None);
    }

    #[test]
    fn a_wrong_state_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()));
        let err = runtime::handle()
            .block_on(TidingsClient::open(
                dir.path().to_str().unwrap().to_owned(),
                vec![2; 32],
                "http://127.0.0.1:9".into(),
                None,
                None,
            ))
            .unwrap_err();
        assert_eq!(err, TidingsError::WrongStateKey);
    }

    #[test]
    fn sending_to_a_malformed_account_id_fails_before_the_network() {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path());
        let err = runtime::handle()
            .block_on(c.send("02abc".into(), b"x".to_vec()))
            .unwrap_err();
        assert_eq!(err, TidingsError::InvalidAccountId);
    }

    #[test]
    fn after_stop_calls_fail_closed_and_the_directory_can_be_removed() {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path());
        runtime::handle().block_on(c.create_account()).unwrap();
        // The loops run (against a relay that never answers) until stop.
        let _ = runtime::handle().block_on(c.connect());
        c.stop();
        assert!(c.inner.calls.is_empty(), "a task outlived stop");
        let err = runtime::handle().block_on(c.sync_now(None)).unwrap_err();
        assert_eq!(err, TidingsError::Closed);
        std::fs::remove_dir_all(dir.path()).unwrap();
    }
}
