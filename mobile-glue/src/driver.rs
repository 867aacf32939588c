//! The Fast/Slow Mode driver: binds device-link's pure planner
//! ([`tidings_device_link::fast_mode`], where every rule lives) to this client. It feeds
//! the planner what happens — the app's requests and lifecycle calls, network changes,
//! pushes handled here or by the notification extension, what polling finds, the relay's
//! answers, time — and performs what the planner asks: Subscribe and Unsubscribe through
//! the account, an immediate sync, mode-change events. The planner's state is saved as
//! the "fast-mode" blob after every change.
//!
//! Polling runs in both modes: in Slow Mode each namespace the app needs (messages 0,
//! config 10) is long-polled in a loop; in Fast Mode the mailbox is still checked every
//! `fast_check_interval_ms` while the client runs, which is how missing pushes are noticed.
//! Each poll of the message namespace takes the planner's ticket before it begins, so the
//! planner knows whether what it finds reached the device in the foreground.

use std::{
    collections::VecDeque,
    sync::{Arc, MutexGuard, PoisonError},
    time::Duration,
};

use tidings_device_link::{
    client::MAX_WAIT_MS,
    fast_mode::{
        self as plan, Action, Event as PlanEvent, FastModeConfig, FastModePlanner, PollTicket, PolledMessage,
        Purpose, Registration, RequestId, SavedFastMode, SubscribeResult, UnsubscribeResult,
    },
    state::DeviceState,
};
use tokio::sync::Notify;

use crate::{
    client::{Inner, TidingsClient, now_ms},
    error::{Result, TidingsError},
    events::Event,
    types::{
        AppState, CONFIG_NAMESPACE, ClientOptions, IncomingMessage, MESSAGE_NAMESPACE, Mode, ModeChange,
        ModeReason, ModeStatus, PushService,
    },
};

/// The blob the planner's state is saved in.
const FAST_MODE_BLOB: &str = "fast-mode";
/// The longest the supervisor sleeps without looking.
const MAX_SUPERVISOR_SLEEP: Duration = Duration::from_secs(60);
/// Shortest long-poll: a relay answering at once must not make the loop spin.
const MIN_POLL_WAIT_MS: u32 = 1_000;
/// After `PushesMissing` Fast Mode is retried (on a foreground) first after
/// `fast_check_interval_ms`, doubling per give-up up to this many times that.
const MISSING_RETRY_MAX_FACTOR: u64 = 16;

/// The planner and the actions the supervisor still has to perform.
pub(crate) struct DriverState {
    planner: FastModePlanner,
    /// In the order the planner asked for them.
    queue: VecDeque<Action>,
    /// Wakes the supervisor: actions queued, or deadlines changed.
    supervisor: Arc<Notify>,
}

impl std::fmt::Debug for DriverState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverState")
            .field("status", &self.planner.status())
            .field("queued", &self.queue.len())
            .finish_non_exhaustive()
    }
}

impl DriverState {
    /// The planner as saved (an unreadable blob falls back to Slow Mode, keeping the token
    /// when it can be read).
    pub(crate) fn load(store: &DeviceState, options: &ClientOptions) -> Result<DriverState> {
        let saved = store
            .get_blob(FAST_MODE_BLOB)?
            .map(|b| SavedFastMode::from_json(&b))
            .unwrap_or_default();
        Ok(DriverState {
            planner: FastModePlanner::new(planner_config(options), saved, now_ms()),
            queue: VecDeque::new(),
            supervisor: Arc::new(Notify::new()),
        })
    }
}

fn planner_config(o: &ClientOptions) -> FastModeConfig {
    FastModeConfig {
        push_grace_ms: o.push_grace_ms,
        missed_push_limit: o.missed_push_limit,
        renew_at_percent: o.renew_at_percent,
        retry_backoff_ms: o.retry_backoff_ms,
        missing_retry_ms: o.fast_check_interval_ms,
        missing_retry_max_ms: o.fast_check_interval_ms.saturating_mul(MISSING_RETRY_MAX_FACTOR),
    }
}

#[uniffi::export(async_runtime = "tokio")]
impl TidingsClient {
    /// Fast Mode: registers this install's push token (sealed to the relay) for the
    /// account's message and config namespaces. Call it at every launch with the token the
    /// OS gave, and again whenever the OS reports a new one. For `WebPush` (UnifiedPush)
    /// the token is the distributor's endpoint URL, and the SDK makes and keeps the
    /// subscription keys; for `Hms` it is the HMS push token. Returns the mode now in
    /// effect: `Slow` with `RelayUnreachable` (retried in the background) or
    /// `SubscribeRejected` (with the relay's message) when registration failed.
    pub async fn enable_fast_mode(
        &self,
        service: PushService,
        token: String,
        app_id: String,
    ) -> Result<ModeChange> {
        let inner = self.inner.clone();
        self.inner
            .run(async move { inner.enable_fast_mode(service, token, app_id).await })
            .await
    }

    /// Slow Mode: removes the push registration from the relay (retried in the background
    /// when the relay is unreachable) and polls.
    pub async fn disable_fast_mode(&self) -> Result<()> {
        let inner = self.inner.clone();
        self.inner
            .run(async move { inner.disable_fast_mode().await })
            .await
    }

    /// The driver's current mode and why.
    pub fn mode_status(&self) -> ModeStatus {
        let s = self.inner.driver().planner.status();
        ModeStatus {
            mode: mode_of(s.mode),
            reason: reason_of(s.reason),
            fast_requested: s.fast_requested,
            expires_ms: s.expires_ms,
        }
    }

    /// Tells the client whether the app is on screen. Call `Foreground` when the app
    /// becomes active and `Background` when it leaves the screen (the client starts in
    /// `Foreground`). Coming to the foreground fetches what is new at once (reading the
    /// notification extension's journal first) and checks the Fast Mode registration;
    /// messages that arrived while in the background never count as missed pushes.
    /// Returns at once: the work runs in the background once `connect` was called.
    pub fn set_app_state(&self, state: AppState) {
        let state = match state {
            AppState::Foreground => plan::AppState::Foreground,
            AppState::Background => plan::AppState::Background,
        };
        self.inner.feed_later(PlanEvent::AppState(state));
    }

    /// Tells the client the device's network changed (Wi-Fi, cellular, back online):
    /// waiting retries are made at once, and in the foreground what is new is fetched.
    /// Returns at once.
    pub fn network_changed(&self) {
        self.inner.feed_later(PlanEvent::NetworkChanged);
        // Polling loops waiting out a failure look again too.
        self.inner.poke();
    }
}

impl Inner {
    pub(crate) fn driver(&self) -> MutexGuard<'_, DriverState> {
        self.driver.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The mode in effect.
    pub(crate) fn mode(&self) -> Mode {
        mode_of(self.driver().planner.status().mode)
    }

    /// Take before polling the message namespace; pass to [`Inner::note_polled`].
    pub(crate) fn poll_ticket(&self) -> PollTicket {
        self.driver().planner.poll_ticket()
    }

    /// A poll that began with `ticket` found these new messages.
    pub(crate) fn note_polled(&self, ticket: PollTicket, fresh: &[IncomingMessage]) {
        let messages = fresh
            .iter()
            .filter_map(|m| {
                let mut hash = [0u8; 32];
                hex::decode_to_slice(&m.hash, &mut hash).ok()?;
                Some(PolledMessage {
                    hash,
                    created_ms: m.created_ms,
                })
            })
            .collect();
        self.feed_later(PlanEvent::Polled { ticket, messages });
    }

    /// The app handed this push to `handle_push`: pushes arrive.
    pub(crate) fn note_pushed(&self, hash: &[u8; 32]) {
        self.feed_later(PlanEvent::PushHandled(*hash));
    }

    /// The notification extension processed these pushes (read from its delivery
    /// journal): they count as pushed.
    pub(crate) fn note_journal_delivered(&self, hashes: &[[u8; 32]]) {
        self.feed_later(PlanEvent::JournalDelivered(hashes.to_vec()));
    }

    pub(crate) async fn enable_fast_mode(
        &self,
        service: PushService,
        token: String,
        app_id: String,
    ) -> Result<ModeChange> {
        self.require_account()?;
        if token.trim().is_empty() || app_id.trim().is_empty() {
            return Err(TidingsError::InvalidArgument {
                reason: "token and app_id must not be empty".into(),
            });
        }
        if service == PushService::WebPush {
            check_endpoint(&token)?;
            // Made now, so that a damaged state shows here rather than in a retry later.
            self.web_push_keys()?;
        }
        let registration = Registration {
            service: service_name(service).to_owned(),
            token,
            app_id,
        };
        let mut refusal = None;
        for action in self.feed(PlanEvent::Enable(registration)) {
            if matches!(
                action,
                Action::Subscribe {
                    purpose: Purpose::Enable,
                    ..
                }
            ) {
                refusal = self.perform(action).await.err();
            } else {
                self.queue(vec![action]);
            }
        }
        let s = self.driver().planner.status();
        let detail = match refusal {
            Some(e) if s.reason == plan::ModeReason::SubscribeRejected => e.to_string(),
            _ => String::new(),
        };
        Ok(ModeChange {
            mode: mode_of(s.mode),
            reason: reason_of(s.reason),
            detail,
        })
    }

    pub(crate) async fn disable_fast_mode(&self) -> Result<()> {
        let mut outcome = Ok(());
        for action in self.feed(PlanEvent::Disable) {
            if matches!(action, Action::Unsubscribe { .. }) {
                outcome = self.perform(action).await;
            } else {
                self.queue(vec![action]);
            }
        }
        // The planner retries in the background.
        match outcome {
            Err(e) if is_unreachable(&e) => Ok(()),
            other => other,
        }
    }

    /// At sign-out: Slow Mode, nothing wanted (the sign-out queues the Unsubscribe).
    pub(crate) fn set_signed_out_mode(&self) {
        self.feed_later(PlanEvent::SignedOut);
    }

    /// Feeds the planner one event: saves what changed, reports mode changes, and returns
    /// the actions to perform.
    fn feed(&self, event: PlanEvent) -> Vec<Action> {
        let mut d = self.driver();
        let actions = d.planner.handle(now_ms(), event);
        if let Some(saved) = d.planner.take_saved()
            && let Err(e) = self.lock_store().put_blob(FAST_MODE_BLOB, &saved.to_json())
        {
            tracing::warn!(error = %e, "cannot save the Fast Mode state");
        }
        // Reported under the lock, so events keep the planner's order.
        actions
            .into_iter()
            .filter_map(|a| match a {
                Action::ReportMode(change) => {
                    self.report_mode(change);
                    None
                }
                other => Some(other),
            })
            .collect()
    }

    /// Feeds an event whose actions the supervisor performs.
    fn feed_later(&self, event: PlanEvent) {
        let actions = self.feed(event);
        self.queue(actions);
    }

    /// Queues actions for the supervisor and wakes it (the planner's deadlines may have
    /// moved even when there is nothing to queue).
    fn queue(&self, actions: Vec<Action>) {
        let mut d = self.driver();
        d.queue.extend(actions);
        d.supervisor.notify_one();
    }

    fn next_queued(&self) -> Option<Action> {
        self.driver().queue.pop_front()
    }

    fn report_mode(&self, change: plan::ModeChange) {
        let (mode, reason) = (mode_of(change.mode), reason_of(change.reason));
        tracing::info!(?mode, ?reason, "delivery mode changed");
        self.events.send(Event::ModeChanged(ModeChange {
            mode,
            reason,
            detail: change.detail,
        }));
        // The polling loops poll differently in each mode.
        self.poke();
    }

    /// Performs one of the planner's actions and feeds back its result. Errs with what
    /// the relay answered when a Subscribe or Unsubscribe failed.
    async fn perform(&self, action: Action) -> Result<()> {
        match action {
            Action::Subscribe {
                request,
                registration,
                ..
            } => self.send_subscribe(request, &registration).await,
            Action::Unsubscribe { request } => self.send_unsubscribe(request).await,
            Action::SyncNow => {
                self.sync_for_planner().await;
                Ok(())
            }
            Action::ReportMode(change) => {
                self.report_mode(change);
                Ok(())
            }
        }
    }

    async fn send_subscribe(&self, request: RequestId, registration: &Registration) -> Result<()> {
        let _serial = self.registration.lock().await;
        if !self.driver().planner.is_current(request) {
            return Ok(());
        }
        let outcome = self.subscribe_rpc(registration).await;
        let result = match &outcome {
            Ok((added, expires_ms)) => SubscribeResult::Ok {
                added: *added,
                expires_ms: *expires_ms,
            },
            Err(e) if is_unreachable(e) => {
                tracing::debug!(error = %e, "push registration: relay unreachable");
                SubscribeResult::Unreachable
            }
            Err(e) => {
                tracing::info!(error = %e, "the relay refused the push registration");
                SubscribeResult::Rejected {
                    detail: e.to_string(),
                }
            }
        };
        let follow = self.feed(PlanEvent::Subscribed { request, result });
        self.queue(follow);
        outcome.map(|_| ())
    }

    /// Covers the message and config namespaces, message data in the push when it fits.
    async fn subscribe_rpc(&self, registration: &Registration) -> Result<(bool, i64)> {
        let account = self.require_account()?;
        let service = service_named(&registration.service).ok_or_else(|| TidingsError::InvalidArgument {
            reason: "the saved push service is unknown; enable Fast Mode again".into(),
        })?;
        let resp = if service == PushService::WebPush {
            let keys = self.web_push_keys()?;
            account
                .subscribe_web_push(
                    &registration.token,
                    &keys.p256dh(),
                    &keys.auth(),
                    &registration.app_id,
                )
                .await?
        } else {
            account
                .subscribe(service.to_wire(), &registration.token, &registration.app_id)
                .await?
        };
        Ok((resp.added, resp.expires_ms))
    }

    async fn send_unsubscribe(&self, request: RequestId) -> Result<()> {
        let _serial = self.registration.lock().await;
        if !self.driver().planner.is_current(request) {
            return Ok(());
        }
        let outcome = match self.require_account() {
            Ok(account) => account
                .unsubscribe()
                .await
                .map(|_| ())
                .map_err(TidingsError::from),
            Err(e) => Err(e),
        };
        let result = match &outcome {
            Ok(()) => UnsubscribeResult::Done,
            Err(e) => {
                tracing::debug!(error = %e, "unsubscribe failed; retrying later");
                UnsubscribeResult::Failed
            }
        };
        let follow = self.feed(PlanEvent::Unsubscribed { request, result });
        self.queue(follow);
        outcome
    }

    /// The planner's "sync now" (foreground, network back): the extension's journal, then
    /// both namespaces by the ordinary poll paths.
    async fn sync_for_planner(&self) {
        if self.account().is_none() {
            return;
        }
        self.ingest_journal();
        for namespace in [MESSAGE_NAMESPACE, CONFIG_NAMESPACE] {
            if let Err(e) = self.poll_namespace(namespace, 0).await {
                tracing::debug!(namespace, error = %e, "sync on the planner's request failed");
            }
        }
    }

    /// One look: the queued actions, then what is due; returns how long until the next.
    async fn supervise_once(&self) -> Duration {
        while let Some(action) = self.next_queued() {
            // Failures are fed back to the planner, which decides about retries.
            let _ = self.perform(action).await;
        }
        if self.account().is_none() {
            return MAX_SUPERVISOR_SLEEP;
        }
        let awaiting = self.driver().planner.awaiting_pushes();
        if awaiting {
            // Pushes the extension processed count: read them in before they are judged.
            self.ingest_journal();
        }
        let due = self.feed(PlanEvent::Tick);
        if !due.is_empty() {
            self.queue(due);
            return Duration::ZERO;
        }
        let now = now_ms();
        self.driver()
            .planner
            .next_deadline(now)
            .and_then(|t| u64::try_from(t.saturating_sub(now)).ok())
            .map_or(MAX_SUPERVISOR_SLEEP, |ms| {
                Duration::from_millis(ms).min(MAX_SUPERVISOR_SLEEP)
            })
    }

    /// The pause before polling again after `failures` failures in a row.
    fn poll_backoff(&self, failures: u32) -> Duration {
        Duration::from_millis(plan::backoff_ms(self.options.retry_backoff_ms, failures))
    }
}

fn is_unreachable(e: &TidingsError) -> bool {
    matches!(
        e,
        TidingsError::Unreachable { .. } | TidingsError::Timeout { .. } | TidingsError::NotSignedIn
    )
}

/// Every push service, for reading a saved name back.
const SERVICES: [PushService; 5] = [
    PushService::Apns,
    PushService::ApnsSandbox,
    PushService::Fcm,
    PushService::Hms,
    PushService::WebPush,
];

/// The name a push service is saved under (the first version's names).
fn service_name(service: PushService) -> &'static str {
    match service {
        PushService::Apns => "Apns",
        PushService::ApnsSandbox => "ApnsSandbox",
        PushService::Fcm => "Fcm",
        PushService::Hms => "Hms",
        PushService::WebPush => "WebPush",
    }
}

fn service_named(name: &str) -> Option<PushService> {
    SERVICES.into_iter().find(|s| service_name(*s) == name)
}

/// The relay's rule for Web Push endpoints (DESIGN.md), checked here too so that a wrong
/// value is named at once instead of after a round trip: an absolute `https://` or
/// `http://` URL of at most 1 000 bytes. Whether `http://` and the address are acceptable
/// is the relay operator's policy; the relay answers for that.
fn check_endpoint(endpoint: &str) -> Result<()> {
    const MAX_ENDPOINT_BYTES: usize = 1_000;
    let reason = if endpoint.len() > MAX_ENDPOINT_BYTES {
        format!(
            "the Web Push endpoint is {} bytes; at most {MAX_ENDPOINT_BYTES}",
            endpoint.len()
        )
    } else if !(endpoint.starts_with("https://") || endpoint.starts_with("http://"))
        || endpoint.contains(char::is_whitespace)
    {
        "the Web Push endpoint must be the distributor's https:// URL".to_owned()
    } else {
        return Ok(());
    };
    Err(TidingsError::InvalidArgument { reason })
}

fn mode_of(mode: plan::Mode) -> Mode {
    match mode {
        plan::Mode::Fast => Mode::Fast,
        plan::Mode::Slow => Mode::Slow,
    }
}

fn reason_of(reason: plan::ModeReason) -> ModeReason {
    use plan::ModeReason as R;
    match reason {
        R::Requested => ModeReason::Requested,
        R::SubscribeRejected => ModeReason::SubscribeRejected,
        R::RelayUnreachable => ModeReason::RelayUnreachable,
        R::Recovered => ModeReason::Recovered,
        R::TokenPruned => ModeReason::TokenPruned,
        R::PushesMissing => ModeReason::PushesMissing,
        R::Expired => ModeReason::Expired,
        R::SignedOut => ModeReason::SignedOut,
    }
}

/// Waits `d`, or until the loops are poked or the client closes. False when closed.
async fn pause(inner: &Inner, wake: &mut tokio::sync::watch::Receiver<u64>, d: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        r = wake.changed() => r.is_ok(),
        () = inner.shutdown.cancelled() => false,
    }
}

/// Performs the planner's actions and wakes it at its deadlines.
pub(crate) async fn supervisor(inner: Arc<Inner>) {
    let notify = inner.driver().supervisor.clone();
    loop {
        let next = tokio::select! {
            next = inner.supervise_once() => next,
            () = inner.shutdown.cancelled() => return,
        };
        if next.is_zero() {
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(next) => {}
            () = notify.notified() => {}
            () = inner.shutdown.cancelled() => return,
        }
    }
}

/// Polls one namespace: long-polls in Slow Mode, checks every `fast_check_interval_ms`
/// in Fast Mode.
pub(crate) async fn poll_loop(inner: Arc<Inner>, namespace: i32) {
    let mut wake = inner.wake.subscribe();
    let mut failures = 0u32;
    let wait_ms = inner.options.poll_wait_ms.clamp(MIN_POLL_WAIT_MS, MAX_WAIT_MS);
    let check = Duration::from_millis(inner.options.fast_check_interval_ms.max(1));
    loop {
        if inner.account().is_none() {
            if pause(&inner, &mut wake, MAX_SUPERVISOR_SLEEP).await {
                continue;
            }
            return;
        }
        let fast = inner.mode() == Mode::Fast;
        let result = tokio::select! {
            r = inner.poll_namespace(namespace, if fast { 0 } else { wait_ms }) => r,
            () = inner.shutdown.cancelled() => return,
        };
        let pause_for = match result {
            Ok(_) => {
                failures = 0;
                if fast { check } else { Duration::ZERO }
            }
            Err(TidingsError::NotSignedIn) => continue,
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::debug!(namespace, error = %e, "polling failed; retrying");
                inner.poll_backoff(failures)
            }
        };
        if !pause_for.is_zero() && !pause(&inner, &mut wake, pause_for).await {
            return;
        }
        if inner.shutdown.is_cancelled() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> ClientOptions {
        ClientOptions::default()
    }

    #[test]
    fn the_first_version_of_the_blob_resumes_fast_mode() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = DeviceState::open(dir.path(), &[1; 32]).unwrap();
        let old = format!(
            r#"{{"wanted":{{"service":"Fcm","token":"t","app_id":"a"}},"subscribed":{{"since_ms":1,"renewed_ms":1,"expires_ms":{}}},"unsubscribe_pending":false}}"#,
            now_ms() + 60_000
        );
        store.put_blob(FAST_MODE_BLOB, old.as_bytes()).unwrap();
        let d = DriverState::load(&store, &options()).unwrap();
        let status = d.planner.status();
        assert_eq!(status.mode, plan::Mode::Fast);
        assert!(status.fast_requested);
    }

    #[test]
    fn nothing_saved_is_slow_mode() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeviceState::open(dir.path(), &[1; 32]).unwrap();
        let d = DriverState::load(&store, &options()).unwrap();
        assert_eq!(d.planner.status().mode, plan::Mode::Slow);
        assert!(!d.planner.status().fast_requested);
    }

    #[test]
    fn push_services_keep_their_saved_names() {
        for s in SERVICES {
            assert_eq!(service_named(service_name(s)), Some(s));
        }
        assert_eq!(service_named("Carrier pigeon"), None);
    }

    #[test]
    fn every_reason_maps_to_its_namesake() {
        use plan::ModeReason as R;
        for r in [
            R::Requested,
            R::SubscribeRejected,
            R::RelayUnreachable,
            R::Recovered,
            R::TokenPruned,
            R::PushesMissing,
            R::Expired,
            R::SignedOut,
        ] {
            assert_eq!(format!("{r:?}"), format!("{:?}", reason_of(r)));
        }
    }

    #[test]
    fn lifecycle_calls_return_at_once_and_the_state_survives_a_restart() {
        let rt = crate::runtime::handle();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_str().unwrap().to_owned();
        let open = || {
            rt.block_on(TidingsClient::open(
                path.clone(),
                vec![1; 32],
                "http://127.0.0.1:9".into(),
                None,
                None,
            ))
            .unwrap()
        };
        let c = open();
        rt.block_on(c.create_account()).unwrap();
        // No relay answers here: Fast Mode is wanted and retried.
        let change = rt
            .block_on(c.enable_fast_mode(PushService::Apns, "tok".into(), "app".into()))
            .unwrap();
        assert_eq!(
            (change.mode, change.reason),
            (Mode::Slow, ModeReason::RelayUnreachable)
        );
        c.set_app_state(AppState::Background);
        c.network_changed();
        c.set_app_state(AppState::Foreground);
        c.inner.note_journal_delivered(&[[7; 32]]);
        assert!(c.mode_status().fast_requested);
        drop(c);
        let again = open();
        let status = again.mode_status();
        assert_eq!(status.mode, Mode::Slow);
        assert!(status.fast_requested);
        rt.block_on(again.disable_fast_mode()).unwrap();
        assert!(!again.mode_status().fast_requested);
    }
}
