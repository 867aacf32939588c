//! The registry of parked long-poll Retrieves, and the wait itself.
//!
//! A Retrieve that finds nothing registers a waiter for its (account, namespace)
//! *before* it looks at the store again, so a Store that commits between the two reads
//! cannot be missed. A Store calls [`Waiters::notify_arrival`] after its commit, which
//! wakes the waiters of that one mailbox and nobody else.
//!
//! Cost: one map entry and one [`Notify`] per mailbox with parked callers (not per
//! caller), spread over shards so concurrent Stores and Retrieves rarely share a lock.
//! Nothing polls; a parked call is a sleeping future.

use std::{
    collections::HashMap,
    future::Future,
    hash::{BuildHasher, RandomState},
    sync::{Arc, Mutex, MutexGuard},
};

use tokio::{sync::Notify, time::Instant};
use tokio_util::sync::CancellationToken;

/// A mailbox: (account, namespace).
pub type MailboxKey = ([u8; 32], u32);

const SHARDS: usize = 64;

struct Entry {
    notify: Arc<Notify>,
    parked: usize,
}

/// Parked long-polls, by mailbox.
pub struct Waiters {
    shards: Box<[Mutex<HashMap<MailboxKey, Entry>>]>,
    hasher: RandomState,
}

impl Default for Waiters {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Waiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiters").field("parked", &self.parked()).finish()
    }
}

/// How a wait ended without anything to return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitEnd {
    /// The deadline passed.
    Deadline,
    /// The relay is shutting down.
    Shutdown,
}

impl Waiters {
    /// An empty registry.
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }

    /// Wakes every call parked on this mailbox. Called after a Store committed (and,
    /// with a shared database, when another node reports one).
    pub fn notify_arrival(&self, account: &[u8; 32], namespace: u32) {
        let notify = self
            .shard(&(*account, namespace))
            .get(&(*account, namespace))
            .map(|e| Arc::clone(&e.notify));
        if let Some(n) = notify {
            n.notify_waiters();
        }
    }

    /// Registers a waiter for a mailbox; it stays registered until dropped.
    pub fn register(self: &Arc<Self>, account: [u8; 32], namespace: u32) -> Waiter {
        let key = (account, namespace);
        let notify = {
            let mut shard = self.shard(&key);
            let entry = shard.entry(key).or_insert_with(|| Entry {
                notify: Arc::new(Notify::new()),
                parked: 0,
            });
            entry.parked += 1;
            Arc::clone(&entry.notify)
        };
        Waiter {
            registry: Arc::clone(self),
            key,
            notify,
        }
    }

    /// Calls `read` until it returns something, waiting between attempts for a Store
    /// into the mailbox. Gives up at `deadline` or on `shutdown`.
    ///
    /// `read` runs once right after registration (the no-lost-wake-up re-check) and once
    /// after every wake; it returns `Ok(None)` for "nothing yet".
    pub async fn wait_for<T, E, F, Fut>(
        self: &Arc<Self>,
        key: MailboxKey,
        deadline: Instant,
        shutdown: &CancellationToken,
        mut read: F,
    ) -> Result<Result<T, WaitEnd>, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<T>, E>>,
    {
        let waiter = self.register(key.0, key.1);
        loop {
            let notified = waiter.notify.notified();
            tokio::pin!(notified);
            // From here on a notify_waiters() reaches us even before the first poll.
            notified.as_mut().enable();
            if let Some(found) = read().await? {
                return Ok(Ok(found));
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(Err(WaitEnd::Shutdown)),
                () = tokio::time::sleep_until(deadline) => return Ok(Err(WaitEnd::Deadline)),
                () = &mut notified => {}
            }
        }
    }

    /// How many calls are parked, over all mailboxes.
    pub fn parked(&self) -> usize {
        self.shards
            .iter()
            .map(|s| lock(s).values().map(|e| e.parked).sum::<usize>())
            .sum()
    }

    /// How many mailboxes have parked calls.
    pub fn mailboxes(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    fn shard(&self, key: &MailboxKey) -> MutexGuard<'_, HashMap<MailboxKey, Entry>> {
        // The modulo keeps the index below SHARDS, so the cast cannot truncate meaningfully.
        let i = (self.hasher.hash_one(key) % SHARDS as u64) as usize;
        lock(&self.shards[i])
    }
}

/// A poisoned shard only means a panic elsewhere while holding it; the map itself is
/// always left consistent (every critical section is a single insert/update/remove).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A registration for one mailbox; dropping it unregisters (and frees the mailbox's
/// entry when it was the last one).
pub struct Waiter {
    registry: Arc<Waiters>,
    key: MailboxKey,
    notify: Arc<Notify>,
}

impl Waiter {
    /// A future that completes on the next arrival; create (and `enable`) it before
    /// re-checking the store.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut shard = self.registry.shard(&self.key);
        if let Some(entry) = shard.get_mut(&self.key) {
            entry.parked -= 1;
            if entry.parked == 0 {
                shard.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        sync::atomic::{AtomicUsize, Ordering},
        time::Duration,
    };

    const A: [u8; 32] = [1u8; 32];
    const B: [u8; 32] = [2u8; 32];

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(30)
    }

    #[tokio::test]
    async fn entries_are_freed_with_the_last_waiter() {
        let w = Arc::new(Waiters::new());
        let one = w.register(A, 1);
        let two = w.register(A, 1);
        let other = w.register(B, 1);
        assert_eq!((w.parked(), w.mailboxes()), (3, 2));
        drop(one);
        assert_eq!((w.parked(), w.mailboxes()), (2, 2));
        drop(two);
        drop(other);
        assert_eq!((w.parked(), w.mailboxes()), (0, 0));
    }

    #[tokio::test]
    async fn a_notify_before_the_first_poll_is_not_lost() {
        let w = Arc::new(Waiters::new());
        let waiter = w.register(A, 3);
        let notified = waiter.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        w.notify_arrival(&A, 3);
        tokio::time::timeout(Duration::from_secs(5), notified)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn wait_for_wakes_only_its_mailbox() {
        let w = Arc::new(Waiters::new());
        let stop = CancellationToken::new();
        let reads = Arc::new(AtomicUsize::new(0));
        let arrived = Arc::new(AtomicUsize::new(0));
        let task = {
            let (w, stop, reads, arrived) = (w.clone(), stop.clone(), reads.clone(), arrived.clone());
            tokio::spawn(async move {
                w.wait_for((A, 0), far(), &stop, || {
                    reads.fetch_add(1, Ordering::SeqCst);
                    let got = arrived.load(Ordering::SeqCst);
                    async move { Ok::<_, ()>((got > 0).then_some(got)) }
                })
                .await
            })
        };
        while w.parked() == 0 {
            tokio::task::yield_now().await;
        }
        // Other mailboxes (other account, other namespace) do not wake it.
        w.notify_arrival(&B, 0);
        w.notify_arrival(&A, 1);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        arrived.store(7, Ordering::SeqCst);
        w.notify_arrival(&A, 0);
        let got = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, Ok(Ok(7)));
        assert_eq!(w.parked(), 0);
    }

    #[tokio::test]
    async fn deadline_and_shutdown_end_a_wait() {
        let w = Arc::new(Waiters::new());
        let stop = CancellationToken::new();
        let nothing = || async { Ok::<Option<()>, ()>(None) };
        let soon = Instant::now() + Duration::from_millis(20);
        assert_eq!(
            w.wait_for((A, 0), soon, &stop, nothing).await,
            Ok(Err(WaitEnd::Deadline))
        );
        stop.cancel();
        assert_eq!(
            w.wait_for((A, 0), far(), &stop, nothing).await,
            Ok(Err(WaitEnd::Shutdown))
        );
        assert_eq!(w.mailboxes(), 0);
    }

    #[tokio::test]
    async fn ten_thousand_waiters_wake_by_mailbox() {
        let w = Arc::new(Waiters::new());
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        for i in 0..10_000u32 {
            let (w, stop) = (w.clone(), stop.clone());
            let mut account = [0u8; 32];
            account[..4].copy_from_slice(&i.to_be_bytes());
            tasks.push(tokio::spawn(async move {
                let mut first = true;
                w.wait_for((account, 0), far(), &stop, move || {
                    let again = !std::mem::replace(&mut first, false);
                    async move { Ok::<_, ()>(again.then_some(i)) }
                })
                .await
            }));
        }
        tokio::time::timeout(Duration::from_secs(20), async {
            while w.parked() < 10_000 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        assert_eq!(w.mailboxes(), 10_000);
        for i in 0..10_000u32 {
            let mut account = [0u8; 32];
            account[..4].copy_from_slice(&i.to_be_bytes());
            w.notify_arrival(&account, 0);
        }
        for (i, t) in tasks.into_iter().enumerate() {
            let got = tokio::time::timeout(Duration::from_secs(20), t)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(got, Ok(Ok(i as u32)));
        }
        assert_eq!(w.mailboxes(), 0);
    }
}
