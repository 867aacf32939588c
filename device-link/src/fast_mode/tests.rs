//! The planner's rules, one at a time, with explicit clocks.

use super::*;

const T0: i64 = 1_000_000;
const LIFETIME: i64 = 3_600_000;

fn config() -> FastModeConfig {
    FastModeConfig {
        push_grace_ms: 1_000,
        missed_push_limit: 3,
        renew_at_percent: 50,
        retry_backoff_ms: 100,
        missing_retry_ms: 10_000,
        missing_retry_max_ms: 40_000,
    }
}

fn registration(token: &str) -> Registration {
    Registration {
        service: "Apns".into(),
        token: token.into(),
        app_id: "com.example".into(),
    }
}

fn hash(n: u8) -> MessageHash {
    [n; 32]
}

/// A planner and its clock.
struct T {
    p: FastModePlanner,
    now: i64,
}

impl T {
    fn new() -> T {
        T::restored(SavedFastMode::default())
    }

    fn restored(saved: SavedFastMode) -> T {
        T {
            p: FastModePlanner::new(config(), saved, T0),
            now: T0,
        }
    }

    /// Enabled and registered: Fast Mode, and caught up in the foreground.
    fn fast() -> T {
        let mut t = T::new();
        let actions = t.feed(Event::Enable(registration("tok")));
        let (request, purpose) = subscribe_of(&actions);
        assert_eq!(purpose, Purpose::Enable);
        let actions = t.ok(request, true);
        assert_eq!(reports(&actions), vec![(Mode::Fast, ModeReason::Requested)]);
        t.poll(&[]);
        t
    }

    fn feed(&mut self, event: Event) -> Vec<Action> {
        self.p.handle(self.now, event)
    }

    /// Moves the clock on by `ms` and ticks.
    fn after(&mut self, ms: i64) -> Vec<Action> {
        self.now += ms;
        self.feed(Event::Tick)
    }

    fn ok(&mut self, request: RequestId, added: bool) -> Vec<Action> {
        let expires_ms = self.now + LIFETIME;
        self.feed(Event::Subscribed {
            request,
            result: SubscribeResult::Ok { added, expires_ms },
        })
    }

    fn unreachable(&mut self, request: RequestId) -> Vec<Action> {
        self.feed(Event::Subscribed {
            request,
            result: SubscribeResult::Unreachable,
        })
    }

    /// A poll that begins and ends now, finding messages stored just now.
    fn poll(&mut self, found: &[u8]) -> Vec<Action> {
        let ticket = self.p.poll_ticket();
        self.poll_with(ticket, found)
    }

    fn poll_with(&mut self, ticket: PollTicket, found: &[u8]) -> Vec<Action> {
        let messages = found
            .iter()
            .map(|n| PolledMessage {
                hash: hash(*n),
                created_ms: self.now,
            })
            .collect();
        self.feed(Event::Polled { ticket, messages })
    }

    fn status(&self) -> Status {
        self.p.status()
    }

    /// Three messages found in the foreground with no push, the grace passed, the check
    /// answered: Fast Mode given up.
    fn give_up(&mut self) {
        self.poll(&[1, 2, 3]);
        let actions = self.after(1_000);
        let (request, purpose) = subscribe_of(&actions);
        assert_eq!(purpose, Purpose::Verify);
        let actions = self.ok(request, false);
        assert_eq!(reports(&actions), vec![(Mode::Slow, ModeReason::PushesMissing)]);
        let Some(Action::Unsubscribe { request }) =
            actions.iter().find(|a| matches!(a, Action::Unsubscribe { .. }))
        else {
            panic!("no unsubscribe after giving up: {actions:?}");
        };
        self.feed(Event::Unsubscribed {
            request: *request,
            result: UnsubscribeResult::Done,
        });
    }
}

fn subscribe_of(actions: &[Action]) -> (RequestId, Purpose) {
    let subs: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Subscribe { request, purpose, .. } => Some((*request, *purpose)),
            _ => None,
        })
        .collect();
    assert_eq!(subs.len(), 1, "expected one subscribe: {actions:?}");
    subs[0]
}

fn subscribes(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::Subscribe { .. }))
        .count()
}

fn reports(actions: &[Action]) -> Vec<(Mode, ModeReason)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ReportMode(c) => Some((c.mode, c.reason)),
            _ => None,
        })
        .collect()
}

// ---- registration --------------------------------------------------------------------

#[test]
fn enabling_registers_at_once_and_renews_at_the_chosen_share_of_the_lifetime() {
    let mut t = T::fast();
    let status = t.status();
    assert_eq!((status.mode, status.reason), (Mode::Fast, ModeReason::Requested));
    assert!(status.fast_requested);
    assert_eq!(status.expires_ms, Some(T0 + LIFETIME));
    assert_eq!(t.p.next_deadline(t.now), Some(T0 + LIFETIME / 2));
    assert!(t.after(LIFETIME / 2 - 1).is_empty());
    let (_, purpose) = subscribe_of(&t.after(1));
    assert_eq!(purpose, Purpose::Renew);

    let mut quarter = T::new();
    quarter.p.config.renew_at_percent = 25;
    let (request, _) = subscribe_of(&quarter.feed(Event::Enable(registration("tok"))));
    quarter.ok(request, true);
    assert_eq!(quarter.p.next_deadline(quarter.now), Some(T0 + LIFETIME * 3 / 4));
}

#[test]
fn an_unreachable_relay_is_retried_with_backoff_and_fast_mode_recovers() {
    let mut t = T::new();
    let (request, _) = subscribe_of(&t.feed(Event::Enable(registration("tok"))));
    let actions = t.unreachable(request);
    assert_eq!(
        reports(&actions),
        vec![(Mode::Slow, ModeReason::RelayUnreachable)]
    );
    assert!(t.status().fast_requested);
    assert_eq!(t.p.next_deadline(t.now), Some(t.now + 100));
    assert!(t.after(99).is_empty());
    let (request, purpose) = subscribe_of(&t.after(1));
    assert_eq!(purpose, Purpose::Retry);
    t.unreachable(request);
    // Doubled.
    assert_eq!(t.p.next_deadline(t.now), Some(t.now + 200));
    let (request, _) = subscribe_of(&t.after(200));
    let actions = t.ok(request, true);
    assert_eq!(reports(&actions), vec![(Mode::Fast, ModeReason::Recovered)]);
}

#[test]
fn the_backoff_doubles_up_to_64_times_the_first_pause() {
    assert_eq!(backoff_ms(100, 1), 100);
    assert_eq!(backoff_ms(100, 2), 200);
    assert_eq!(backoff_ms(100, 7), 6_400);
    assert_eq!(backoff_ms(100, 40), 6_400);
    assert_eq!(backoff_ms(u64::MAX, 3), u64::MAX);
}

#[test]
fn a_refused_registration_is_forgotten_and_not_retried() {
    let mut t = T::new();
    let (request, _) = subscribe_of(&t.feed(Event::Enable(registration("tok"))));
    let actions = t.feed(Event::Subscribed {
        request,
        result: SubscribeResult::Rejected {
            detail: "unknown app".into(),
        },
    });
    assert_eq!(
        actions,
        vec![Action::ReportMode(ModeChange {
            mode: Mode::Slow,
            reason: ModeReason::SubscribeRejected,
            detail: "unknown app".into(),
        })]
    );
    assert!(!t.status().fast_requested);
    assert!(t.after(10 * LIFETIME).is_empty());
    assert_eq!(t.p.next_deadline(t.now), None);
}

#[test]
fn a_check_answered_added_means_the_token_died() {
    let mut t = T::fast();
    let (request, _) = subscribe_of(&t.after(LIFETIME / 2));
    let actions = t.ok(request, true);
    assert_eq!(reports(&actions), vec![(Mode::Slow, ModeReason::TokenPruned)]);
    assert!(actions.iter().any(|a| matches!(a, Action::Unsubscribe { .. })));
    // The token is dead: only a fresh one brings Fast Mode back.
    assert!(!t.status().fast_requested);
    let after_background = {
        t.feed(Event::AppState(AppState::Background));
        t.now += 100_000;
        t.feed(Event::AppState(AppState::Foreground))
    };
    assert_eq!(subscribes(&after_background), 0);
}

#[test]
fn a_renewal_after_the_registration_lapsed_is_not_a_dead_token() {
    let mut t = T::fast();
    let (request, _) = subscribe_of(&t.after(LIFETIME / 2));
    t.unreachable(request);
    // The relay stays away past the expiry.
    let actions = t.after(LIFETIME);
    assert_eq!(reports(&actions), vec![(Mode::Slow, ModeReason::Expired)]);
    let (request, purpose) = subscribe_of(&actions);
    assert_eq!(purpose, Purpose::Retry);
    let actions = t.ok(request, true);
    assert_eq!(reports(&actions), vec![(Mode::Fast, ModeReason::Recovered)]);
}

#[test]
fn a_network_change_retries_at_once_and_syncs_in_the_foreground() {
    let mut t = T::new();
    let (request, _) = subscribe_of(&t.feed(Event::Enable(registration("tok"))));
    t.unreachable(request);
    t.now += 1;
    let actions = t.feed(Event::NetworkChanged);
    assert!(actions.contains(&Action::SyncNow));
    assert_eq!(subscribe_of(&actions).1, Purpose::Retry);
    t.feed(Event::AppState(AppState::Background));
    assert!(!t.feed(Event::NetworkChanged).contains(&Action::SyncNow));
}

#[test]
fn disabling_unsubscribes_until_the_relay_confirms() {
    let mut t = T::fast();
    let actions = t.feed(Event::Disable);
    assert_eq!(reports(&actions), vec![(Mode::Slow, ModeReason::Requested)]);
    let Some(Action::Unsubscribe { request }) = actions.last().cloned() else {
        panic!("{actions:?}");
    };
    t.feed(Event::Unsubscribed {
        request,
        result: UnsubscribeResult::Failed,
    });
    assert!(t.after(99).is_empty());
    let Some(Action::Unsubscribe { request }) = t.after(1).pop() else {
        panic!("not retried");
    };
    t.feed(Event::Unsubscribed {
        request,
        result: UnsubscribeResult::Done,
    });
    assert!(t.after(LIFETIME).is_empty());
    assert_eq!(t.p.saved(), &SavedFastMode::default());
}

#[test]
fn a_superseded_request_is_skipped_and_its_result_ignored() {
    let mut t = T::new();
    let (first, _) = subscribe_of(&t.feed(Event::Enable(registration("old"))));
    let actions = t.feed(Event::Enable(registration("new")));
    let (second, _) = subscribe_of(&actions);
    assert!(!t.p.is_current(first));
    assert!(t.p.is_current(second));
    assert!(t.ok(first, true).is_empty());
    assert_eq!(t.status().mode, Mode::Slow);
    assert_eq!(
        reports(&t.ok(second, true)),
        vec![(Mode::Fast, ModeReason::Requested)]
    );
    let Some(Action::Subscribe { registration, .. }) = actions.first() else {
        panic!()
    };
    assert_eq!(registration.token, "new");
}

#[test]
fn a_result_that_never_comes_is_taken_as_unreachable() {
    let mut t = T::new();
    subscribe_of(&t.feed(Event::Enable(registration("tok"))));
    assert_eq!(t.p.next_deadline(t.now), Some(t.now + IN_FLIGHT_LIMIT_MS));
    let actions = t.after(IN_FLIGHT_LIMIT_MS);
    assert_eq!(
        reports(&actions),
        vec![(Mode::Slow, ModeReason::RelayUnreachable)]
    );
    assert_eq!(subscribe_of(&t.after(100)).1, Purpose::Retry);
}

#[test]
fn signing_out_forgets_everything() {
    let mut t = T::fast();
    let actions = t.feed(Event::SignedOut);
    assert_eq!(reports(&actions), vec![(Mode::Slow, ModeReason::SignedOut)]);
    assert_eq!(t.p.take_saved(), Some(SavedFastMode::default()));
    assert!(t.after(LIFETIME).is_empty());
}

// ---- the foreground and missed pushes ------------------------------------------------

#[test]
fn coming_to_the_foreground_syncs_and_checks_the_registration() {
    let mut t = T::fast();
    t.feed(Event::AppState(AppState::Background));
    t.now += 60_000;
    let actions = t.feed(Event::AppState(AppState::Foreground));
    assert_eq!(actions[0], Action::SyncNow);
    let (request, purpose) = subscribe_of(&actions);
    assert_eq!(purpose, Purpose::Verify);
    assert!(t.ok(request, false).is_empty());
    assert_eq!(t.status().mode, Mode::Fast);
    // In Slow Mode without Fast Mode wanted: only the sync.
    assert_eq!(
        T::new().feed(Event::AppState(AppState::Foreground)),
        vec![Action::SyncNow]
    );
}

#[test]
fn messages_that_arrived_in_the_background_never_count() {
    let mut t = T::fast();
    t.feed(Event::AppState(AppState::Background));
    // A poll in the background (Android keeps the process) and one that began there.
    t.poll(&[1, 2, 3]);
    let began_in_background = t.p.poll_ticket();
    t.now += 10;
    let (check, _) = subscribe_of(&t.feed(Event::AppState(AppState::Foreground)));
    assert!(t.ok(check, false).is_empty());
    t.poll_with(began_in_background, &[4, 5, 6]);
    // The first poll of the visit brings what the extension showed meanwhile.
    t.poll(&[7, 8, 9]);
    assert!(t.after(10_000).is_empty());
    assert_eq!(t.status().mode, Mode::Fast);
}

#[test]
fn a_poll_that_began_in_an_earlier_visit_neither_counts_nor_catches_up() {
    let mut t = T::fast();
    let ticket = t.p.poll_ticket();
    t.feed(Event::AppState(AppState::Background));
    t.feed(Event::AppState(AppState::Foreground));
    t.poll_with(ticket, &[1, 2, 3]);
    assert!(!t.p.poll_ticket().settled);
    t.poll(&[4, 5, 6]);
    assert!(t.p.poll_ticket().settled);
}

#[test]
fn pushes_missing_in_the_foreground_give_fast_mode_up_but_keep_the_token() {
    let mut t = T::fast();
    t.give_up();
    let status = t.status();
    assert_eq!(
        (status.mode, status.reason),
        (Mode::Slow, ModeReason::PushesMissing)
    );
    assert!(status.fast_requested);
    assert_eq!(status.expires_ms, None);
    assert!(t.p.saved().wanted.is_some());
}

#[test]
fn fewer_misses_than_the_limit_keep_fast_mode_and_a_push_resets_them() {
    let mut t = T::fast();
    t.poll(&[1, 2]);
    let (request, _) = subscribe_of(&t.after(1_000));
    assert!(t.ok(request, false).is_empty());
    t.feed(Event::PushHandled(hash(9)));
    t.poll(&[3, 4]);
    let (request, _) = subscribe_of(&t.after(1_000));
    assert!(t.ok(request, false).is_empty());
    assert_eq!(t.status().mode, Mode::Fast);
    // One more makes three since the last push.
    t.poll(&[5]);
    let (request, _) = subscribe_of(&t.after(1_000));
    assert_eq!(
        reports(&t.ok(request, false)),
        vec![(Mode::Slow, ModeReason::PushesMissing)]
    );
}

#[test]
fn a_push_or_a_journal_entry_within_the_grace_period_is_not_missed() {
    let mut t = T::fast();
    t.poll(&[1, 2, 3]);
    t.now += 500;
    t.feed(Event::PushHandled(hash(1)));
    t.feed(Event::JournalDelivered(vec![hash(2), hash(3)]));
    assert!(t.after(10_000).is_empty());
    // Handled just before the poll saw it (a push racing the poll): not missed either.
    t.feed(Event::JournalDelivered(vec![hash(4), hash(5), hash(6)]));
    t.poll(&[4, 5, 6]);
    assert!(t.after(10_000).is_empty());
    assert_eq!(t.status().mode, Mode::Fast);
}

#[test]
fn late_pushes_are_judged_at_a_tick_only_and_not_after_the_app_left_the_screen() {
    let mut t = T::fast();
    t.poll(&[1, 2, 3]);
    t.now += 5_000;
    assert_eq!(t.p.next_deadline(t.now), Some(t.now), "overdue: tick now");
    // Other events come first; the journal the driver reads before its tick has them.
    assert!(t.poll(&[]).is_empty());
    t.feed(Event::JournalDelivered(vec![hash(1), hash(2), hash(3)]));
    assert!(t.after(1).is_empty());

    // Found on screen, then the app leaves: the pushes go to the extension meanwhile.
    t.poll(&[4, 5, 6]);
    t.feed(Event::AppState(AppState::Background));
    t.now += 60_000;
    let (check, purpose) = subscribe_of(&t.feed(Event::AppState(AppState::Foreground)));
    assert_eq!(purpose, Purpose::Verify);
    assert!(t.ok(check, false).is_empty());
    assert!(t.after(10_000).is_empty());
    assert_eq!(t.status().mode, Mode::Fast);
}

#[test]
fn messages_stored_before_the_registration_are_not_missed() {
    let mut t = T::fast();
    let ticket = t.p.poll_ticket();
    let messages = vec![PolledMessage {
        hash: hash(1),
        created_ms: T0 - 1,
    }];
    t.feed(Event::Polled { ticket, messages });
    assert!(t.after(10_000).is_empty());
}

#[test]
fn fast_mode_given_up_comes_back_on_a_foreground_after_the_backoff() {
    let mut t = T::fast();
    let gave_up_at = t.now + 1_000;
    t.give_up();
    assert_eq!(t.p.next_deadline(t.now), Some(gave_up_at + 10_000));
    // Too early: a foreground only syncs.
    t.feed(Event::AppState(AppState::Background));
    t.now = gave_up_at + 5_000;
    assert_eq!(
        t.feed(Event::AppState(AppState::Foreground)),
        vec![Action::SyncNow]
    );
    // Due while in the background: waits for the foreground.
    t.feed(Event::AppState(AppState::Background));
    assert_eq!(t.p.next_deadline(t.now), None);
    assert!(t.after(20_000).is_empty());
    let actions = t.feed(Event::AppState(AppState::Foreground));
    assert_eq!(actions[0], Action::SyncNow);
    let (request, purpose) = subscribe_of(&actions);
    assert_eq!(purpose, Purpose::Retry);
    assert_eq!(
        reports(&t.ok(request, true)),
        vec![(Mode::Fast, ModeReason::Recovered)]
    );
    assert_eq!(t.status().reason, ModeReason::Recovered);
}

#[test]
fn fast_mode_given_up_comes_back_while_the_app_stays_in_the_foreground() {
    let mut t = T::fast();
    t.give_up();
    let actions = t.after(10_000);
    let (request, purpose) = subscribe_of(&actions);
    assert_eq!(purpose, Purpose::Retry);
    t.ok(request, true);
    assert_eq!(t.status().mode, Mode::Fast);
}

#[test]
fn each_give_up_doubles_the_pause_up_to_the_cap_and_a_push_resets_it() {
    let mut t = T::fast();
    for expected in [10_000, 20_000, 40_000, 40_000] {
        t.give_up();
        let gave_up_at = t.now;
        assert_eq!(t.p.next_deadline(t.now), Some(gave_up_at + expected));
        let (request, _) = subscribe_of(&t.after(expected));
        t.ok(request, true);
        assert_eq!(t.status().mode, Mode::Fast);
    }
    t.feed(Event::PushHandled(hash(42)));
    t.give_up();
    assert_eq!(t.p.next_deadline(t.now), Some(t.now + 10_000));
}

#[test]
fn enabling_again_after_a_give_up_registers_at_once() {
    let mut t = T::fast();
    t.give_up();
    let (request, purpose) = subscribe_of(&t.feed(Event::Enable(registration("tok"))));
    assert_eq!(purpose, Purpose::Enable);
    t.ok(request, true);
    assert_eq!(
        (t.status().mode, t.status().reason),
        (Mode::Fast, ModeReason::Requested)
    );
}

#[test]
fn a_retry_after_a_give_up_that_cannot_reach_the_relay_keeps_retrying() {
    let mut t = T::fast();
    t.give_up();
    let (request, _) = subscribe_of(&t.after(10_000));
    let actions = t.unreachable(request);
    assert_eq!(
        reports(&actions),
        vec![(Mode::Slow, ModeReason::RelayUnreachable)]
    );
    // From here the ordinary retries apply, foreground or not.
    t.feed(Event::AppState(AppState::Background));
    assert_eq!(subscribe_of(&t.after(100)).1, Purpose::Retry);
}

// ---- saving and restoring ------------------------------------------------------------

#[test]
fn a_live_registration_resumes_fast_mode_and_is_checked_at_start() {
    let mut t = T::fast();
    let saved = t.p.take_saved().expect("enabling changed what is saved");
    let mut again = T::restored(SavedFastMode::from_json(&saved.to_json()));
    assert_eq!(again.status().mode, Mode::Fast);
    let (_, purpose) = subscribe_of(&again.feed(Event::Tick));
    assert_eq!(purpose, Purpose::Renew);
}

#[test]
fn an_expired_registration_resumes_slow_mode_still_wanted() {
    let mut t = T::fast();
    let saved = t.p.take_saved().unwrap();
    let mut later = T {
        p: FastModePlanner::new(config(), saved, T0 + LIFETIME),
        now: T0 + LIFETIME,
    };
    let status = later.status();
    assert_eq!(status.mode, Mode::Slow);
    assert!(status.fast_requested && status.expires_ms.is_none());
    let (request, purpose) = subscribe_of(&later.feed(Event::Tick));
    assert_eq!(purpose, Purpose::Retry);
    // One Subscribe answers the start's check too.
    later.ok(request, true);
    assert!(later.feed(Event::Tick).is_empty());
}

#[test]
fn a_give_up_survives_a_restart() {
    let mut t = T::fast();
    t.give_up();
    let saved = t.p.take_saved().unwrap();
    let mut again = T {
        p: FastModePlanner::new(config(), SavedFastMode::from_json(&saved.to_json()), t.now),
        now: t.now,
    };
    let status = again.status();
    assert_eq!(
        (status.mode, status.reason),
        (Mode::Slow, ModeReason::PushesMissing)
    );
    assert!(status.fast_requested);
    assert!(again.feed(Event::Tick).is_empty());
    assert_eq!(subscribe_of(&again.after(10_000)).1, Purpose::Retry);
}

#[test]
fn the_first_version_of_the_blob_still_loads() {
    let expires = T0 + 60_000;
    let old = format!(
        r#"{{"wanted":{{"service":"ApnsSandbox","token":"t","app_id":"a"}},"subscribed":{{"since_ms":1,"renewed_ms":1,"expires_ms":{expires}}},"unsubscribe_pending":false}}"#
    );
    let saved = SavedFastMode::from_json(old.as_bytes());
    assert_eq!(
        saved.wanted.as_ref().map(|w| w.service.as_str()),
        Some("ApnsSandbox")
    );
    let t = T::restored(saved);
    assert_eq!(t.status().mode, Mode::Fast);
    let pending =
        SavedFastMode::from_json(br#"{"wanted":null,"subscribed":null,"unsubscribe_pending":true}"#);
    assert!(pending.unsubscribe_pending);
}

#[test]
fn an_unreadable_blob_falls_back_to_slow_mode_keeping_the_token() {
    let partly = SavedFastMode::from_json(
        br#"{"wanted":{"service":"Fcm","token":"t","app_id":"a"},"subscribed":"something else"}"#,
    );
    assert_eq!(
        partly.wanted,
        Some(Registration {
            service: "Fcm".into(),
            token: "t".into(),
            app_id: "a".into(),
        })
    );
    assert!(partly.subscribed.is_none() && !partly.unsubscribe_pending);
    let mut t = T::restored(partly);
    assert_eq!(t.status().mode, Mode::Slow);
    assert_eq!(subscribe_of(&t.feed(Event::Tick)).1, Purpose::Retry);

    // Nothing readable: whatever may be registered is removed.
    let garbage = SavedFastMode::from_json(b"\x00not json");
    assert!(garbage.wanted.is_none() && garbage.unsubscribe_pending);
    let mut t = T::restored(garbage);
    assert!(matches!(
        t.feed(Event::Tick).as_slice(),
        [Action::Unsubscribe { .. }]
    ));
}

#[test]
fn the_token_stays_out_of_debug_output() {
    let mut t = T::fast();
    let shown = format!(
        "{:?} {:?} {:?}",
        registration("s3cr3t-token"),
        t.p.take_saved(),
        t.p
    );
    assert!(!shown.contains("s3cr3t") && !shown.contains("\"tok\""), "{shown}");
    assert!(format!("{:?}", registration("s3cr3t-token")).contains("<redacted>"));
}
