//! The engine an app drives: one signed-in account on this install, tying the identity,
//! the relay client, the persisted device state, the config documents and their sync,
//! messages, push handling and device linking together.
//!
//! - [`Account::create`], [`Account::restore`] (by phrase), [`LinkRequest`] (by QR code)
//!   and [`Account::open`] (on every later start) give an [`Account`].
//! - Config edits ([`Account::set_display_name`], … or several at once with
//!   [`Account::edit`]) apply locally, are saved, queued durably and then uploaded; a
//!   failed upload stays queued and goes out with the next [`Account::sync`].
//! - [`Account::sync`] / [`Account::sync_wait`] (Slow Mode) or [`Account::handle_push`]
//!   (Fast Mode, after [`Account::subscribe`]) bring in other devices' changes and keep
//!   the config namespace compact and alive.
//! - [`Account::send`] and [`Account::receive`] move messages through namespace 0.
//!
//! A restoring or linking device pulls the whole config namespace and merges it before it
//! uploads anything, so it never overwrites the account's config with an empty one.
//!
//! `Account` is a cheap handle (`Clone`, `Send`, `Sync`): clones share one engine. Open
//! each state directory with one `Account` at a time.

mod edit;
mod engine;
mod inbox;
mod link;
pub mod sign_out;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use tidings_proto::v1::DeviceRegistration;
use zeroize::Zeroizing;

use crate::{
    client::{
        ClientError, ClientOptions, PushDecryptError, PushService, RelayClient, StoreResponse,
        SubscribeResponse, decrypt_push,
    },
    config::{
        Change, ConfigError, ConfigState, Contact, Conversation, DeviceId, Documents, Profile, Settings,
        envelope::EnvelopeError,
        sync::{CONFIG_NAMESPACE, Inventory, SnapshotReason, SyncConfig, SyncPlanner},
    },
    identity::{AccountIdError, Identity, PhraseError, parse_account_id},
    journal,
    link::LinkError,
    state::{DeviceState, StateError},
};

pub use edit::ConfigEdit;
pub use inbox::{ReceivedMessage, Source as MessageSource};
pub use link::{IncomingLink, InspectedLink, LinkRequest};

use engine::ConfigEngine;
use inbox::Inbox;

/// The public namespace messages to an account are deposited in.
pub const MESSAGE_NAMESPACE: i32 = 0;
/// The device-state blob that holds the config replica.
const CONFIG_BLOB: &str = "config";

/// Why an account operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The device state could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
    /// A relay call failed.
    #[error(transparent)]
    Relay(#[from] ClientError),
    /// A config edit broke a limit, or saved config is unreadable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A config change could not be sealed for upload.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// The recovery phrase was not accepted.
    #[error(transparent)]
    Phrase(#[from] PhraseError),
    /// QR linking failed.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// A push payload could not be read.
    #[error(transparent)]
    Push(#[from] PushDecryptError),
    /// A recipient's account id is malformed.
    #[error(transparent)]
    AccountId(#[from] AccountIdError),
    /// [`Account::open`] on a state directory no account is signed in to.
    #[error("no account is signed in to the device state in {0}")]
    NotSignedIn(PathBuf),
    /// [`Account::create`] on a state directory that already holds an account.
    #[error("the device state in {0} already holds an account")]
    AlreadySignedIn(PathBuf),
    /// Restoring or linking into a state directory that holds a different account.
    #[error("the device state in {0} holds a different account; sign it out first")]
    OtherAccount(PathBuf),
    /// A message could not be sealed (a recipient that is not an account key, a
    /// plaintext too large).
    #[error(transparent)]
    Sealed(#[from] crate::sealed::SealedMessageError),
    /// The notification extension's delivery journal could not be read or consumed.
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    /// A push addressed to another account than this one.
    #[error("the push is for another account")]
    PushForOtherAccount,
}

/// Where and how to reach the relay. `"http://127.0.0.1:7400".into()` gives the defaults.
#[derive(Clone, Debug)]
pub struct RelaySettings {
    /// The relay's address (`https://host:port`, `http://host:port` or `host:port`).
    pub url: String,
    /// Connection, retry and timeout settings.
    pub client: ClientOptions,
    /// The config planner's thresholds. `max_message_bytes` and `ttl_ms` are lowered to the
    /// relay's limits (`GetRelayInfo`) before the first listing of each session.
    pub sync: SyncConfig,
    /// TTL of messages sent with [`Account::send`]; 0 takes the relay's default (14 days).
    pub message_ttl_ms: i64,
}

impl RelaySettings {
    /// Default settings for the relay at `url`.
    pub fn new(url: impl Into<String>) -> RelaySettings {
        RelaySettings {
            url: url.into(),
            client: ClientOptions::default(),
            sync: SyncConfig::default(),
            message_ttl_ms: 0,
        }
    }
}

impl From<&str> for RelaySettings {
    fn from(url: &str) -> RelaySettings {
        RelaySettings::new(url)
    }
}

impl From<String> for RelaySettings {
    fn from(url: String) -> RelaySettings {
        RelaySettings::new(url)
    }
}

impl From<&String> for RelaySettings {
    fn from(url: &String) -> RelaySettings {
        RelaySettings::new(url.as_str())
    }
}

/// Where a restore (by phrase or QR code) stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressStage {
    /// Fetching the config namespace, page by page.
    Fetching,
    /// Everything is fetched; merging it.
    Merging,
    /// Merged and saved: the documents are the account's.
    Done,
}

/// Progress of a restore, reported after every page and at each stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// What is happening.
    pub stage: ProgressStage,
    /// Config messages fetched so far.
    pub messages: u64,
    /// How many there are in all, as far as the relay has said: from the first page on,
    /// the messages fetched plus the relay's `remaining` count, exact at the last page.
    /// The relay caps its count (at ten pages ahead, and at 10 000), so for a larger
    /// namespace this is a lower bound that grows as pages come, and it may shrink if
    /// messages expire meanwhile. `None` while a relay that does not count (one from
    /// before `remaining`) has not sent its last page.
    pub total: Option<u64>,
    /// Bytes of config messages fetched so far.
    pub bytes: u64,
}

/// What one [`Account::sync_report`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// The documents as shown changed.
    pub changed: bool,
    /// Config messages retrieved (new ones and redelivered ones).
    pub fetched: usize,
    /// Their bytes.
    pub fetched_bytes: u64,
    /// Queued local changes stored.
    pub flushed: usize,
    /// Snapshot chunks stored by this sync's compaction.
    pub uploaded: usize,
    /// Messages deleted by this sync's compaction.
    pub deleted: usize,
    /// Why a snapshot was written, if one was.
    pub snapshot: Option<SnapshotReason>,
    /// Tombstones pruned for that snapshot.
    pub pruned: usize,
    /// Retrieved messages that did not open (another key, or tampered); left to expire.
    pub undecryptable: usize,
    /// The compaction could not be completed (it is retried by the next sync); the
    /// merge itself succeeded and was saved.
    pub compaction_error: Option<String>,
}

/// What [`Account::ingest_journal`] read in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JournalIngest {
    /// The hash of every push the extension processed (messages and config): these
    /// pushes arrived, whether or not the message came with them.
    pub pushed: Vec<[u8; 32]>,
    /// Messages new to this install, now pending.
    pub messages: Vec<ReceivedMessage>,
}

/// What a push brought.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushOutcome {
    /// Messages not seen before: carried by the push, or fetched because it omitted them.
    pub messages: Vec<ReceivedMessage>,
    /// The push was for the config namespace and the sync it ran changed the documents.
    pub config_changed: bool,
}

/// One signed-in account on this install. See the module documentation.
#[derive(Clone)]
pub struct Account {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("identity", &self.inner.identity)
            .finish_non_exhaustive()
    }
}

/// Shared by every clone of an [`Account`]. Lock order: `engine`, then `disk`; `inbox`,
/// then `disk`. No std lock is held across an `.await`.
struct Inner {
    identity: Identity,
    client: RelayClient,
    settings: RelaySettings,
    dir: PathBuf,
    device_id: [u8; 16],
    push_key: Zeroizing<[u8; 32]>,
    disk: Mutex<DeviceState>,
    engine: Mutex<ConfigEngine>,
    inbox: Mutex<Inbox>,
    /// One network sync (flush, pull, compaction) at a time.
    sync_gate: tokio::sync::Mutex<()>,
    /// Edits do not try to upload before this (an upload failed just before).
    flush_pause: Mutex<Option<std::time::Instant>>,
}

impl Account {
    /// Creates a new account in `state_dir` (which must hold none), encrypting its state
    /// under `app_key` (from the Keychain / Keystore). Returns the account and its recovery
    /// phrase: show the phrase to the user once, now. Touches no network: the account is
    /// announced to the relay by the first [`Account::sync`].
    pub async fn create(
        state_dir: impl AsRef<Path>,
        app_key: &[u8; 32],
        relay: impl Into<RelaySettings>,
    ) -> Result<(Account, Zeroizing<String>), AccountError> {
        let dir = state_dir.as_ref().to_path_buf();
        let mut disk = DeviceState::open(&dir, app_key)?;
        if disk.identity()?.is_some() {
            return Err(AccountError::AlreadySignedIn(dir));
        }
        let identity = Identity::create();
        forget_previous_account(&mut disk)?;
        let state = ConfigState::new(DeviceId(disk.device_id()));
        disk.put_blob(CONFIG_BLOB, &state.save())?;
        crate::notification::save_preview_index(&mut disk, &state)?;
        disk.set_identity(&identity)?;
        let phrase = Zeroizing::new(identity.phrase().to_owned());
        let account = Account::assemble(dir, relay.into(), identity, disk, state)?;
        Ok((account, phrase))
    }

    /// Signs this install in to the account of `phrase` (12 or 24 words): derives the keys,
    /// pulls the whole config namespace, reporting `progress`, merges it and saves it —
    /// and only then uploads anything (this device's announcement snapshot). Fails, leaving
    /// no account in `state_dir`, when the relay cannot be read.
    pub async fn restore(
        state_dir: impl AsRef<Path>,
        app_key: &[u8; 32],
        relay: impl Into<RelaySettings>,
        phrase: &str,
        progress: impl Fn(Progress) + Send + Sync,
    ) -> Result<Account, AccountError> {
        let identity = Identity::restore(phrase)?;
        Account::adopt(state_dir.as_ref(), app_key, relay.into(), identity, &progress).await
    }

    /// Reopens the account signed in to `state_dir`. Touches no network; the first
    /// [`Account::sync`] re-lists the config namespace (one snapshot and a few deltas)
    /// and uploads what an interrupted session left queued.
    pub async fn open(
        state_dir: impl AsRef<Path>,
        app_key: &[u8; 32],
        relay: impl Into<RelaySettings>,
    ) -> Result<Account, AccountError> {
        let dir = state_dir.as_ref().to_path_buf();
        let disk = DeviceState::open(&dir, app_key)?;
        let Some(identity) = disk.identity()? else {
            return Err(AccountError::NotSignedIn(dir));
        };
        let state = match disk.get_blob(CONFIG_BLOB)? {
            Some(bytes) => ConfigState::load(&bytes)?,
            None => ConfigState::new(DeviceId(disk.device_id())),
        };
        Account::assemble(dir, relay.into(), identity, disk, state)
    }

    /// Restores `identity` into `dir`: full pull and merge first, then persist, then sync.
    async fn adopt(
        dir: &Path,
        app_key: &[u8; 32],
        settings: RelaySettings,
        identity: Identity,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<Account, AccountError> {
        let dir = dir.to_path_buf();
        let mut disk = DeviceState::open(&dir, app_key)?;
        let existing = match disk.identity()? {
            Some(old) if old.account() != identity.account() => {
                return Err(AccountError::OtherAccount(dir));
            }
            Some(_) => disk
                .get_blob(CONFIG_BLOB)?
                .map(|b| ConfigState::load(&b))
                .transpose()?,
            None => {
                forget_previous_account(&mut disk)?;
                None
            }
        };
        let mut state = existing.unwrap_or_else(|| ConfigState::new(DeviceId(disk.device_id())));
        let client = RelayClient::connect_lazy(&settings.url, settings.client.clone())?;
        let fetched = engine::pull_everything(&client, &identity, &settings, progress).await?;
        let mut planner = SyncPlanner::new(*identity.config_key(), identity.account(), fetched.config);
        let report = planner.reconcile(&mut state, &fetched.listing);
        tracing::debug!(
            messages = fetched.listing.len(),
            deltas = report.deltas,
            snapshots = report.snapshots,
            undecryptable = report.undecryptable,
            "config namespace merged"
        );
        disk.put_blob(CONFIG_BLOB, &state.save())?;
        crate::notification::save_preview_index(&mut disk, &state)?;
        let cursor = disk.cursor(CONFIG_NAMESPACE).max(fetched.last_seq);
        disk.set_cursor(CONFIG_NAMESPACE, cursor)?;
        // Written last: a restore interrupted before this point leaves no account behind.
        disk.set_identity(&identity)?;
        progress(fetched.progress(ProgressStage::Done));
        let account = Account::assemble_with(dir, settings, identity, disk, state, Some(planner), client)?;
        // Only now, with the account's config merged, may this device write anything.
        if let Err(e) = account.sync_report().await {
            tracing::warn!(error = %e, "first sync after restore failed; the next sync retries");
        }
        Ok(account)
    }

    fn assemble(
        dir: PathBuf,
        settings: RelaySettings,
        identity: Identity,
        disk: DeviceState,
        state: ConfigState,
    ) -> Result<Account, AccountError> {
        let client = RelayClient::connect_lazy(&settings.url, settings.client.clone())?;
        Account::assemble_with(dir, settings, identity, disk, state, None, client)
    }

    /// `planner`: one that has just reconciled a full listing, or `None` to list on the
    /// first sync.
    fn assemble_with(
        dir: PathBuf,
        settings: RelaySettings,
        identity: Identity,
        disk: DeviceState,
        state: ConfigState,
        planner: Option<SyncPlanner>,
        client: RelayClient,
    ) -> Result<Account, AccountError> {
        let inbox = Inbox::load(&disk)?;
        let cursor = disk.cursor(CONFIG_NAMESPACE);
        let engine = ConfigEngine::new(&identity, &settings, state, planner, cursor);
        let inner = Inner {
            device_id: disk.device_id(),
            push_key: Zeroizing::new(*disk.push_key()),
            identity,
            client,
            settings,
            dir,
            disk: Mutex::new(disk),
            engine: Mutex::new(engine),
            inbox: Mutex::new(inbox),
            sync_gate: tokio::sync::Mutex::new(()),
            flush_pause: Mutex::new(None),
        };
        Ok(Account {
            inner: Arc::new(inner),
        })
    }

    // ------------------------------------------------------------------ who and where

    /// The displayed account id, `"01"` and 64 hex digits: what others send messages to.
    pub fn account_id(&self) -> String {
        self.inner.identity.account_id()
    }

    /// The account key (the Ed25519 public key the relay knows the account by).
    pub fn account_key(&self) -> [u8; 32] {
        self.inner.identity.account()
    }

    /// This install's random device id.
    pub fn device_id(&self) -> [u8; 16] {
        self.inner.device_id
    }

    /// The recovery phrase, for a screen the user explicitly asked for. Never log it.
    pub fn recovery_phrase(&self) -> Zeroizing<String> {
        Zeroizing::new(self.inner.identity.phrase().to_owned())
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The relay settings this account uses.
    pub fn relay_settings(&self) -> &RelaySettings {
        &self.inner.settings
    }

    /// Through OHTTP: the gateway's key configuration this account's relay client
    /// encapsulates to now (as given, fetched, or moved to at a key rotation), to keep and
    /// pass as `OhttpSettings::key_config` next time (see
    /// [`RelayClient::ohttp_key_config`]). `None` over a direct connection.
    pub fn ohttp_key_config(&self) -> Option<Vec<u8>> {
        self.inner.client.ohttp_key_config()
    }

    /// Local changes queued for upload and not yet acknowledged by the relay.
    pub fn pending_uploads(&self) -> Result<usize, AccountError> {
        let disk = self.inner.lock_disk();
        Ok(disk
            .pending_uploads()?
            .iter()
            .filter(|p| p.namespace == CONFIG_NAMESPACE)
            .count())
    }

    /// What the config namespace holds as far as this device knows (after a sync).
    pub fn config_inventory(&self) -> Inventory {
        self.inner.lock_engine().planner.inventory()
    }

    // ------------------------------------------------------------------ documents

    /// All four documents as shown.
    pub fn documents(&self) -> Documents {
        self.inner.lock_engine().state.documents()
    }

    /// The profile.
    pub fn profile(&self) -> Profile {
        self.inner.lock_engine().state.profile()
    }

    /// Every contact shown, sorted by account id.
    pub fn contacts(&self) -> Vec<Contact> {
        self.inner.lock_engine().state.contacts()
    }

    /// One contact, if shown.
    pub fn contact(&self, account_id: &str) -> Option<Contact> {
        self.inner.lock_engine().state.contact(account_id)
    }

    /// Every conversation shown, sorted by id.
    pub fn conversations(&self) -> Vec<Conversation> {
        self.inner.lock_engine().state.conversations()
    }

    /// One conversation, if shown.
    pub fn conversation(&self, id: &str) -> Option<Conversation> {
        self.inner.lock_engine().state.conversation(id)
    }

    /// The settings.
    pub fn settings(&self) -> Settings {
        self.inner.lock_engine().state.settings()
    }

    // ------------------------------------------------------------------ config edits

    /// Applies several edits as one change (one save, one upload): the way to import many
    /// contacts. Every edit `f` made before it returned stays, is saved and synced, also
    /// when `f` returns an error (which is then returned). Like every edit, it is queued
    /// durably before the upload is tried; a failed upload is retried by the next sync.
    pub async fn edit<T>(
        &self,
        f: impl FnOnce(&mut ConfigEdit<'_>) -> Result<T, ConfigError>,
    ) -> Result<T, AccountError> {
        let (result, changed) = self.inner.apply_edit(f)?;
        if changed {
            self.inner.try_flush().await;
        }
        Ok(result?)
    }

    /// Applies one edit of the config ([`Change`] lists them all). Returns whether
    /// anything changed (and was queued); a value over its document's limit is refused
    /// with [`AccountError::Config`] and changes nothing.
    pub async fn change(&self, change: Change) -> Result<bool, AccountError> {
        self.edit_one(|e| e.apply(&change)).await
    }

    async fn edit_one(
        &self,
        f: impl FnOnce(&mut ConfigEdit<'_>) -> Result<(), ConfigError>,
    ) -> Result<bool, AccountError> {
        let (result, changed) = self.inner.apply_edit(f)?;
        result?;
        if changed {
            self.inner.try_flush().await;
        }
        Ok(changed)
    }

    // ------------------------------------------------------------------ sync

    /// Uploads queued changes, retrieves and merges other devices' changes, compacts when
    /// due (which also renews TTLs) and saves. Returns whether the documents changed.
    pub async fn sync(&self) -> Result<bool, AccountError> {
        Ok(self.sync_report().await?.changed)
    }

    /// [`Account::sync`] with the details.
    pub async fn sync_report(&self) -> Result<SyncReport, AccountError> {
        self.inner.sync_config(Vec::new()).await
    }

    /// Slow Mode: syncs, and when that changed nothing, long-polls the config namespace up
    /// to `wait_ms` (at most 60 000) for another device's change and merges it. Returns
    /// whether the documents changed. Edits and other calls are not held up by the wait.
    pub async fn sync_wait(&self, wait_ms: u32) -> Result<bool, AccountError> {
        self.inner.sync_wait(wait_ms).await
    }

    // ------------------------------------------------------------------ messages

    /// Deposits `data` for the account `to_account` (its displayed id) in its public
    /// message namespace. What `data` holds (end-to-end encrypted, presumably) is the app's.
    pub async fn send(&self, to_account: &str, data: &[u8]) -> Result<StoreResponse, AccountError> {
        let to = parse_account_id(to_account)?;
        let ttl = self.inner.settings.message_ttl_ms;
        Ok(self.inner.client.store(&to, MESSAGE_NAMESPACE, data, ttl).await?)
    }

    /// Seals `plaintext` to the account `to_account` (DESIGN.md "Sealed messages between
    /// accounts": only the recipient can open it, and it names and authenticates this
    /// account as the sender to the recipient alone) and deposits it in its mailbox.
    pub async fn send_sealed(
        &self,
        to_account: &str,
        plaintext: &[u8],
    ) -> Result<StoreResponse, AccountError> {
        let to = parse_account_id(to_account)?;
        let sealed = crate::sealed::seal_message(&self.inner.identity, &to, plaintext)?;
        let ttl = self.inner.settings.message_ttl_ms;
        Ok(self
            .inner
            .client
            .store(&to, MESSAGE_NAMESPACE, &sealed, ttl)
            .await?)
    }

    /// Opens a received message's data as a sealed message to this account: the
    /// authenticated sender and the plaintext. [`SealedMessageError::NotSealed`] for an
    /// app's own opaque bytes (found without any cryptography).
    ///
    /// [`SealedMessageError::NotSealed`]: crate::sealed::SealedMessageError::NotSealed
    pub fn open_sealed(
        &self,
        data: &[u8],
    ) -> Result<crate::sealed::OpenedMessage, crate::sealed::SealedMessageError> {
        crate::sealed::open_message(&self.inner.identity, data)
    }

    /// Fetches messages sent to this account since the last call, waiting up to `wait_ms`
    /// (at most 60 000) when there are none, and returns the new ones. Each message is
    /// returned once per install, even if a push delivered it before. Every new message
    /// is saved as pending before the position moves past it, and stays in
    /// [`Account::pending_messages`] until [`Account::ack`]: at-least-once delivery.
    pub async fn receive(&self, wait_ms: u32) -> Result<Vec<ReceivedMessage>, AccountError> {
        self.inner.receive(wait_ms).await
    }

    /// Every message received (by poll, push or the notification extension) and not yet
    /// acknowledged, oldest first. Offer these to the user at every start: a crash, a
    /// failing listener or no listener at all never loses a message.
    pub fn pending_messages(&self) -> Vec<ReceivedMessage> {
        self.inner.pending_messages()
    }

    /// Acknowledges messages by hash once the app has stored them itself: they are never
    /// offered again. Unknown or already acknowledged hashes are ignored. Returns how many
    /// were pending.
    pub fn ack(&self, hashes: &[[u8; 32]]) -> Result<usize, AccountError> {
        self.inner.ack(hashes)
    }

    /// Reads in what the notification extension processed (the delivery journal in the
    /// state directory): the messages it saw become pending like pushes the app handled
    /// (those without data come by polling), and only then is the journal consumed, so a
    /// crash in between loses nothing. Call at open and whenever the app comes to the
    /// foreground.
    pub fn ingest_journal(&self, state_key: &[u8; 32]) -> Result<JournalIngest, AccountError> {
        let dir = &self.inner.dir;
        let (entries, end) = journal::read(dir, state_key)?;
        if entries.is_empty() {
            return Ok(JournalIngest::default());
        }
        let pushed: Vec<[u8; 32]> = entries.iter().map(|e| e.hash).collect();
        let carried = entries
            .into_iter()
            .filter(|e| e.namespace == MESSAGE_NAMESPACE)
            .filter_map(|e| {
                Some(ReceivedMessage {
                    hash: e.hash,
                    seq: e.seq,
                    data: e.data?,
                    created_ms: e.created_ms,
                    expires_ms: e.expires_ms,
                    source: MessageSource::Extension,
                })
            })
            .collect();
        let messages = self.inner.keep_unseen(carried)?;
        journal::consume(dir, end)?;
        Ok(JournalIngest { pushed, messages })
    }

    // ------------------------------------------------------------------ Fast Mode

    /// Registers this install's push token (Fast Mode) for the message and config
    /// namespaces, with the message data in the push when it fits. Call again when the
    /// provider rotates the token, and well before the answer's `expires_ms`.
    pub async fn subscribe(
        &self,
        service: PushService,
        token: &str,
        app_id: &str,
    ) -> Result<SubscribeResponse, AccountError> {
        let registration = DeviceRegistration {
            service: service as i32,
            token: token.to_owned(),
            app_id: app_id.to_owned(),
            push_key: self.inner.push_key.to_vec(),
            device_id: self.inner.device_id.to_vec(),
            ..Default::default()
        };
        Ok(self
            .inner
            .client
            .subscribe(
                &self.inner.identity,
                &[MESSAGE_NAMESPACE, CONFIG_NAMESPACE],
                true,
                registration,
            )
            .await?)
    }

    /// Registers this install for Fast Mode over Web Push: a UnifiedPush distributor or a
    /// browser (DESIGN.md "Push over Web Push and Huawei Push Kit"). `endpoint` is the push
    /// resource URL the distributor gave; `p256dh` (an uncompressed P-256 point, 65 bytes)
    /// and `auth` (16 bytes) are the subscription's keys, whose private half stays with
    /// whoever decrypts what arrives (the UnifiedPush connector, the browser). The message
    /// it decrypts is the `enc` string [`Account::handle_push`] takes. The relay checks the
    /// endpoint and keys and answers `INVALID_ARGUMENT` naming `sealed.web_push.*`; an
    /// HMS token goes through [`Account::subscribe`] like an FCM one.
    pub async fn subscribe_web_push(
        &self,
        endpoint: &str,
        p256dh: &[u8],
        auth: &[u8],
        app_id: &str,
    ) -> Result<SubscribeResponse, AccountError> {
        let registration = DeviceRegistration {
            service: PushService::Webpush as i32,
            app_id: app_id.to_owned(),
            push_key: self.inner.push_key.to_vec(),
            device_id: self.inner.device_id.to_vec(),
            web_push: Some(tidings_proto::v1::WebPushSubscription {
                endpoint: endpoint.to_owned(),
                p256dh: p256dh.to_vec(),
                auth: auth.to_vec(),
            }),
            ..Default::default()
        };
        Ok(self
            .inner
            .client
            .subscribe(
                &self.inner.identity,
                &[MESSAGE_NAMESPACE, CONFIG_NAMESPACE],
                true,
                registration,
            )
            .await?)
    }

    /// Signs this install out so that pushes stop even when the relay cannot be reached
    /// now: queues a signed Unsubscribe for this install's registration durably (sent by
    /// [`sign_out::flush_unsubscribes`], which the caller runs now and keeps running until
    /// the queue is empty), then forgets the account's state here (config, inbox, cursors,
    /// queued uploads), deletes the identity and rotates the device id and push key. The
    /// caller must stop using this handle (and every clone) first.
    pub fn sign_out(&self) -> Result<(), AccountError> {
        let request = crate::client::signed_unsubscribe(&self.inner.identity, &self.inner.device_id);
        let mut disk = self.inner.lock_disk();
        sign_out::queue_unsubscribe(&mut disk, &request)?;
        disk.clear_identity()?;
        forget_previous_account(&mut disk)?;
        disk.delete_blob(CONFIG_BLOB)?;
        disk.delete_blob(crate::notification::PREVIEW_INDEX_BLOB)?;
        disk.delete_blob(crate::webpush::WEB_PUSH_KEYS_BLOB)?;
        disk.rotate_device()?;
        Ok(())
    }

    /// Removes this install's push registration (back to Slow Mode); `true` when there was one.
    pub async fn unsubscribe(&self) -> Result<bool, AccountError> {
        Ok(self
            .inner
            .client
            .unsubscribe(&self.inner.identity, &self.inner.device_id)
            .await?)
    }

    /// This install's push key, for a notification extension that decrypts pushes with
    /// [`crate::client::decrypt_push`] without opening the account.
    pub fn push_key(&self) -> Zeroizing<[u8; 32]> {
        self.inner.push_key.clone()
    }

    /// Handles a push's `enc`: decrypts it with this install's push key; for the message
    /// namespace returns the message it carries (or fetches it when the push omitted it),
    /// for the config namespace runs a sync.
    pub async fn handle_push(&self, enc: &str) -> Result<PushOutcome, AccountError> {
        let note = decrypt_push(enc, &self.inner.push_key)?;
        if note.account.as_slice() != self.inner.identity.account().as_slice() {
            return Err(AccountError::PushForOtherAccount);
        }
        let mut outcome = PushOutcome::default();
        match note.namespace {
            MESSAGE_NAMESPACE if !note.data_omitted => {
                let message = ReceivedMessage::from_push(&note);
                outcome.messages = self.inner.keep_unseen(vec![message])?;
            }
            MESSAGE_NAMESPACE => outcome.messages = self.receive(0).await?,
            CONFIG_NAMESPACE => outcome.config_changed = self.sync().await?,
            other => tracing::debug!(namespace = other, "push for a namespace this app does not use"),
        }
        Ok(outcome)
    }
}

impl Inner {
    fn lock_disk(&self) -> MutexGuard<'_, DeviceState> {
        // A panic while it was held left the state as its last completed write did.
        self.disk.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_engine(&self) -> MutexGuard<'_, ConfigEngine> {
        self.engine.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_inbox(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Clears what a signed-out account may have left in a state directory: queued uploads
/// (sealed for that account) and cursors. Device id, push key and other blobs stay.
fn forget_previous_account(disk: &mut DeviceState) -> Result<(), StateError> {
    for p in disk.pending_uploads()? {
        disk.ack_upload(p.id)?;
    }
    let namespaces: Vec<i32> = disk.cursors().keys().copied().collect();
    for ns in namespaces {
        disk.set_cursor(ns, 0)?;
    }
    inbox::forget(disk)
}

#[cfg(test)]
mod tests;
