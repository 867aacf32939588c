//! Closed-loop load: N clients, each issuing its next call as soon as the previous one is
//! answered, until a count or a duration is reached.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use super::stats::{CpuMeter, CpuUse, Latencies};

/// No single call may hang the run.
pub const CALL_LIMIT: Duration = Duration::from_secs(30);

/// When a phase stops: after `count` calls were issued or after `duration`, whichever
/// comes first.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    /// Most calls in all.
    pub count: Option<u64>,
    /// Longest time calls are issued.
    pub duration: Duration,
}

/// What a phase achieved.
#[derive(Debug)]
pub struct Outcome {
    /// Calls answered with success.
    pub ok: u64,
    /// Calls that failed or timed out.
    pub errors: u64,
    /// The first failure, to say why.
    pub first_error: Option<String>,
    /// Sum of what successful calls counted (e.g. messages retrieved).
    pub items: u64,
    /// From the first call to the last answer.
    pub elapsed: Duration,
    /// Latency of every successful call.
    pub latencies: Latencies,
    /// How busy the relay and the bench were.
    pub cpu: CpuUse,
}

impl Outcome {
    /// Successful calls per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// `items` per second.
    pub fn item_rate(&self) -> f64 {
        self.items as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs `op(n, client)` from `clients` concurrent clients, `n` counting calls from 0.
/// `op` answers how many items the call handled, or why it failed.
pub async fn closed_loop<F, Fut>(clients: usize, limit: Limit, relay_pid: Option<u32>, op: F) -> Outcome
where
    F: Fn(u64, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<u64, String>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicU64::new(0));
    let meter = CpuMeter::start(relay_pid);
    let started = Instant::now();
    let deadline = started + limit.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..clients.max(1) {
        let (op, next) = (Arc::clone(&op), Arc::clone(&next));
        tasks.spawn(async move {
            let mut mine = ClientTally::default();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if limit.count.is_some_and(|c| n >= c) || Instant::now() >= deadline {
                    return mine;
                }
                let t = Instant::now();
                match tokio::time::timeout(CALL_LIMIT, op(n, client)).await {
                    Ok(Ok(items)) => {
                        mine.latencies.push(t.elapsed());
                        mine.ok += 1;
                        mine.items += items;
                    }
                    Ok(Err(e)) => mine.fail(e),
                    Err(_) => mine.fail(format!("no answer within {CALL_LIMIT:?}")),
                }
            }
        });
    }
    let mut total = ClientTally::default();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(t) => total.merge(t),
            Err(e) => total.fail(format!("client task failed: {e}")),
        }
    }
    Outcome {
        ok: total.ok,
        errors: total.errors,
        first_error: total.first_error,
        items: total.items,
        elapsed: started.elapsed(),
        latencies: total.latencies,
        cpu: meter.stop(),
    }
}

#[derive(Default)]
struct ClientTally {
    ok: u64,
    errors: u64,
    items: u64,
    first_error: Option<String>,
    latencies: Latencies,
}

impl ClientTally {
    fn fail(&mut self, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }

    fn merge(&mut self, other: ClientTally) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.items += other.items;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latencies.extend(other.latencies);
    }
}

/// A small fast generator for sampling (not for keys: those come from the OS).
pub struct Sampler(u64);

impl Sampler {
    /// Seeded from the OS generator.
    pub fn new() -> Self {
        Self(u64::from_le_bytes(tidings_proto::random_bytes::<8>()) | 1)
    }

    /// The next value (xorshift64*).
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// `k` distinct indices out of `0..n`, in random order.
    pub fn sample(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..n).collect();
        let k = k.min(n);
        for i in 0..k {
            let j = i + (self.next() % (n - i) as u64) as usize;
            all.swap(i, j);
        }
        all.truncate(k);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stops_at_the_count_and_tallies() {
        let limit = Limit {
            count: Some(100),
            duration: Duration::from_secs(30),
        };
        let out = closed_loop(8, limit, None, |n, _| async move {
            if n % 10 == 0 {
                Err("boom".to_owned())
            } else {
                Ok(2)
            }
        })
        .await;
        assert_eq!(out.ok + out.errors, 100);
        assert_eq!(out.errors, 10);
        assert_eq!(out.items, 180);
        assert_eq!(out.first_error.as_deref(), Some("boom"));
        assert_eq!(out.latencies.len(), 90);
    }

    #[test]
    fn samples_are_distinct() {
        let mut s = Sampler::new();
        let mut got = s.sample(1000, 200);
        got.sort_unstable();
        got.dedup();
        assert_eq!(got.len(), 200);
        assert!(got.iter().all(|&i| i < 1000));
        assert_eq!(s.sample(5, 10).len(), 5);
    }
}
