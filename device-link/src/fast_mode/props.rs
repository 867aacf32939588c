//! Property tests: the planner drives a simulated relay and device through random
//! interleavings of app lifecycle, pushes, journal reads, polls, network changes, relay
//! outages, restarts and time.
//!
//! The simulation keeps one clock that moves on by at least 1 ms per step, a relay that
//! holds the registration until it expires (and pushes each stored message while it
//! does), and a device inbox that never returns a message twice (a pushed message is in
//! the inbox, so polling does not bring it again).

use std::collections::{BTreeMap, VecDeque};

use proptest::prelude::*;

use super::*;

const GRACE: i64 = 1_000;
const TTL: i64 = 600_000;
const LIMIT: u32 = 3;

fn config() -> FastModeConfig {
    FastModeConfig {
        push_grace_ms: GRACE as u64,
        missed_push_limit: LIMIT,
        renew_at_percent: 50,
        retry_backoff_ms: 50,
        missing_retry_ms: 5_000,
        missing_retry_max_ms: 20_000,
    }
}

fn registration() -> Registration {
    Registration {
        service: "Apns".into(),
        token: "token".into(),
        app_id: "app".into(),
    }
}

/// Whether pushes reach the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pushes {
    /// Every push the relay sends reaches the app (foreground) or the extension.
    Arrive,
    /// None does.
    Lost,
}

/// One step of the world.
#[derive(Clone, Debug)]
enum Op {
    Foreground {
        read_journal: bool,
    },
    Background,
    /// The app reads the extension's delivery journal.
    ReadJournal,
    NetworkChanged,
    RelayUp(bool),
    /// Time passes (pushes due meanwhile are delivered at their time).
    Wait(i64),
    /// A message is stored; its push, if any, reaches the app `delay` ms later (less than
    /// the grace period) in-process or through the journal.
    Arrive {
        delay: i64,
        via_journal: bool,
    },
    PollBegin,
    PollEnd {
        fails: bool,
    },
    /// The driver performs the oldest action it was given.
    Perform,
    Enable,
    /// The process is killed and started again (the app enables at launch, or not).
    Restart {
        enable: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => any::<bool>().prop_map(|read_journal| Op::Foreground { read_journal }),
        2 => Just(Op::Background),
        1 => Just(Op::ReadJournal),
        1 => Just(Op::NetworkChanged),
        1 => any::<bool>().prop_map(Op::RelayUp),
        3 => prop_oneof![1..50i64, 50..3 * GRACE, Just(TTL / 4), Just(TTL)].prop_map(Op::Wait),
        4 => (0..GRACE - 1, any::<bool>()).prop_map(|(delay, via_journal)| Op::Arrive { delay, via_journal }),
        2 => Just(Op::PollBegin),
        2 => any::<bool>().prop_map(|fails| Op::PollEnd { fails }),
        4 => Just(Op::Perform),
        1 => Just(Op::Enable),
        1 => any::<bool>().prop_map(|enable| Op::Restart { enable }),
    ]
}

/// Random steps, mixed with the sequences that matter most: a visit to the background
/// with messages arriving meanwhile, messages found by polling before their push, and the
/// driver catching up with its actions.
fn ops(max_len: usize) -> impl Strategy<Value = Vec<Op>> {
    let away = (
        proptest::collection::vec((0..GRACE - 1, any::<bool>()), 1..6),
        any::<bool>(),
        0..4usize,
    )
        .prop_map(|(arrivals, read_journal, performs)| {
            let mut ops = vec![Op::Background];
            ops.extend(
                arrivals
                    .into_iter()
                    .map(|(delay, via_journal)| Op::Arrive { delay, via_journal }),
            );
            ops.push(Op::Foreground { read_journal });
            ops.extend(std::iter::repeat_n(Op::Perform, performs));
            ops
        });
    // Messages found by polling before their push (or journal entry) comes.
    let racing = proptest::collection::vec((0..GRACE - 1, any::<bool>()), 1..6).prop_map(|arrivals| {
        let mut ops = Vec::new();
        for (delay, via_journal) in arrivals {
            ops.extend([
                Op::Arrive { delay, via_journal },
                Op::PollBegin,
                Op::PollEnd { fails: false },
            ]);
        }
        ops.push(Op::Wait(GRACE));
        ops
    });
    let episode = prop_oneof![
        4 => op().prop_map(|op| vec![op]),
        2 => away,
        1 => racing,
        1 => Just(vec![Op::Perform; 4]),
    ];
    proptest::collection::vec(episode, 0..max_len).prop_map(|e| e.into_iter().flatten().collect())
}

struct Sim {
    p: FastModePlanner,
    now: i64,
    relay_up: bool,
    /// The relay holds the registration until then.
    registered_until: Option<i64>,
    pushes: Pushes,
    actions: VecDeque<Action>,
    reports: Vec<ModeChange>,
    next_message: u32,
    /// Stored at the relay, not yet in the device's inbox.
    unseen: BTreeMap<MessageHash, i64>,
    /// Pushes on their way to the app: (due, hash, through the journal).
    deliveries: Vec<(i64, MessageHash, bool)>,
    /// What the extension processed and the app has not read yet.
    journal: Vec<MessageHash>,
    /// A poll in progress: its ticket and what it read.
    poll: Option<(PollTicket, Vec<MessageHash>)>,
}

impl Sim {
    fn new(pushes: Pushes) -> Sim {
        let now = 1_000_000;
        let mut sim = Sim {
            p: FastModePlanner::new(config(), SavedFastMode::default(), now),
            now,
            relay_up: true,
            registered_until: None,
            pushes,
            actions: VecDeque::new(),
            reports: Vec::new(),
            next_message: 0,
            unseen: BTreeMap::new(),
            deliveries: Vec::new(),
            journal: Vec::new(),
            poll: None,
        };
        sim.feed(Event::Enable(registration()));
        sim
    }

    fn registered(&self) -> bool {
        self.registered_until.is_some_and(|t| t > self.now)
    }

    fn foreground(&self) -> bool {
        self.p.status().app_state == AppState::Foreground
    }

    fn feed(&mut self, event: Event) {
        let actions = self.p.handle(self.now, event);
        for a in actions {
            match a {
                Action::ReportMode(change) => self.reports.push(change),
                other => self.actions.push_back(other),
            }
        }
    }

    fn step(&mut self, op: &Op) {
        self.deliver_until(self.now + 1);
        self.now += 1;
        match op {
            Op::Foreground { read_journal } => {
                self.feed(Event::AppState(AppState::Foreground));
                if *read_journal {
                    self.read_journal();
                }
            }
            Op::Background => self.feed(Event::AppState(AppState::Background)),
            Op::ReadJournal => self.read_journal(),
            Op::NetworkChanged => self.feed(Event::NetworkChanged),
            Op::RelayUp(up) => self.relay_up = *up,
            Op::Wait(ms) => self.wait(*ms),
            Op::Arrive { delay, via_journal } => self.arrive(*delay, *via_journal),
            Op::PollBegin => self.poll_begin(),
            Op::PollEnd { fails } => self.poll_end(*fails),
            Op::Perform => self.perform(),
            Op::Enable => self.feed(Event::Enable(registration())),
            Op::Restart { enable } => self.restart(*enable),
        }
    }

    fn read_journal(&mut self) {
        let hashes = std::mem::take(&mut self.journal);
        for h in &hashes {
            self.unseen.remove(h);
        }
        if !hashes.is_empty() {
            self.feed(Event::JournalDelivered(hashes));
        }
    }

    /// Moves the clock to `now + ms`, delivering due pushes at their time, and ticks.
    fn wait(&mut self, ms: i64) {
        let until = self.now + ms;
        self.deliver_until(until);
        self.now = until;
        self.feed(Event::Tick);
    }

    /// Delivers the pushes due by `until`, each at its time.
    fn deliver_until(&mut self, until: i64) {
        self.deliveries.sort_by_key(|d| d.0);
        while let Some(&(due, hash, via_journal)) = self.deliveries.first().filter(|d| d.0 <= until) {
            self.deliveries.remove(0);
            self.now = self.now.max(due);
            self.unseen.remove(&hash);
            if via_journal {
                self.feed(Event::JournalDelivered(vec![hash]));
            } else {
                self.feed(Event::PushHandled(hash));
            }
        }
    }

    fn arrive(&mut self, delay: i64, via_journal: bool) {
        self.next_message += 1;
        let mut hash = [0u8; 32];
        hash[..4].copy_from_slice(&self.next_message.to_be_bytes());
        self.unseen.insert(hash, self.now);
        if !self.registered() || self.pushes == Pushes::Lost {
            return;
        }
        if self.foreground() {
            self.deliveries.push((self.now + delay, hash, via_journal));
        } else {
            // The extension takes it; the app reads the journal later (or polls first).
            self.journal.push(hash);
        }
    }

    fn poll_begin(&mut self) {
        if self.poll.is_none() {
            self.poll = Some((self.p.poll_ticket(), self.unseen.keys().copied().collect()));
        }
    }

    fn poll_end(&mut self, fails: bool) {
        let Some((ticket, read)) = self.poll.take() else {
            return;
        };
        if fails {
            return;
        }
        let messages = read
            .into_iter()
            .filter_map(|h| {
                self.unseen
                    .remove(&h)
                    .map(|created_ms| PolledMessage { hash: h, created_ms })
            })
            .collect();
        self.feed(Event::Polled { ticket, messages });
    }

    fn perform(&mut self) {
        let Some(action) = self.actions.pop_front() else {
            return;
        };
        match action {
            Action::Subscribe { request, .. } => {
                if !self.p.is_current(request) {
                    return;
                }
                let result = if self.relay_up {
                    let added = !self.registered();
                    let expires_ms = self.now + TTL;
                    self.registered_until = Some(expires_ms);
                    SubscribeResult::Ok { added, expires_ms }
                } else {
                    SubscribeResult::Unreachable
                };
                self.feed(Event::Subscribed { request, result });
            }
            Action::Unsubscribe { request } => {
                if !self.p.is_current(request) {
                    return;
                }
                let result = if self.relay_up {
                    self.registered_until = None;
                    UnsubscribeResult::Done
                } else {
                    UnsubscribeResult::Failed
                };
                self.feed(Event::Unsubscribed { request, result });
            }
            Action::SyncNow => {
                let pending = self.poll.take();
                self.poll_begin();
                self.poll_end(!self.relay_up);
                self.poll = pending;
            }
            Action::ReportMode(_) => {}
        }
    }

    fn restart(&mut self, enable: bool) {
        let saved = SavedFastMode::from_json(&self.p.saved().to_json());
        self.p = FastModePlanner::new(config(), saved, self.now);
        self.actions.clear();
        self.poll = None;
        if enable {
            self.feed(Event::Enable(registration()));
        }
    }

    /// Performs every action, and keeps time moving to the next deadline, `rounds` times.
    fn settle(&mut self, rounds: usize) {
        for _ in 0..rounds {
            while !self.actions.is_empty() {
                self.now += 1;
                self.perform();
            }
            let next = self.p.next_deadline(self.now).unwrap_or(self.now + GRACE);
            self.wait((next - self.now).clamp(1, TTL / 4));
        }
    }

    /// The user opens the app with the relay up: Fast Mode is on and caught up afterwards.
    fn open_app(&mut self) {
        self.relay_up = true;
        self.step(&Op::Foreground { read_journal: true });
        self.settle(40);
    }

    fn gave_up_for_missing_pushes(&self) -> bool {
        self.reports.iter().any(|c| c.reason == ModeReason::PushesMissing)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// While every push reaches the device (in-process in the foreground, through the
    /// journal from the background), Fast Mode is never given up for missed pushes, and
    /// once the relay answers it is on.
    #[test]
    fn fast_mode_stays_on_while_pushes_arrive(ops in ops(60)) {
        let mut sim = Sim::new(Pushes::Arrive);
        for op in &ops {
            sim.step(op);
            prop_assert!(sim.p.status().fast_requested, "gave up the token after {op:?}");
            prop_assert!(!sim.gave_up_for_missing_pushes(), "reports {:?}", sim.reports);
        }
        sim.open_app();
        let status = sim.p.status();
        prop_assert_eq!(status.mode, Mode::Fast, "reports {:?}", sim.reports);
        prop_assert!(!sim.gave_up_for_missing_pushes(), "reports {:?}", sim.reports);
    }

    /// A device whose pushes stop arriving while it is in the foreground falls back after
    /// the limit, keeps the token, and gets Fast Mode back on a later foreground.
    #[test]
    fn fast_mode_falls_back_when_foreground_pushes_stop(ops in ops(30)) {
        let mut sim = Sim::new(Pushes::Arrive);
        for op in &ops {
            sim.step(op);
        }
        sim.open_app();
        prop_assert_eq!(sim.p.status().mode, Mode::Fast);
        prop_assert!(sim.p.poll_ticket().settled);

        sim.pushes = Pushes::Lost;
        // A poll left running by the random part ended without an answer.
        sim.poll = None;
        for _ in 0..LIMIT {
            sim.step(&Op::Arrive { delay: 0, via_journal: false });
            sim.step(&Op::PollBegin);
            sim.step(&Op::PollEnd { fails: false });
        }
        for _ in 0..10 {
            if sim.gave_up_for_missing_pushes() {
                break;
            }
            sim.settle(1);
        }
        let status = sim.p.status();
        prop_assert_eq!((status.mode, status.reason), (Mode::Slow, ModeReason::PushesMissing));
        prop_assert!(status.fast_requested);

        // Pushes work again; the app goes away and comes back after the backoff.
        sim.pushes = Pushes::Arrive;
        sim.step(&Op::Background);
        sim.step(&Op::Wait(config().missing_retry_ms as i64));
        sim.open_app();
        let status = sim.p.status();
        prop_assert_eq!((status.mode, status.reason), (Mode::Fast, ModeReason::Recovered));
    }
}
