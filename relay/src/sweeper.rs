//! The background sweep of expired messages (and subscriptions).
//!
//! Expired messages are already invisible to Retrieve (the store filters by time); the
//! sweep only reclaims their space. It removes at most `batch` rows per store call so
//! it never holds a long write, and keeps going while whole batches come back, so a
//! backlog drains at full speed once and then the task sleeps for `interval`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{sync::Notify, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{clock::Clock, store::Store};

/// The most batches one sweep runs back to back before it yields to the interval, so a
/// huge backlog shares the store with live traffic.
const MAX_BATCHES_PER_SWEEP: u32 = 100;

/// Counters and a trigger of a running sweeper.
#[derive(Debug, Clone, Default)]
pub struct SweeperHandle {
    swept: Arc<AtomicU64>,
    sweeps: Arc<AtomicU64>,
    trigger: Arc<Notify>,
}

impl SweeperHandle {
    /// Rows removed since start.
    pub fn swept_total(&self) -> u64 {
        self.swept.load(Ordering::Relaxed)
    }

    /// Sweeps completed since start (successful or not).
    pub fn sweeps_completed(&self) -> u64 {
        self.sweeps.load(Ordering::Relaxed)
    }

    /// Asks for a sweep now instead of at the next interval.
    pub fn sweep_now(&self) {
        self.trigger.notify_one();
    }
}

/// Sweeper settings.
#[derive(Debug, Clone, Copy)]
pub struct SweepSettings {
    /// Pause between sweeps.
    pub interval: Duration,
    /// Rows per store call.
    pub batch: u32,
}

/// Starts the sweeper; it stops when `shutdown` is cancelled (between batches).
pub fn spawn(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    settings: SweepSettings,
    shutdown: CancellationToken,
) -> (SweeperHandle, JoinHandle<()>) {
    let handle = SweeperHandle::default();
    let task = tokio::spawn(run(store, clock, settings, shutdown, handle.clone()));
    (handle, task)
}

async fn run(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    settings: SweepSettings,
    shutdown: CancellationToken,
    handle: SweeperHandle,
) {
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(settings.interval) => {}
            () = handle.trigger.notified() => {}
        }
        sweep_once(&*store, &*clock, settings.batch, &shutdown, &handle).await;
        handle.sweeps.fetch_add(1, Ordering::Relaxed);
    }
}

async fn sweep_once(
    store: &dyn Store,
    clock: &dyn Clock,
    batch: u32,
    shutdown: &CancellationToken,
    handle: &SweeperHandle,
) {
    for _ in 0..MAX_BATCHES_PER_SWEEP {
        if shutdown.is_cancelled() {
            return;
        }
        match store.sweep_expired(clock.now_ms(), batch).await {
            Ok(removed) => {
                handle.swept.fetch_add(removed, Ordering::Relaxed);
                if removed > 0 {
                    tracing::debug!(removed, "swept expired rows");
                }
                if removed < u64::from(batch) {
                    return;
                }
            }
            Err(e) => {
                // Transient (disk full, shutting down): the next interval tries again.
                tracing::warn!(error = %e, "sweep failed");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        clock::ManualClock,
        store::{NewMessage, redb::RedbStore},
    };

    async fn put(store: &dyn Store, i: u8, expires_ms: i64) {
        let msg = NewMessage {
            account: crate::store::Account([1; 32]),
            account_index: crate::store::AccountIndex([2; 32]),
            namespace: 0,
            hash: [i; 32],
            data: vec![i],
            created_ms: 0,
            expires_ms,
        };
        store.put_message(msg).await.unwrap();
    }

    #[tokio::test]
    async fn a_sweep_drains_a_backlog_in_batches_and_stops_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(RedbStore::open(dir.path(), crate::store::linkage::test_keys()).unwrap());
        for i in 0..5 {
            put(&*store, i, 1_000).await;
        }
        put(&*store, 99, 10_000).await;
        let clock = ManualClock::new(5_000);
        let stop = CancellationToken::new();
        let settings = SweepSettings {
            interval: Duration::from_secs(3600),
            batch: 2,
        };
        let (handle, task) = spawn(Arc::clone(&store), Arc::new(clock), settings, stop.clone());
        handle.sweep_now();
        tokio::time::timeout(Duration::from_secs(20), async {
            while handle.sweeps_completed() < 1 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .unwrap();
        assert_eq!(handle.swept_total(), 5, "one sweep drains all batches");
        let left = store
            .get_messages(&crate::store::Account([1; 32]), 0, 0, 10, 0)
            .await
            .unwrap();
        assert_eq!(
            left.messages.iter().map(|m| m.data[0]).collect::<Vec<_>>(),
            vec![99]
        );
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .unwrap()
            .unwrap();
        store.close().await.unwrap();
    }
}
