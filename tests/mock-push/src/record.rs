//! What a mock received and the faults it was told to inject, shared by both mocks.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

/// `wait_for` gave up before enough deliveries arrived.
#[derive(Debug, Clone, thiserror::Error)]
#[error("waited for {wanted} deliveries, got {got}")]
pub struct WaitTimeout {
    /// How many were awaited.
    pub wanted: usize,
    /// How many had arrived when the wait ended.
    pub got: usize,
}

/// Anything the recorder keeps: it must say whether it was delivered (answered 200).
pub(crate) trait Attempt: Clone {
    fn delivered(&self) -> bool;
}

/// Every request seen, in arrival order, with a watch on the number delivered.
pub(crate) struct Recorder<T> {
    attempts: Mutex<Vec<T>>,
    delivered: watch::Sender<usize>,
}

impl<T: Attempt> Recorder<T> {
    pub fn new() -> Self {
        Recorder {
            attempts: Mutex::new(Vec::new()),
            delivered: watch::Sender::new(0),
        }
    }

    pub fn record(&self, attempt: T) {
        let delivered = attempt.delivered();
        lock(&self.attempts).push(attempt);
        if delivered {
            self.delivered.send_modify(|n| *n += 1);
        }
    }

    pub fn attempts(&self) -> Vec<T> {
        lock(&self.attempts).clone()
    }

    pub fn delivered(&self) -> Vec<T> {
        lock(&self.attempts)
            .iter()
            .filter(|a| a.delivered())
            .cloned()
            .collect()
    }

    pub fn clear(&self) {
        lock(&self.attempts).clear();
        self.delivered.send_replace(0);
    }

    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Result<Vec<T>, WaitTimeout> {
        let mut rx = self.delivered.subscribe();
        let reached = tokio::time::timeout(timeout, rx.wait_for(|count| *count >= n)).await;
        match reached {
            Ok(Ok(_)) => Ok(self.delivered()),
            _ => Err(WaitTimeout {
                wanted: n,
                got: *self.delivered.borrow(),
            }),
        }
    }
}

/// Injected failures: a queue of one-shot failures, a standing outage, and a delay.
pub(crate) struct Faults<F> {
    next: Mutex<VecDeque<F>>,
    outage: Mutex<Option<F>>,
    delay: Mutex<Option<Duration>>,
}

impl<F: Clone> Faults<F> {
    pub fn new() -> Self {
        Faults {
            next: Mutex::new(VecDeque::new()),
            outage: Mutex::new(None),
            delay: Mutex::new(None),
        }
    }

    pub fn fail_next(&self, n: usize, failure: F) {
        lock(&self.next).extend(std::iter::repeat_n(failure, n));
    }

    pub fn set_outage(&self, failure: Option<F>) {
        *lock(&self.outage) = failure;
    }

    pub fn set_delay(&self, delay: Option<Duration>) {
        *lock(&self.delay) = delay;
    }

    pub fn delay(&self) -> Option<Duration> {
        *lock(&self.delay)
    }

    /// The failure this request must get, if any: queued ones first, then the outage.
    pub fn take(&self) -> Option<F> {
        lock(&self.next)
            .pop_front()
            .or_else(|| lock(&self.outage).clone())
    }
}

/// Locks a mutex, ignoring poisoning: a panicking test thread must not hide what was recorded.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A random RFC 4122 version-4 UUID, like the `apns-id` Apple assigns.
pub(crate) fn uuid_v4() -> String {
    let mut b = [0u8; 16];
    fill_random(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode_upper(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Fills `buf` from the OS generator.
pub(crate) fn fill_random(buf: &mut [u8]) {
    // The OS generator failing is not something a test mock can recover from.
    getrandom::fill(buf).expect("OS random generator unavailable");
}
