//! The Fast/Slow Mode driver.
//!
//! - **Slow Mode**: each namespace the app needs (messages 0, config 10) is long-polled
//!   in a loop.
//! - **Fast Mode**: the device is subscribed for both namespaces; pushes (handed in by the
//!   app through `handle_push`) announce messages, and the mailbox is still checked by
//!   polling every `fast_check_interval_ms` while the client runs. The registration is
//!   renewed once `renew_at_percent` of its lifetime is left, and re-sent at every start.
//!
//! Fast Mode falls back to Slow Mode by itself, and reports why:
//! - the relay refuses the registration (`SubscribeRejected`; not retried);
//! - the relay cannot be reached to register (`RelayUnreachable`; retried with backoff,
//!   Fast Mode returns as `Recovered`) or to renew before expiry (`Expired`);
//! - the relay dropped the registration, which happens when APNs / FCM report the token
//!   dead: a renewal or check answers "added" for a registration that had not expired
//!   (`TokenPruned`);
//! - polling finds messages that no push announced within `push_grace_ms`: the
//!   registration is checked at once (a re-subscribe), and after `missed_push_limit` such
//!   messages Fast Mode is given up (`PushesMissing`).
//!
//! After a fallback for a dead token, the registration is removed from the relay in the
//! background (a check re-added it), and the app is expected to pass a fresh token.

use std::{
    collections::HashMap,
    sync::{Arc, MutexGuard, PoisonError},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tidings_device_link::{client::MAX_WAIT_MS, state::DeviceState};
use tokio::time::Instant;

use crate::{
    client::{Inner, TidingsClient, now_ms},
    error::{Result, TidingsError},
    events::Event,
    types::{IncomingMessage, Mode, ModeChange, ModeReason, ModeStatus, PushService},
};

/// The blob the Fast Mode registration is saved in.
const FAST_MODE_BLOB: &str = "fast-mode";
/// The longest the supervisor sleeps without looking.
const MAX_SUPERVISOR_SLEEP: Duration = Duration::from_secs(60);
/// Shortest long-poll: a relay answering at once must not make the loop spin.
const MIN_POLL_WAIT_MS: u32 = 1_000;
/// Backoff ceiling, as a multiple of `retry_backoff_ms`.
const MAX_BACKOFF_FACTOR: u64 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum SavedService {
    Apns,
    ApnsSandbox,
    Fcm,
}

/// What the app asked for: Fast Mode with this token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Registration {
    service: SavedService,
    token: String,
    app_id: String,
}

/// What the relay confirmed last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Subscribed {
    /// Since when pushes are expected (Unix ms): messages older may come without one.
    since_ms: i64,
    /// When it was last (re)confirmed.
    renewed_ms: i64,
    /// When it lapses unless renewed.
    expires_ms: i64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    wanted: Option<Registration>,
    subscribed: Option<Subscribed>,
    unsubscribe_pending: bool,
}

/// The driver's state.
#[derive(Debug)]
pub(crate) struct DriverState {
    mode: Mode,
    reason: ModeReason,
    wanted: Option<Registration>,
    subscribed: Option<Subscribed>,
    unsubscribe_pending: bool,
    /// Re-send the registration now (at start: checks it survived while the app slept).
    check_now: bool,
    retry_at: Option<Instant>,
    retry_attempt: u32,
    /// Messages found by polling, waiting for their push.
    awaiting: HashMap<[u8; 32], Instant>,
    /// Messages polling found that no push announced, since the last push.
    missed: u32,
}

impl DriverState {
    /// The saved registration: Fast Mode resumes if it has not expired.
    pub(crate) fn load(store: &DeviceState) -> Result<DriverState> {
        let saved: Saved = store
            .get_blob(FAST_MODE_BLOB)?
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let live = saved.subscribed.is_some_and(|s| s.expires_ms > now_ms());
        let mode = if live && saved.wanted.is_some() {
            Mode::Fast
        } else {
            Mode::Slow
        };
        Ok(DriverState {
            mode,
            reason: ModeReason::Requested,
            check_now: saved.wanted.is_some(),
            retry_at: None,
            retry_attempt: 0,
            wanted: saved.wanted,
            subscribed: saved.subscribed.filter(|_| live),
            unsubscribe_pending: saved.unsubscribe_pending,
            awaiting: HashMap::new(),
            missed: 0,
        })
    }

    fn save(&self, store: &mut DeviceState) -> Result<()> {
        let saved = Saved {
            wanted: self.wanted.clone(),
            subscribed: self.subscribed,
            unsubscribe_pending: self.unsubscribe_pending,
        };
        // Serialising plain strings and integers cannot fail.
        let bytes = serde_json::to_vec(&saved).unwrap_or_default();
        store.put_blob(FAST_MODE_BLOB, &bytes)?;
        Ok(())
    }

    fn change(&self) -> ModeChange {
        ModeChange {
            mode: self.mode,
            reason: self.reason,
            detail: String::new(),
        }
    }

    /// When the registration should be renewed.
    fn renew_at_ms(&self, percent: u8) -> Option<i64> {
        let s = self.subscribed?;
        let lifetime = s.expires_ms.saturating_sub(s.renewed_ms).max(0);
        Some(s.expires_ms - lifetime * i64::from(percent.min(100)) / 100)
    }
}

/// Why a Subscribe is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// The app asked (a token, maybe new).
    Enable,
    /// Again after the relay was unreachable.
    Retry,
    /// Before expiry, or at start.
    Renew,
    /// Pushes seem missing: is the registration still there?
    Verify,
}

/// What the supervisor does next.
enum Action {
    Unsubscribe,
    Register(Purpose),
}

#[uniffi::export(async_runtime = "tokio")]
impl TidingsClient {
    /// Fast Mode: registers this install's push token (sealed to the relay) for the
    /// account's message and config namespaces. Call it at every launch with the token the
    /// OS gave, and again whenever the OS reports a new one. Returns the mode now in
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
        let d = self.inner.driver();
        ModeStatus {
            mode: d.mode,
            reason: d.reason,
            fast_requested: d.wanted.is_some(),
            expires_ms: d.subscribed.map(|s| s.expires_ms),
        }
    }
}

impl Inner {
    pub(crate) fn driver(&self) -> MutexGuard<'_, DriverState> {
        self.driver.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the mode, reporting a change of mode or reason; the caller saves.
    fn set_mode(&self, d: &mut DriverState, mode: Mode, reason: ModeReason, detail: String) {
        if d.mode == mode && d.reason == reason {
            return;
        }
        d.mode = mode;
        d.reason = reason;
        if mode == Mode::Slow {
            d.awaiting.clear();
            d.missed = 0;
        }
        tracing::info!(?mode, ?reason, "delivery mode changed");
        self.events
            .send(Event::ModeChanged(ModeChange { mode, reason, detail }));
        self.poke();
    }

    fn save_driver(&self, d: &DriverState) {
        if let Err(e) = d.save(&mut self.lock_store()) {
            tracing::warn!(error = %e, "cannot save the Fast Mode registration");
        }
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
        {
            let mut d = self.driver();
            d.wanted = Some(Registration {
                service: match service {
                    PushService::Apns => SavedService::Apns,
                    PushService::ApnsSandbox => SavedService::ApnsSandbox,
                    PushService::Fcm => SavedService::Fcm,
                },
                token,
                app_id,
            });
            // A fallback's clean-up must not remove the registration about to be made.
            d.unsubscribe_pending = false;
            d.retry_at = None;
            d.retry_attempt = 0;
            self.save_driver(&d);
        }
        let detail = self.register(Purpose::Enable).await;
        let d = self.driver();
        Ok(ModeChange { detail, ..d.change() })
    }

    pub(crate) async fn disable_fast_mode(&self) -> Result<()> {
        {
            let mut d = self.driver();
            let was_registered = d.wanted.is_some() || d.subscribed.is_some();
            d.wanted = None;
            d.subscribed = None;
            d.unsubscribe_pending = was_registered || d.unsubscribe_pending;
            self.set_mode(&mut d, Mode::Slow, ModeReason::Requested, String::new());
            self.save_driver(&d);
        }
        match self.unsubscribe_if_pending().await {
            Err(TidingsError::Unreachable { .. }) | Err(TidingsError::Timeout { .. }) => Ok(()),
            other => other,
        }
    }

    /// At sign-out: Slow Mode, nothing wanted.
    pub(crate) fn set_signed_out_mode(&self) {
        let mut d = self.driver();
        d.wanted = None;
        d.subscribed = None;
        if d.mode == Mode::Fast {
            self.set_mode(&mut d, Mode::Slow, ModeReason::SignedOut, String::new());
        }
        self.save_driver(&d);
    }

    /// Sends Unsubscribe when a fallback or `disable_fast_mode` left one to do.
    async fn unsubscribe_if_pending(&self) -> Result<()> {
        let account = self.require_account()?;
        let _serial = self.registration.lock().await;
        if !self.driver().unsubscribe_pending {
            return Ok(());
        }
        account.unsubscribe().await?;
        let mut d = self.driver();
        // Enabling meanwhile clears the flag before it subscribes; keep its registration.
        if d.wanted.is_none() {
            d.subscribed = None;
        }
        d.unsubscribe_pending = false;
        self.save_driver(&d);
        Ok(())
    }

    /// Sends Subscribe for the wanted registration and interprets the answer. Returns a
    /// detail for the app (the relay's refusal), or empty.
    async fn register(&self, purpose: Purpose) -> String {
        let Ok(account) = self.require_account() else {
            return String::new();
        };
        let _serial = self.registration.lock().await;
        let Some(wanted) = self.driver().wanted.clone() else {
            return String::new();
        };
        let service = match wanted.service {
            SavedService::Apns => PushService::Apns,
            SavedService::ApnsSandbox => PushService::ApnsSandbox,
            SavedService::Fcm => PushService::Fcm,
        };
        // Covers the message and config namespaces, message data in the push when it fits.
        let result = account
            .subscribe(service.to_wire(), &wanted.token, &wanted.app_id)
            .await
            .map_err(TidingsError::from);
        let now = now_ms();
        let mut d = self.driver();
        if d.wanted.as_ref() != Some(&wanted) {
            // The app changed its mind while this was in flight; its own call decides.
            return String::new();
        }
        let mut detail = String::new();
        match result {
            Ok(resp) => {
                let had_live = d.subscribed.is_some_and(|s| s.expires_ms > now);
                let pruned = matches!(purpose, Purpose::Renew | Purpose::Verify) && resp.added && had_live;
                d.retry_at = None;
                d.retry_attempt = 0;
                d.check_now = false;
                if pruned {
                    self.fall_back(&mut d, ModeReason::TokenPruned);
                } else {
                    let since = match d.subscribed {
                        Some(s) if !resp.added => s.since_ms,
                        _ => now,
                    };
                    d.subscribed = Some(Subscribed {
                        since_ms: since,
                        renewed_ms: now,
                        expires_ms: resp.expires_ms,
                    });
                    if purpose == Purpose::Verify && d.missed >= self.options.missed_push_limit {
                        self.fall_back(&mut d, ModeReason::PushesMissing);
                    } else {
                        let reason = match (purpose, d.mode) {
                            (_, Mode::Fast) => d.reason,
                            (Purpose::Enable, Mode::Slow) => ModeReason::Requested,
                            (_, Mode::Slow) => ModeReason::Recovered,
                        };
                        self.set_mode(&mut d, Mode::Fast, reason, String::new());
                    }
                }
            }
            Err(e @ (TidingsError::Unreachable { .. } | TidingsError::Timeout { .. })) => {
                tracing::debug!(error = %e, ?purpose, "push registration: relay unreachable");
                d.retry_attempt = d.retry_attempt.saturating_add(1);
                d.retry_at = Some(Instant::now() + self.backoff(d.retry_attempt));
                let live = d.subscribed.is_some_and(|s| s.expires_ms > now);
                if purpose == Purpose::Enable || !live {
                    let reason = if purpose == Purpose::Enable || d.subscribed.is_none() {
                        ModeReason::RelayUnreachable
                    } else {
                        ModeReason::Expired
                    };
                    if !live {
                        d.subscribed = None;
                    }
                    self.set_mode(&mut d, Mode::Slow, reason, String::new());
                }
            }
            Err(e) => {
                detail = e.to_string();
                tracing::info!(error = %e, "the relay refused the push registration");
                d.wanted = None;
                d.subscribed = None;
                self.set_mode(&mut d, Mode::Slow, ModeReason::SubscribeRejected, detail.clone());
            }
        }
        self.save_driver(&d);
        detail
    }

    /// Gives up Fast Mode for a broken registration; it is removed in the background.
    fn fall_back(&self, d: &mut DriverState, reason: ModeReason) {
        d.wanted = None;
        d.subscribed = None;
        d.unsubscribe_pending = true;
        self.set_mode(d, Mode::Slow, reason, String::new());
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u64 << attempt.saturating_sub(1).min(6);
        Duration::from_millis(
            self.options
                .retry_backoff_ms
                .saturating_mul(factor.min(MAX_BACKOFF_FACTOR)),
        )
    }

    /// Polling found these new messages: in Fast Mode each should also come by push.
    pub(crate) fn note_polled(&self, fresh: &[IncomingMessage]) {
        let mut d = self.driver();
        let Some(since) = d.subscribed.map(|s| s.since_ms) else {
            return;
        };
        if d.mode != Mode::Fast {
            return;
        }
        let now = Instant::now();
        let mut added = false;
        for m in fresh.iter().filter(|m| m.created_ms >= since) {
            let mut hash = [0u8; 32];
            if hex::decode_to_slice(&m.hash, &mut hash).is_ok() {
                d.awaiting.insert(hash, now);
                added = true;
            }
        }
        drop(d);
        if added {
            // The supervisor sleeps until its next deadline; this adds an earlier one.
            self.poke();
        }
    }

    /// A push arrived: pushes work, and this message needs no push anymore.
    pub(crate) fn note_pushed(&self, hash: &[u8; 32]) {
        let mut d = self.driver();
        d.awaiting.remove(hash);
        d.missed = 0;
    }

    /// One look: what is due now, done; returns how long until the next look.
    async fn supervise_once(&self) -> Duration {
        let grace = Duration::from_millis(self.options.push_grace_ms);
        let (action, next) = {
            let mut d = self.driver();
            let now = Instant::now();
            let now_ms = now_ms();
            let retry_due = d.retry_at.is_none_or(|t| t <= now);
            let renew_due = d
                .renew_at_ms(self.options.renew_at_percent)
                .is_some_and(|t| t <= now_ms);
            let overdue = d
                .awaiting
                .values()
                .filter(|t| now.duration_since(**t) >= grace)
                .count();
            let mut next = MAX_SUPERVISOR_SLEEP;
            let action = if self.account().is_none() {
                None
            } else if d.unsubscribe_pending {
                retry_due.then_some(Action::Unsubscribe)
            } else if d.wanted.is_none() {
                None
            } else if d.mode == Mode::Slow {
                retry_due.then_some(Action::Register(Purpose::Retry))
            } else if overdue > 0 {
                d.awaiting.retain(|_, t| now.duration_since(*t) < grace);
                d.missed = d
                    .missed
                    .saturating_add(u32::try_from(overdue).unwrap_or(u32::MAX));
                tracing::debug!(overdue, missed = d.missed, "messages arrived without a push");
                Some(Action::Register(Purpose::Verify))
            } else if (renew_due || d.check_now) && retry_due {
                Some(Action::Register(Purpose::Renew))
            } else {
                None
            };
            // Only deadlines still ahead: one already passed either led to the action above
            // or waits for another (a renewal for its retry time), and must not spin.
            let renew_in = d
                .renew_at_ms(self.options.renew_at_percent)
                .and_then(|t| u64::try_from(t.saturating_sub(now_ms)).ok())
                .map(Duration::from_millis);
            let ahead = [
                d.retry_at.map(|t| t.saturating_duration_since(now)),
                renew_in,
                d.awaiting
                    .values()
                    .min()
                    .map(|t| (*t + grace).saturating_duration_since(now)),
            ];
            for d in ahead.into_iter().flatten().filter(|d| !d.is_zero()) {
                next = next.min(d);
            }
            (action, next)
        };
        match action {
            Some(Action::Unsubscribe) => {
                if let Err(e) = self.unsubscribe_if_pending().await {
                    tracing::debug!(error = %e, "unsubscribe failed; retrying later");
                    let mut d = self.driver();
                    d.retry_attempt = d.retry_attempt.saturating_add(1);
                    d.retry_at = Some(Instant::now() + self.backoff(d.retry_attempt));
                }
                Duration::ZERO
            }
            Some(Action::Register(purpose)) => {
                self.register(purpose).await;
                Duration::ZERO
            }
            None => next,
        }
    }

    /// The mode in effect.
    pub(crate) fn mode(&self) -> Mode {
        self.driver().mode
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

/// Keeps the Fast Mode registration alive and falls back when it breaks.
pub(crate) async fn supervisor(inner: Arc<Inner>) {
    let mut wake = inner.wake.subscribe();
    loop {
        let next = tokio::select! {
            next = inner.supervise_once() => next,
            () = inner.shutdown.cancelled() => return,
        };
        if next.is_zero() {
            continue;
        }
        if !pause(&inner, &mut wake, next).await {
            return;
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
                inner.backoff(failures)
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

    #[test]
    fn renewal_is_due_at_the_chosen_share_of_the_lifetime() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeviceState::open(dir.path(), &[1; 32]).unwrap();
        let mut d = DriverState::load(&store).unwrap();
        assert_eq!(d.mode, Mode::Slow);
        assert_eq!(d.renew_at_ms(50), None);
        d.subscribed = Some(Subscribed {
            since_ms: 0,
            renewed_ms: 1_000,
            expires_ms: 3_000,
        });
        assert_eq!(d.renew_at_ms(50), Some(2_000));
        assert_eq!(d.renew_at_ms(25), Some(2_500));
        assert_eq!(d.renew_at_ms(200), Some(1_000));
    }

    #[test]
    fn a_live_registration_resumes_fast_mode_and_is_checked_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = DeviceState::open(dir.path(), &[1; 32]).unwrap();
        let mut d = DriverState::load(&store).unwrap();
        d.wanted = Some(Registration {
            service: SavedService::Fcm,
            token: "t".into(),
            app_id: "a".into(),
        });
        d.subscribed = Some(Subscribed {
            since_ms: 1,
            renewed_ms: 1,
            expires_ms: now_ms() + 60_000,
        });
        d.save(&mut store).unwrap();
        let again = DriverState::load(&store).unwrap();
        assert_eq!(again.mode, Mode::Fast);
        assert!(again.check_now);
        assert_eq!(again.wanted, d.wanted);
        // An expired one resumes in Slow Mode, still wanted (re-registered at once).
        d.subscribed = Some(Subscribed {
            since_ms: 1,
            renewed_ms: 1,
            expires_ms: 2,
        });
        d.save(&mut store).unwrap();
        let expired = DriverState::load(&store).unwrap();
        assert_eq!(expired.mode, Mode::Slow);
        assert!(expired.wanted.is_some() && expired.subscribed.is_none());
    }
}
