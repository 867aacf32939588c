//! The Fast/Slow Mode planner: decides, without touching the network or reading a clock,
//! when a device registers its push token with the relay, renews or checks the
//! registration, gives Fast Mode up and takes it back. A driver feeds it [`Event`]s, each
//! with the time it happened (Unix ms), performs the [`Action`]s it returns, feeds back
//! their results, and wakes it with [`Event::Tick`] at [`FastModePlanner::next_deadline`].
//!
//! The rules (docs/mobile.md, "Fast and Slow Mode"):
//! - **Registration.** [`Event::Enable`] subscribes at once. A registration is renewed once
//!   [`FastModeConfig::renew_at_percent`] of its lifetime is left, and re-sent at start. A
//!   relay that cannot be reached is retried with exponential backoff
//!   ([`FastModeConfig::retry_backoff_ms`], doubling up to 64 times); Fast Mode falls back
//!   (`RelayUnreachable`, or `Expired` when the registration ran out) and comes back as
//!   `Recovered`. A refusal (`SubscribeRejected`) is not retried.
//! - **Health check.** Each [`AppState::Foreground`] asks for an immediate sync and, in
//!   Fast Mode, a `Verify` Subscribe: a relay answering "added" for a registration that
//!   had not expired dropped it because APNs / FCM reported the token dead (`TokenPruned`:
//!   the token is forgotten, the app must pass a fresh one).
//! - **Missed pushes.** A message found by polling counts as *missed* only when it reached
//!   the device while the app was in the foreground (the poll began in the foreground,
//!   after the first poll of this foreground visit — that first one brings what arrived in
//!   the background, which iOS hands to the Notification Service Extension only) and was
//!   neither handled in-process ([`Event::PushHandled`]) nor found in the extension's
//!   delivery journal ([`Event::JournalDelivered`]) within [`FastModeConfig::push_grace_ms`].
//!   They are judged at [`Event::Tick`] only (so a driver reads the journal just before
//!   ticking), and not at all once the app went to the background before their push came.
//!   Missed messages trigger a `Verify`; once [`FastModeConfig::missed_push_limit`] were
//!   missed since the last push, Fast Mode is given up (`PushesMissing`): the registration
//!   is removed from the relay but the token is kept, and Fast Mode is retried on a later
//!   foreground after a backoff ([`FastModeConfig::missing_retry_ms`], doubling per
//!   give-up up to [`FastModeConfig::missing_retry_max_ms`]; a push seen in Fast Mode
//!   resets it).
//!
//! What must survive a restart is in [`SavedFastMode`] (JSON through serde); everything
//! else (missed counts, the foreground visit) starts afresh, which only ever delays a
//! fallback.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A message hash.
pub type MessageHash = [u8; 32];

/// Backoff ceiling of relay retries, as a multiple of [`FastModeConfig::retry_backoff_ms`].
const MAX_BACKOFF_FACTOR: u64 = 64;
/// A request whose result never came back is treated as unreachable after this long, so a
/// lost result cannot stall the planner.
const IN_FLIGHT_LIMIT_MS: i64 = 10 * 60_000;
/// At most this many polled messages wait for their push (beyond it the limit is reached
/// many times over anyway).
const MAX_AWAITING: usize = 1_024;
/// At most this many recent push hashes are remembered for a poll that races its push.
const MAX_RECENT_PUSHES: usize = 1_024;

/// How messages reach the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Registered with the relay: pushes through APNs / FCM announce messages.
    Fast,
    /// Nothing registered: the mailbox is polled.
    Slow,
}

/// Why the mode is what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModeReason {
    /// The app asked (enable, disable, a new token).
    Requested,
    /// The relay refused the registration; not retried.
    SubscribeRejected,
    /// The relay could not be reached to register; retried with backoff.
    RelayUnreachable,
    /// Fast Mode came back by itself: the relay answered again, or the retry after
    /// `PushesMissing` registered.
    Recovered,
    /// The relay had dropped the registration (the provider reported the token dead).
    TokenPruned,
    /// Messages that reached the device in the foreground came without their push.
    PushesMissing,
    /// The registration ran out before it could be renewed.
    Expired,
    /// The account was signed out.
    SignedOut,
}

/// Whether the app is on screen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AppState {
    /// On screen: pushes reach the app's process, so a missing one means something.
    Foreground,
    /// Not on screen (iOS hands alert pushes to the Notification Service Extension only).
    Background,
}

/// Why a Subscribe is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// The app asked (a token, maybe new).
    Enable,
    /// Again after the relay was unreachable, or after `PushesMissing`.
    Retry,
    /// Before expiry, or at start.
    Renew,
    /// Is the registration still there? (At each foreground, and when pushes seem missing.)
    Verify,
}

/// What the app asked Fast Mode for. Opaque to the planner; the token is a secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The push service, as the driver names it.
    pub service: String,
    /// The provider's device token.
    pub token: String,
    /// The app id the relay knows the app by.
    pub app_id: String,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("service", &self.service)
            .field("token", &"<redacted>")
            .field("app_id", &self.app_id)
            .finish()
    }
}

/// What the relay confirmed last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Subscription {
    /// Since when pushes are expected (Unix ms): older messages may come without one.
    since_ms: i64,
    /// When it was last (re)confirmed.
    renewed_ms: i64,
    /// When it lapses unless renewed.
    expires_ms: i64,
}

/// What survives a restart. The JSON of the first version (`wanted`, `subscribed`,
/// `unsubscribe_pending`) reads as is; later fields default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedFastMode {
    #[serde(default)]
    wanted: Option<Registration>,
    #[serde(default)]
    subscribed: Option<Subscription>,
    #[serde(default)]
    unsubscribe_pending: bool,
    /// Fast Mode was given up for missed pushes; retried on a foreground from this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    missing_retry_at_ms: Option<i64>,
    /// Give-ups for missed pushes since a push last arrived in Fast Mode.
    #[serde(default, skip_serializing_if = "is_zero")]
    missing_strikes: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl SavedFastMode {
    /// Reads a saved blob. One this version cannot read whole falls back to Slow Mode,
    /// keeping the app's registration when it can be read, and otherwise removing whatever
    /// may be registered (an Unsubscribe of nothing is harmless).
    pub fn from_json(bytes: &[u8]) -> SavedFastMode {
        #[derive(Deserialize)]
        struct WantedOnly {
            #[serde(default)]
            wanted: Option<Registration>,
        }
        if let Ok(saved) = serde_json::from_slice::<SavedFastMode>(bytes) {
            return saved;
        }
        let wanted = serde_json::from_slice::<WantedOnly>(bytes)
            .ok()
            .and_then(|w| w.wanted);
        SavedFastMode {
            unsubscribe_pending: wanted.is_none(),
            wanted,
            ..SavedFastMode::default()
        }
    }

    /// The blob to save.
    pub fn to_json(&self) -> Vec<u8> {
        // Strings, integers and booleans only: serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The planner's tunables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FastModeConfig {
    /// How long after a message was found by polling its push may still arrive, ms.
    pub push_grace_ms: u64,
    /// Missed messages (since the last push) before Fast Mode is given up; 0 counts as 1.
    pub missed_push_limit: u32,
    /// Renew when less than this part of the registration's lifetime is left, percent.
    pub renew_at_percent: u8,
    /// First pause before retrying a relay that could not be reached, ms.
    pub retry_backoff_ms: u64,
    /// First pause before Fast Mode is retried after `PushesMissing`, ms.
    pub missing_retry_ms: u64,
    /// Longest pause before Fast Mode is retried after `PushesMissing`, ms.
    pub missing_retry_max_ms: u64,
}

impl Default for FastModeConfig {
    fn default() -> FastModeConfig {
        FastModeConfig {
            push_grace_ms: 120_000,
            missed_push_limit: 3,
            renew_at_percent: 50,
            retry_backoff_ms: 5_000,
            missing_retry_ms: 15 * 60_000,
            missing_retry_max_ms: 4 * 3_600_000,
        }
    }
}

/// Names one Subscribe or Unsubscribe, so its result finds it (and a superseded one is
/// ignored).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(u64);

/// Taken when a poll of the message namespace begins: whether what it finds reached the
/// device while the app was in the foreground.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollTicket {
    /// The foreground visit the poll began in.
    visit: u64,
    /// The app was in the foreground when the poll began.
    foreground: bool,
    /// ... and an earlier poll of this visit had brought what arrived before it.
    settled: bool,
}

/// A message a poll found (new to this install).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolledMessage {
    /// Its hash.
    pub hash: MessageHash,
    /// When the relay stored it (Unix ms).
    pub created_ms: i64,
}

/// The relay's answer to a Subscribe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubscribeResult {
    /// Registered; `added` is false when an existing registration was updated.
    Ok {
        /// The registration was new to the relay.
        added: bool,
        /// When it lapses unless renewed (Unix ms).
        expires_ms: i64,
    },
    /// The relay could not be reached (or did not answer in time).
    Unreachable,
    /// The relay refused the registration.
    Rejected {
        /// Its message, for the app.
        detail: String,
    },
}

/// The outcome of an Unsubscribe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnsubscribeResult {
    /// The relay holds no registration of this install any more.
    Done,
    /// Not confirmed (unreachable or refused): retried with backoff.
    Failed,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The app came to the foreground or went to the background.
    AppState(AppState),
    /// The device's network changed: a relay that was unreachable may answer now.
    NetworkChanged,
    /// The app asked for Fast Mode with this registration.
    Enable(Registration),
    /// The app asked for Slow Mode.
    Disable,
    /// The account was signed out (its own clean-up removes the registration).
    SignedOut,
    /// A Subscribe this planner asked for ended.
    Subscribed {
        /// Its request.
        request: RequestId,
        /// The relay's answer.
        result: SubscribeResult,
    },
    /// An Unsubscribe this planner asked for ended.
    Unsubscribed {
        /// Its request.
        request: RequestId,
        /// Its outcome.
        result: UnsubscribeResult,
    },
    /// The app handed this push to the client.
    PushHandled(MessageHash),
    /// The Notification Service Extension processed these pushes (its delivery journal).
    JournalDelivered(Vec<MessageHash>),
    /// A poll that began with `ticket` found these new messages.
    Polled {
        /// From [`FastModePlanner::poll_ticket`], taken before the poll began.
        ticket: PollTicket,
        /// The messages new to this install.
        messages: Vec<PolledMessage>,
    },
    /// Time passed (at [`FastModePlanner::next_deadline`], or whenever).
    Tick,
}

/// A change of mode or reason, for the app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModeChange {
    /// The mode now in effect.
    pub mode: Mode,
    /// Why.
    pub reason: ModeReason,
    /// The relay's message for `SubscribeRejected`, or empty.
    pub detail: String,
}

/// What the driver does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send Subscribe for `registration`, then feed [`Event::Subscribed`].
    Subscribe {
        /// Names the result.
        request: RequestId,
        /// Why.
        purpose: Purpose,
        /// What to register.
        registration: Registration,
    },
    /// Send Unsubscribe, then feed [`Event::Unsubscribed`].
    Unsubscribe {
        /// Names the result.
        request: RequestId,
    },
    /// Fetch what is new now (messages and config), feeding what polling finds.
    SyncNow,
    /// Tell the app the mode changed.
    ReportMode(ModeChange),
}

/// The planner's state, for the app.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// The mode in effect.
    pub mode: Mode,
    /// Why.
    pub reason: ModeReason,
    /// The app asked for Fast Mode and the planner keeps trying.
    pub fast_requested: bool,
    /// When the registration lapses unless renewed (Unix ms), if registered.
    pub expires_ms: Option<i64>,
    /// The app state last reported.
    pub app_state: AppState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    Subscribe(Purpose),
    Unsubscribe,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct InFlight {
    request: RequestId,
    started_ms: i64,
    call: Call,
}

/// Relay retries: the next one not before `at_ms`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Retry {
    at_ms: Option<i64>,
    attempt: u32,
}

/// The pause before retry `attempt` (1-based): `base`, doubling, at most 64 times `base`.
pub fn backoff_ms(base_ms: u64, attempt: u32) -> u64 {
    let factor = 1u64 << attempt.saturating_sub(1).min(6);
    base_ms.saturating_mul(factor.min(MAX_BACKOFF_FACTOR))
}

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The Fast/Slow Mode state machine. Pure: no I/O, no clock.
#[derive(Clone, Debug)]
pub struct FastModePlanner {
    config: FastModeConfig,
    saved: SavedFastMode,
    /// `saved` changed since [`FastModePlanner::take_saved`].
    dirty: bool,
    mode: Mode,
    reason: ModeReason,
    app: AppState,
    /// Counts foreground visits.
    visit: u64,
    /// A poll of this visit brought what arrived before it.
    caught_up: bool,
    /// A check to send when the relay may be asked: `Renew` at start, `Verify` on
    /// foreground and when pushes seem missing.
    check: Option<Purpose>,
    retry: Retry,
    in_flight: Option<InFlight>,
    next_request: u64,
    /// Messages polling found in the foreground, waiting for their push: when found.
    awaiting: BTreeMap<MessageHash, i64>,
    /// Pushes seen lately: when.
    recent_pushes: BTreeMap<MessageHash, i64>,
    /// Messages missed since the last push.
    missed: u32,
}

impl FastModePlanner {
    /// The planner at start, from what was saved: Fast Mode resumes when the registration
    /// has not expired (and is checked at once), a registration that ran out is retried at
    /// once, and a Fast Mode given up for missed pushes waits for its retry time.
    pub fn new(config: FastModeConfig, mut saved: SavedFastMode, now_ms: i64) -> FastModePlanner {
        if saved.wanted.is_none() {
            saved.missing_retry_at_ms = None;
        }
        let given_up = saved.missing_retry_at_ms.is_some();
        let live = saved.subscribed.is_some_and(|s| s.expires_ms > now_ms);
        if !live {
            saved.subscribed = None;
        }
        let mode = if live && saved.wanted.is_some() && !given_up {
            Mode::Fast
        } else {
            Mode::Slow
        };
        let check = (saved.wanted.is_some() && !given_up).then_some(Purpose::Renew);
        FastModePlanner {
            config,
            saved,
            dirty: false,
            mode,
            reason: if given_up {
                ModeReason::PushesMissing
            } else {
                ModeReason::Requested
            },
            app: AppState::Foreground,
            visit: 0,
            caught_up: false,
            check,
            retry: Retry::default(),
            in_flight: None,
            next_request: 0,
            awaiting: BTreeMap::new(),
            recent_pushes: BTreeMap::new(),
            missed: 0,
        }
    }

    /// Takes in one event at `now_ms` and returns what to do, in order.
    pub fn handle(&mut self, now_ms: i64, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::AppState(state) => self.on_app_state(now_ms, state, &mut out),
            Event::NetworkChanged => self.on_network_changed(now_ms, &mut out),
            Event::Enable(registration) => self.on_enable(now_ms, registration, &mut out),
            Event::Disable => self.on_disable(&mut out),
            Event::SignedOut => self.on_signed_out(&mut out),
            Event::Subscribed { request, result } => self.on_subscribed(now_ms, request, result, &mut out),
            Event::Unsubscribed { request, result } => self.on_unsubscribed(now_ms, request, result),
            Event::PushHandled(hash) => self.on_pushed(now_ms, &[hash]),
            Event::JournalDelivered(hashes) => self.on_pushed(now_ms, &hashes),
            Event::Polled { ticket, messages } => self.on_polled(now_ms, ticket, &messages),
            // Only here are late pushes judged: the driver reads the journal just before.
            Event::Tick => self.count_overdue(now_ms),
        }
        self.plan(now_ms, &mut out);
        out
    }

    /// Take before a poll of the message namespace begins; pass to [`Event::Polled`].
    pub fn poll_ticket(&self) -> PollTicket {
        let foreground = self.app == AppState::Foreground;
        PollTicket {
            visit: self.visit,
            foreground,
            settled: foreground && self.caught_up,
        }
    }

    /// Whether `request` is still wanted: check before sending it (a later enable or
    /// disable supersedes it), and skip it when not.
    pub fn is_current(&self, request: RequestId) -> bool {
        self.in_flight.is_some_and(|f| f.request == request)
    }

    /// When to [`Event::Tick`] next (Unix ms): `now_ms` when messages wait to be judged,
    /// else the next thing scheduled after `now_ms`, if any.
    pub fn next_deadline(&self, now_ms: i64) -> Option<i64> {
        let grace = ms(self.config.push_grace_ms);
        let fast = self.mode == Mode::Fast;
        let foreground = self.app == AppState::Foreground;
        let first_found = self.awaiting.values().min().filter(|_| fast);
        if first_found.is_some_and(|t| t.saturating_add(grace) <= now_ms) {
            return Some(now_ms);
        }
        [
            self.in_flight
                .map(|f| f.started_ms.saturating_add(IN_FLIGHT_LIMIT_MS)),
            self.retry.at_ms,
            self.renew_at_ms().filter(|_| fast),
            self.saved.subscribed.map(|s| s.expires_ms).filter(|_| fast),
            first_found.map(|t| t.saturating_add(grace)),
            self.saved.missing_retry_at_ms.filter(|_| foreground),
        ]
        .into_iter()
        .flatten()
        .filter(|t| *t > now_ms)
        .min()
    }

    /// The mode and why, for the app.
    pub fn status(&self) -> Status {
        Status {
            mode: self.mode,
            reason: self.reason,
            fast_requested: self.saved.wanted.is_some(),
            expires_ms: self.saved.subscribed.map(|s| s.expires_ms),
            app_state: self.app,
        }
    }

    /// Messages found by polling wait for their push: a good time to read the extension's
    /// delivery journal before the next [`Event::Tick`] judges them.
    pub fn awaiting_pushes(&self) -> bool {
        !self.awaiting.is_empty()
    }

    /// What to save, when it changed since the last call.
    pub fn take_saved(&mut self) -> Option<SavedFastMode> {
        std::mem::take(&mut self.dirty).then(|| self.saved.clone())
    }

    /// What to save now.
    pub fn saved(&self) -> &SavedFastMode {
        &self.saved
    }

    // ---- events -----------------------------------------------------------------------

    fn on_app_state(&mut self, now_ms: i64, state: AppState, out: &mut Vec<Action>) {
        let was = std::mem::replace(&mut self.app, state);
        if state == AppState::Background {
            // Pushes still due for messages found on screen now go to the extension,
            // whose journal is read only at the next foreground: they are not judged.
            self.awaiting.clear();
            return;
        }
        if was == AppState::Background {
            // A new visit: its first poll brings what arrived while away.
            self.visit = self.visit.wrapping_add(1);
            self.caught_up = false;
        }
        out.push(Action::SyncNow);
        if self.saved.wanted.is_none() || self.saved.missing_retry_at_ms.is_some() {
            return;
        }
        match self.mode {
            Mode::Fast => self.check = Some(Purpose::Verify),
            // Waiting out a backoff: the user is looking, try now.
            Mode::Slow => self.retry.at_ms = self.retry.at_ms.map(|t| t.min(now_ms)),
        }
    }

    fn on_network_changed(&mut self, now_ms: i64, out: &mut Vec<Action>) {
        self.retry.at_ms = self.retry.at_ms.map(|t| t.min(now_ms));
        if self.app == AppState::Foreground {
            out.push(Action::SyncNow);
        }
    }

    fn on_enable(&mut self, now_ms: i64, registration: Registration, out: &mut Vec<Action>) {
        self.saved.wanted = Some(registration);
        // The registration about to be made replaces whatever a clean-up would remove.
        self.saved.unsubscribe_pending = false;
        self.saved.missing_retry_at_ms = None;
        self.dirty = true;
        self.retry = Retry::default();
        self.check = None;
        self.subscribe(now_ms, Purpose::Enable, out);
    }

    fn on_disable(&mut self, out: &mut Vec<Action>) {
        let registered = self.saved.wanted.is_some() || self.saved.subscribed.is_some();
        self.saved.wanted = None;
        self.saved.subscribed = None;
        self.saved.unsubscribe_pending |= registered;
        self.forget_missing();
        self.dirty = true;
        self.retry = Retry::default();
        self.check = None;
        // A Subscribe in flight is superseded; an Unsubscribe in flight does the job.
        if matches!(self.in_flight, Some(f) if f.call != Call::Unsubscribe) {
            self.in_flight = None;
        }
        self.set_mode(Mode::Slow, ModeReason::Requested, String::new(), out);
    }

    fn on_signed_out(&mut self, out: &mut Vec<Action>) {
        // Sign-out removes the registration with the account's own key; nothing is left
        // for this planner to do for the old account.
        self.saved = SavedFastMode::default();
        self.dirty = true;
        self.retry = Retry::default();
        self.check = None;
        self.in_flight = None;
        if self.mode == Mode::Fast {
            self.set_mode(Mode::Slow, ModeReason::SignedOut, String::new(), out);
        }
    }

    fn on_subscribed(
        &mut self,
        now_ms: i64,
        request: RequestId,
        result: SubscribeResult,
        out: &mut Vec<Action>,
    ) {
        let Some(InFlight {
            call: Call::Subscribe(purpose),
            ..
        }) = self.in_flight.filter(|f| f.request == request)
        else {
            return;
        };
        self.in_flight = None;
        if self.saved.wanted.is_none() {
            return;
        }
        match result {
            SubscribeResult::Ok { added, expires_ms } => {
                self.on_registered(now_ms, purpose, added, expires_ms, out)
            }
            SubscribeResult::Unreachable => self.on_unreachable(now_ms, purpose, out),
            SubscribeResult::Rejected { detail } => {
                self.retry = Retry::default();
                self.saved.wanted = None;
                self.saved.subscribed = None;
                self.forget_missing();
                self.dirty = true;
                self.set_mode(Mode::Slow, ModeReason::SubscribeRejected, detail, out);
            }
        }
    }

    fn on_registered(
        &mut self,
        now_ms: i64,
        purpose: Purpose,
        added: bool,
        expires_ms: i64,
        out: &mut Vec<Action>,
    ) {
        self.retry = Retry::default();
        let had_live = self.saved.subscribed.is_some_and(|s| s.expires_ms > now_ms);
        if matches!(purpose, Purpose::Renew | Purpose::Verify) && added && had_live {
            self.fall_back_dead(ModeReason::TokenPruned, out);
            return;
        }
        let since_ms = match self.saved.subscribed {
            Some(s) if !added => s.since_ms,
            _ => now_ms,
        };
        self.saved.subscribed = Some(Subscription {
            since_ms,
            renewed_ms: now_ms,
            expires_ms,
        });
        self.saved.missing_retry_at_ms = None;
        self.dirty = true;
        // Just confirmed: a pending check has its answer.
        self.check = None;
        // A check (or renewal) found the registration in place, yet pushes keep missing.
        // Not right after the app asked: it gets its chance first.
        if purpose != Purpose::Enable && self.missed >= self.config.missed_push_limit.max(1) {
            self.give_up_missing(now_ms, out);
            return;
        }
        let reason = match (purpose, self.mode) {
            (_, Mode::Fast) => self.reason,
            (Purpose::Enable, Mode::Slow) => ModeReason::Requested,
            (_, Mode::Slow) => ModeReason::Recovered,
        };
        self.set_mode(Mode::Fast, reason, String::new(), out);
    }

    fn on_unreachable(&mut self, now_ms: i64, purpose: Purpose, out: &mut Vec<Action>) {
        self.bump_retry(now_ms);
        if matches!(purpose, Purpose::Renew | Purpose::Verify) {
            self.check.get_or_insert(purpose);
        }
        // Wanted again: from here on the ordinary retries apply.
        if self.saved.missing_retry_at_ms.take().is_some() {
            self.dirty = true;
        }
        let live = self.saved.subscribed.is_some_and(|s| s.expires_ms > now_ms);
        if purpose == Purpose::Enable || !live {
            let reason = if purpose == Purpose::Enable || self.saved.subscribed.is_none() {
                ModeReason::RelayUnreachable
            } else {
                ModeReason::Expired
            };
            if !live {
                self.saved.subscribed = None;
                self.dirty = true;
            }
            self.set_mode(Mode::Slow, reason, String::new(), out);
        }
    }

    fn on_unsubscribed(&mut self, now_ms: i64, request: RequestId, result: UnsubscribeResult) {
        if !matches!(self.in_flight, Some(f) if f.request == request && f.call == Call::Unsubscribe) {
            return;
        }
        self.in_flight = None;
        match result {
            UnsubscribeResult::Done => {
                self.retry = Retry::default();
                self.saved.unsubscribe_pending = false;
                if self.saved.wanted.is_none() {
                    self.saved.subscribed = None;
                }
                self.dirty = true;
            }
            UnsubscribeResult::Failed => self.bump_retry(now_ms),
        }
    }

    fn on_pushed(&mut self, now_ms: i64, hashes: &[MessageHash]) {
        if hashes.is_empty() {
            return;
        }
        for h in hashes {
            self.awaiting.remove(h);
            self.recent_pushes.insert(*h, now_ms);
        }
        self.prune_recent_pushes(now_ms);
        self.missed = 0;
        if self.mode == Mode::Fast && self.saved.missing_strikes > 0 {
            // Pushes work again: the next give-up starts from the shortest pause.
            self.saved.missing_strikes = 0;
            self.dirty = true;
        }
    }

    fn on_polled(&mut self, now_ms: i64, ticket: PollTicket, messages: &[PolledMessage]) {
        let this_visit = ticket.foreground && ticket.visit == self.visit && self.app == AppState::Foreground;
        if !this_visit {
            return;
        }
        // Whatever arrived before this visit has been fetched now (by this poll).
        self.caught_up = true;
        if !ticket.settled || self.mode != Mode::Fast {
            return;
        }
        let Some(since_ms) = self.saved.subscribed.map(|s| s.since_ms) else {
            return;
        };
        for m in messages.iter().filter(|m| m.created_ms >= since_ms) {
            if self.awaiting.len() >= MAX_AWAITING {
                break;
            }
            if !self.recent_pushes.contains_key(&m.hash) {
                self.awaiting.entry(m.hash).or_insert(now_ms);
            }
        }
    }

    // ---- deciding ---------------------------------------------------------------------

    /// What is due at `now_ms`.
    fn plan(&mut self, now_ms: i64, out: &mut Vec<Action>) {
        self.expire_in_flight(now_ms, out);
        self.lapse(now_ms, out);
        if self.in_flight.is_some() {
            return;
        }
        let retry_due = self.retry.at_ms.is_none_or(|t| t <= now_ms);
        if !retry_due {
            return;
        }
        if self.saved.wanted.is_some()
            && let Some(at) = self.saved.missing_retry_at_ms
        {
            if self.app == AppState::Foreground && at <= now_ms {
                self.subscribe(now_ms, Purpose::Retry, out);
            } else if self.saved.unsubscribe_pending {
                self.unsubscribe(now_ms, out);
            }
            return;
        }
        if self.saved.wanted.is_none() {
            if self.saved.unsubscribe_pending {
                self.unsubscribe(now_ms, out);
            }
            return;
        }
        match self.mode {
            Mode::Slow => self.subscribe(now_ms, Purpose::Retry, out),
            Mode::Fast => {
                if let Some(purpose) = self.check {
                    self.subscribe(now_ms, purpose, out);
                } else if self.renew_at_ms().is_some_and(|t| t <= now_ms) {
                    self.subscribe(now_ms, Purpose::Renew, out);
                }
            }
        }
    }

    /// A request whose result never came is taken as unreachable.
    fn expire_in_flight(&mut self, now_ms: i64, out: &mut Vec<Action>) {
        let Some(f) = self
            .in_flight
            .filter(|f| now_ms.saturating_sub(f.started_ms) >= IN_FLIGHT_LIMIT_MS)
        else {
            return;
        };
        match f.call {
            Call::Subscribe(_) => self.on_subscribed(now_ms, f.request, SubscribeResult::Unreachable, out),
            Call::Unsubscribe => self.on_unsubscribed(now_ms, f.request, UnsubscribeResult::Failed),
        }
    }

    /// A registration that ran out without renewal brings no more pushes.
    fn lapse(&mut self, now_ms: i64, out: &mut Vec<Action>) {
        if self.mode != Mode::Fast || self.saved.subscribed.is_some_and(|s| s.expires_ms > now_ms) {
            return;
        }
        self.saved.subscribed = None;
        self.dirty = true;
        self.set_mode(Mode::Slow, ModeReason::Expired, String::new(), out);
    }

    /// At a tick: messages whose push did not come within the grace period are missed; a
    /// check follows.
    fn count_overdue(&mut self, now_ms: i64) {
        if self.mode != Mode::Fast {
            return;
        }
        let grace = ms(self.config.push_grace_ms);
        let before = self.awaiting.len();
        self.awaiting
            .retain(|_, found| now_ms.saturating_sub(*found) < grace);
        let overdue = before - self.awaiting.len();
        if overdue > 0 {
            self.missed = self
                .missed
                .saturating_add(u32::try_from(overdue).unwrap_or(u32::MAX));
            self.check = Some(Purpose::Verify);
            tracing::debug!(overdue, missed = self.missed, "messages arrived without a push");
        }
        self.prune_recent_pushes(now_ms);
    }

    fn prune_recent_pushes(&mut self, now_ms: i64) {
        let keep = ms(self.config.push_grace_ms).saturating_mul(2);
        self.recent_pushes
            .retain(|_, at| now_ms.saturating_sub(*at) < keep);
        while self.recent_pushes.len() > MAX_RECENT_PUSHES {
            let Some(oldest) = self
                .recent_pushes
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(h, _)| *h)
            else {
                break;
            };
            self.recent_pushes.remove(&oldest);
        }
    }

    /// When the registration should be renewed.
    fn renew_at_ms(&self) -> Option<i64> {
        let s = self.saved.subscribed?;
        let lifetime = s.expires_ms.saturating_sub(s.renewed_ms).max(0);
        Some(s.expires_ms - lifetime * i64::from(self.config.renew_at_percent.min(100)) / 100)
    }

    // ---- doing ------------------------------------------------------------------------

    fn subscribe(&mut self, now_ms: i64, purpose: Purpose, out: &mut Vec<Action>) {
        let Some(registration) = self.saved.wanted.clone() else {
            return;
        };
        if self.saved.unsubscribe_pending {
            // The registration about to be made replaces the one a clean-up would remove.
            self.saved.unsubscribe_pending = false;
            self.dirty = true;
        }
        // Any Subscribe answers a pending check (re-armed if the relay does not answer).
        self.check = None;
        let request = self.start(now_ms, Call::Subscribe(purpose));
        out.push(Action::Subscribe {
            request,
            purpose,
            registration,
        });
    }

    fn unsubscribe(&mut self, now_ms: i64, out: &mut Vec<Action>) {
        let request = self.start(now_ms, Call::Unsubscribe);
        out.push(Action::Unsubscribe { request });
    }

    fn start(&mut self, now_ms: i64, call: Call) -> RequestId {
        self.next_request = self.next_request.wrapping_add(1);
        let request = RequestId(self.next_request);
        self.in_flight = Some(InFlight {
            request,
            started_ms: now_ms,
            call,
        });
        request
    }

    fn bump_retry(&mut self, now_ms: i64) {
        self.retry.attempt = self.retry.attempt.saturating_add(1);
        let pause = ms(backoff_ms(self.config.retry_backoff_ms, self.retry.attempt));
        self.retry.at_ms = Some(now_ms.saturating_add(pause));
    }

    /// Gives Fast Mode up for missed pushes: the registration is removed, the token kept
    /// for a retry on a later foreground.
    fn give_up_missing(&mut self, now_ms: i64, out: &mut Vec<Action>) {
        self.saved.missing_strikes = self.saved.missing_strikes.saturating_add(1);
        let pause = self.missing_backoff_ms(self.saved.missing_strikes);
        self.saved.missing_retry_at_ms = Some(now_ms.saturating_add(pause));
        self.saved.subscribed = None;
        self.saved.unsubscribe_pending = true;
        self.dirty = true;
        self.check = None;
        self.set_mode(Mode::Slow, ModeReason::PushesMissing, String::new(), out);
    }

    fn missing_backoff_ms(&self, strikes: u32) -> i64 {
        let factor = 1u64 << strikes.saturating_sub(1).min(20);
        let pause = self
            .config
            .missing_retry_ms
            .saturating_mul(factor)
            .min(self.config.missing_retry_max_ms.max(self.config.missing_retry_ms));
        ms(pause)
    }

    /// Gives Fast Mode up for a dead token: forgotten, and removed from the relay.
    fn fall_back_dead(&mut self, reason: ModeReason, out: &mut Vec<Action>) {
        self.saved.wanted = None;
        self.saved.subscribed = None;
        self.saved.unsubscribe_pending = true;
        self.forget_missing();
        self.dirty = true;
        self.check = None;
        self.set_mode(Mode::Slow, reason, String::new(), out);
    }

    fn forget_missing(&mut self) {
        self.saved.missing_retry_at_ms = None;
        self.saved.missing_strikes = 0;
    }

    /// Sets the mode, reporting a change of mode or reason.
    fn set_mode(&mut self, mode: Mode, reason: ModeReason, detail: String, out: &mut Vec<Action>) {
        if self.mode == mode && self.reason == reason {
            return;
        }
        self.mode = mode;
        self.reason = reason;
        if mode == Mode::Slow {
            self.awaiting.clear();
            self.missed = 0;
        }
        out.push(Action::ReportMode(ModeChange { mode, reason, detail }));
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod props;
