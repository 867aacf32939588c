//! Per-(app, provider) circuit breakers, so one failing provider or app never slows the
//! others.
//!
//! - **Closed** (normal): calls go out, at most `max_in_flight` at once per (app,
//!   provider), so a provider that hangs can hold only that share of the notifier's
//!   delivery slots. Over the share, a job is deferred (retried later) without a call.
//! - **Open**: after `failures` consecutive transient failures (timeouts, 5xx, 429,
//!   connection errors), every job for that (app, provider) is deferred until the
//!   cool-down ends, without calling out.
//! - **Half-open**: after the cool-down one probe goes out; an answer closes the breaker,
//!   another transient failure opens it for another cool-down.
//!
//! Any answer that is not transient (delivered, token dead, refused, a configuration
//! error) proves the provider reachable and resets the count.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use tracing::{info, warn};

use crate::{config::Push, push::Outcome, registration::Service};

/// Tuning of the breakers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive transient failures that open a breaker.
    pub failures: u32,
    /// How long an open breaker defers calls before one probe.
    pub cooldown: Duration,
    /// Most calls in flight per (app, provider).
    pub max_in_flight: u32,
    /// Outer bound on one provider call, on top of the HTTP client's own timeouts (a
    /// token refresh and the push itself may each take up to the timeout).
    pub call_limit: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self::from_push(&Push::default())
    }
}

impl BreakerSettings {
    /// The breaker settings of `[push]`.
    pub fn from_push(push: &Push) -> Self {
        let max_in_flight = match push.max_in_flight_per_provider {
            0 => (push.concurrency / 2).max(1),
            n => n,
        };
        let timeout = Duration::from_millis(push.timeout_ms);
        Self {
            failures: push.breaker_failures.max(1),
            cooldown: Duration::from_millis(push.breaker_cooldown_ms),
            max_in_flight,
            call_limit: timeout.saturating_mul(2) + Duration::from_secs(1),
        }
    }
}

/// What [`Breakers::admit`] decided.
#[derive(Debug)]
pub enum Admission {
    /// Call the provider, then [`Ticket::finish`] with the outcome.
    Go(Ticket),
    /// Do not call; retry the job later (no sooner than `after`, when given).
    Defer {
        /// The earliest sensible retry.
        after: Option<Duration>,
        /// Why, for the log.
        reason: String,
    },
}

#[derive(Debug, Default)]
struct State {
    failures: u32,
    open_until: Option<Instant>,
    probing: bool,
    in_flight: u32,
}

type Key = (String, Service);

/// Every (app, provider)'s breaker.
#[derive(Debug, Default)]
pub struct Breakers {
    settings: Mutex<BreakerSettings>,
    states: Arc<Mutex<HashMap<Key, State>>>,
}

/// A poisoned lock only means a panic elsewhere while holding it; every critical
/// section leaves the state consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Breakers {
    /// Replaces the settings (the server sets them from `[push]` at start).
    pub fn configure(&self, settings: BreakerSettings) {
        *lock(&self.settings) = settings;
    }

    /// The settings in force.
    pub fn settings(&self) -> BreakerSettings {
        *lock(&self.settings)
    }

    /// Whether a push for `app`'s `service` may go out now.
    pub fn admit(&self, app: &str, service: Service) -> Admission {
        let settings = self.settings();
        let key = (app.to_owned(), service);
        let now = Instant::now();
        let mut states = lock(&self.states);
        let st = states.entry(key.clone()).or_default();
        let mut probe = false;
        if let Some(until) = st.open_until {
            if now < until {
                return Admission::Defer {
                    after: Some(until - now),
                    reason: format!("{} circuit open for app {app}", service.label()),
                };
            }
            if st.probing {
                return Admission::Defer {
                    after: Some(settings.cooldown),
                    reason: format!(
                        "{} circuit half-open for app {app}: a probe is out",
                        service.label()
                    ),
                };
            }
            st.probing = true;
            probe = true;
        } else if st.in_flight >= settings.max_in_flight {
            return Admission::Defer {
                after: None,
                reason: format!(
                    "{} for app {app} already has {} pushes in flight",
                    service.label(),
                    st.in_flight
                ),
            };
        }
        st.in_flight += 1;
        Admission::Go(Ticket {
            states: Arc::clone(&self.states),
            key,
            probe,
            settings,
        })
    }

    /// Whether `app`'s `service` breaker is open (or half-open) now.
    #[cfg(test)]
    pub fn is_open(&self, app: &str, service: Service) -> bool {
        lock(&self.states)
            .get(&(app.to_owned(), service))
            .is_some_and(|s| s.open_until.is_some())
    }
}

/// One admitted call; dropping it without [`Ticket::finish`] (a cancelled task) only
/// frees its slot.
#[derive(Debug)]
pub struct Ticket {
    states: Arc<Mutex<HashMap<Key, State>>>,
    key: Key,
    probe: bool,
    settings: BreakerSettings,
}

impl Ticket {
    /// Records how the call ended.
    pub fn finish(self, outcome: &Outcome) {
        let mut states = lock(&self.states);
        let st = states.entry(self.key.clone()).or_default();
        let (app, service) = (&self.key.0, self.key.1.label());
        if matches!(outcome, Outcome::Retry { .. }) {
            st.failures = st.failures.saturating_add(1);
            if self.probe || (st.open_until.is_none() && st.failures >= self.settings.failures) {
                if st.open_until.is_none() {
                    warn!(
                        app = %app,
                        service,
                        failures = st.failures,
                        "{service} failing for app {app}: circuit open, its pushes wait {:?} between probes",
                        self.settings.cooldown
                    );
                }
                st.open_until = Some(Instant::now() + self.settings.cooldown);
            }
        } else {
            if st.open_until.is_some() {
                info!(app = %app, service, "{service} answers again for app {app}: circuit closed");
            }
            st.failures = 0;
            st.open_until = None;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut states = lock(&self.states);
        if let Some(st) = states.get_mut(&self.key) {
            st.in_flight = st.in_flight.saturating_sub(1);
            if self.probe {
                st.probing = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breakers(max_in_flight: u32) -> Breakers {
        let b = Breakers::default();
        b.configure(BreakerSettings {
            failures: 2,
            cooldown: Duration::from_millis(30),
            max_in_flight,
            call_limit: Duration::from_secs(1),
        });
        b
    }

    fn retry() -> Outcome {
        Outcome::Retry {
            after: None,
            reason: "503".into(),
        }
    }

    fn go(b: &Breakers, app: &str, s: Service) -> Ticket {
        match b.admit(app, s) {
            Admission::Go(t) => t,
            Admission::Defer { reason, .. } => panic!("deferred: {reason}"),
        }
    }

    #[test]
    fn opens_after_consecutive_failures_then_probes_and_closes() {
        let b = breakers(10);
        go(&b, "a", Service::Apns).finish(&retry());
        go(&b, "a", Service::Apns).finish(&Outcome::Delivered);
        go(&b, "a", Service::Apns).finish(&retry());
        assert!(
            !b.is_open("a", Service::Apns),
            "an answer in between resets the count"
        );
        go(&b, "a", Service::Apns).finish(&retry());
        assert!(b.is_open("a", Service::Apns));
        assert!(matches!(
            b.admit("a", Service::Apns),
            Admission::Defer { after: Some(_), .. }
        ));
        // Other apps and other providers of the same app are not affected.
        go(&b, "b", Service::Apns).finish(&Outcome::Delivered);
        go(&b, "a", Service::Fcm).finish(&Outcome::Delivered);
        go(&b, "a", Service::ApnsSandbox).finish(&Outcome::Delivered);

        std::thread::sleep(Duration::from_millis(40));
        let probe = go(&b, "a", Service::Apns);
        assert!(
            matches!(b.admit("a", Service::Apns), Admission::Defer { .. }),
            "one probe at a time"
        );
        probe.finish(&retry());
        assert!(
            matches!(b.admit("a", Service::Apns), Admission::Defer { .. }),
            "open again"
        );
        std::thread::sleep(Duration::from_millis(40));
        go(&b, "a", Service::Apns).finish(&Outcome::TokenDead {
            reason: "gone".into(),
        });
        assert!(!b.is_open("a", Service::Apns));
        go(&b, "a", Service::Apns).finish(&Outcome::Delivered);
    }

    #[test]
    fn in_flight_calls_are_capped_per_app_and_provider() {
        let b = breakers(2);
        let one = go(&b, "a", Service::Fcm);
        let _two = go(&b, "a", Service::Fcm);
        assert!(matches!(
            b.admit("a", Service::Fcm),
            Admission::Defer { after: None, .. }
        ));
        let _other = go(&b, "a", Service::Apns);
        drop(one);
        let _three = go(&b, "a", Service::Fcm);
    }

    #[test]
    fn zero_in_flight_means_half_the_concurrency() {
        let push = Push {
            concurrency: 9,
            ..Push::default()
        };
        assert_eq!(BreakerSettings::from_push(&push).max_in_flight, 4);
        let one = Push {
            concurrency: 1,
            ..Push::default()
        };
        assert_eq!(BreakerSettings::from_push(&one).max_in_flight, 1);
    }
}
