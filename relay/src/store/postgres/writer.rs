//! Group commit on PostgreSQL: the concurrent writes of one node share one transaction.
//!
//! A transaction costs round trips, per-statement work in the server and a WAL flush at
//! commit whatever it carries, so committing every Store alone spends most of the
//! database's and the relay's time on overhead. Instead, callers queue their write here
//! (a Store with its push jobs and arrival NOTIFY, a Subscribe, a push outcome) and wait.
//! [`WRITERS`] tasks take turns at the queue: one gathers what is queued into a batch (at
//! most [`MAX_BATCH`] writes and about [`MAX_BATCH_BYTES`] of message data) while the
//! others commit theirs, so batches grow with the load by themselves and an idle node
//! commits a lone write at once. A batch runs as one transaction of multi-row statements
//! ([`super::batch`]); every caller is answered only after that transaction committed.
//!
//! Exactness: a batch holds at most one write per key (a message hash in a mailbox, a
//! subscription, a job). A second write of the same key is carried over to the next
//! batch, where it meets the first as committed (or waits for its row lock), exactly as
//! if the two had come one after the other.
//!
//! Failures: a deadlock or serialization failure (another node's transaction took the same
//! rows in another order) runs the batch again. Any other failure of a batch of several
//! writes runs each of them again on its own, in its own transaction ([`super::ops`]),
//! so every caller gets its own answer: a write that cannot be done fails alone, and
//! one whose batch did commit after all (the answer to COMMIT was lost) finds itself
//! stored (a Store then reports the duplicate of its own message).

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::batch::{self, BatchError, Outcomes};
use super::errors::pool_error;
use super::ops::{self, Finish};
use crate::store::{
    Account, AccountIndex, DeviceId, Hash, NewMessage, PutOutcome, StoreError, Subscription,
    linkage::StoreKeys,
};

/// How many batches may be in flight at once: one gathering, the others committing.
pub const WRITERS: usize = 2;
/// The most writes one transaction carries.
pub const MAX_BATCH: usize = 512;
/// Message data one batch gathers at most (a larger message still goes, alone).
pub const MAX_BATCH_BYTES: usize = 4 << 20;
/// How often a batch runs again after a deadlock or serialization failure.
const BATCH_ATTEMPTS: usize = 3;
/// How often a gatherer with a small batch yields once more to let handlers that are
/// about to queue a write do so: cheap, unlike a timer, and enough to catch the callers
/// answered by the last commit.
const GATHER_YIELDS: usize = 2;
/// A batch this large goes without yielding.
const GATHER_ENOUGH: usize = 64;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// One queued write and its caller.
pub enum Request {
    Put(NewMessage, Reply<PutOutcome>),
    Subscribe(Subscription, Reply<bool>),
    Finish(Finish, Reply<()>),
}

impl Request {
    /// What no second write of the same batch may touch.
    fn key(&self) -> Key {
        match self {
            Request::Put(m, _) => Key::Message(m.account, m.namespace, m.hash),
            Request::Subscribe(s, _) => Key::Subscription(s.account_index, s.device_id),
            Request::Finish(f, _) => Key::Job(f.id),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Request::Put(m, _) => m.data.len(),
            Request::Subscribe(s, _) => s.sealed.len(),
            Request::Finish(..) => 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Message(Account, u32, Hash),
    Subscription(AccountIndex, DeviceId),
    Job(i64),
}

/// The writes of one transaction, by kind, in queue order.
#[derive(Default)]
struct Batch {
    puts: Vec<(NewMessage, Reply<PutOutcome>)>,
    subs: Vec<(Subscription, Reply<bool>)>,
    finishes: Vec<(Finish, Reply<()>)>,
    keys: HashSet<Key>,
    bytes: usize,
}

impl Batch {
    fn len(&self) -> usize {
        self.puts.len() + self.subs.len() + self.finishes.len()
    }

    fn full(&self) -> bool {
        self.len() >= MAX_BATCH || self.bytes >= MAX_BATCH_BYTES
    }

    /// Adds `r`, or hands it back when its key is taken or the batch is full.
    #[allow(
        clippy::result_large_err,
        reason = "the request is handed back by value to go into the next batch; boxing it would allocate on every write"
    )]
    fn add(&mut self, r: Request) -> Result<(), Request> {
        if self.full() || (self.len() > 0 && self.bytes + r.bytes() > MAX_BATCH_BYTES) {
            return Err(r);
        }
        if !self.keys.insert(r.key()) {
            return Err(r);
        }
        self.bytes += r.bytes();
        match r {
            Request::Put(m, reply) => self.puts.push((m, reply)),
            Request::Subscribe(s, reply) => self.subs.push((s, reply)),
            Request::Finish(f, reply) => self.finishes.push((f, reply)),
        }
        Ok(())
    }
}

/// The queue and the writes carried over to the next batch, which only the gatherer of
/// the moment touches.
struct Queue {
    rx: mpsc::UnboundedReceiver<Request>,
    carry: VecDeque<Request>,
}

/// Counts of what the writers did (for tests and debug logs).
#[derive(Debug, Default)]
pub struct Stats {
    /// Transactions committed with their batch.
    pub batches: AtomicU64,
    /// Writes those transactions carried.
    pub writes: AtomicU64,
    /// Batches run again after a deadlock or serialization failure.
    pub retried: AtomicU64,
    /// Batches whose writes were run one by one after the batch failed.
    pub split: AtomicU64,
}

struct Shared {
    pool: Pool,
    keys: StoreKeys,
    queue: tokio::sync::Mutex<Queue>,
    stats: Arc<Stats>,
}

/// The group-commit writer of one store.
pub struct Writer {
    tx: Mutex<Option<mpsc::UnboundedSender<Request>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    #[cfg(test)]
    stats: Arc<Stats>,
    #[cfg(test)]
    shared: Arc<Shared>,
}

impl Writer {
    /// Starts the writer tasks on the current runtime.
    pub fn spawn(pool: Pool, keys: StoreKeys) -> Writer {
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(Stats::default());
        let shared = Arc::new(Shared {
            pool,
            keys,
            queue: tokio::sync::Mutex::new(Queue {
                rx,
                carry: VecDeque::new(),
            }),
            stats: Arc::clone(&stats),
        });
        let tasks = (0..WRITERS)
            .map(|_| tokio::spawn(run(Arc::clone(&shared))))
            .collect();
        Writer {
            tx: Mutex::new(Some(tx)),
            tasks: Mutex::new(tasks),
            #[cfg(test)]
            stats,
            #[cfg(test)]
            shared,
        }
    }

    /// What the writers did so far.
    #[cfg(test)]
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Queues a Store and waits for its batch.
    pub async fn put(&self, msg: NewMessage) -> Result<PutOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Request::Put(msg, reply), answer).await
    }

    /// Queues a Subscribe and waits for its batch.
    pub async fn subscribe(&self, sub: Subscription) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Request::Subscribe(sub, reply), answer).await
    }

    /// Queues a push outcome and waits for its batch.
    pub async fn finish(&self, finish: Finish) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Request::Finish(finish, reply), answer).await
    }

    async fn submit<T>(
        &self,
        request: Request,
        answer: oneshot::Receiver<Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        {
            let tx = self.tx.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(tx) = tx.as_ref() else {
                return Err(StoreError::Closed);
            };
            tx.send(request).map_err(|_| StoreError::Closed)?;
        }
        // The writer answers every request it takes; a dropped answer means it ended
        // abnormally (a panic), and the write's fate is unknown.
        answer
            .await
            .map_err(|_| StoreError::unavailable("the PostgreSQL writer stopped before answering"))?
    }

    /// Commits `requests` as one batch, past the queue, so a test knows what shares a
    /// transaction. Each request must have a key of its own.
    #[cfg(test)]
    pub async fn commit_together(&self, requests: Vec<Request>) {
        let mut batch = Batch::default();
        for r in requests {
            assert!(batch.add(r).is_ok(), "a test batch repeats a key or is too large");
        }
        commit(&self.shared, batch).await;
    }

    /// Takes no more writes, commits what is queued and waits for the writers to end.
    pub async fn close(&self) {
        drop(self.tx.lock().unwrap_or_else(PoisonError::into_inner).take());
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        for task in tasks {
            if let Err(e) = task.await {
                tracing::error!("a PostgreSQL writer task ended abnormally: {e}");
            }
        }
    }
}

/// One writer: gather a batch, commit it, answer its callers; until the queue is closed
/// and empty.
async fn run(shared: Arc<Shared>) {
    while let Some(batch) = gather(&shared).await {
        commit(&shared, batch).await;
    }
}

/// Waits for the first write (carried-over ones come first), then takes what else is
/// queued, without waiting for it.
async fn gather(shared: &Shared) -> Option<Batch> {
    let mut queue = shared.queue.lock().await;
    let mut batch = Batch::default();
    let mut again = VecDeque::new();
    while let Some(r) = queue.carry.pop_front() {
        if let Err(r) = batch.add(r) {
            again.push_back(r);
        }
    }
    queue.carry = again;
    if batch.len() == 0 {
        let first = queue.rx.recv().await?;
        if let Err(r) = batch.add(first) {
            // An empty batch takes any write.
            queue.carry.push_back(r);
        }
    }
    let mut yields = 0;
    loop {
        while !batch.full() {
            let Ok(r) = queue.rx.try_recv() else { break };
            if let Err(r) = batch.add(r) {
                queue.carry.push_back(r);
            }
        }
        if batch.full() || batch.len() >= GATHER_ENOUGH || yields == GATHER_YIELDS {
            break;
        }
        yields += 1;
        tokio::task::yield_now().await;
    }
    Some(batch)
}

/// Commits a batch and answers its callers.
async fn commit(shared: &Shared, batch: Batch) {
    let mut attempt = 1;
    let failure = loop {
        match try_commit(shared, &batch).await {
            Ok(outcomes) => {
                shared.stats.batches.fetch_add(1, Ordering::Relaxed);
                shared
                    .stats
                    .writes
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                answer(batch, outcomes);
                return;
            }
            Err(BatchError::Retry(e)) if attempt < BATCH_ATTEMPTS => {
                tracing::debug!(attempt, writes = batch.len(), "PostgreSQL batch runs again: {e}");
                shared.stats.retried.fetch_add(1, Ordering::Relaxed);
                attempt += 1;
            }
            Err(BatchError::Retry(e) | BatchError::Failed(e)) => break e,
        }
    };
    if batch.len() == 1 {
        // Its own failure: nobody else to spare.
        fail_alone(batch, failure);
        return;
    }
    tracing::debug!(
        writes = batch.len(),
        "a PostgreSQL batch failed ({failure}); running its writes one by one"
    );
    shared.stats.split.fetch_add(1, Ordering::Relaxed);
    one_by_one(shared, batch).await;
}

async fn try_commit(shared: &Shared, batch: &Batch) -> Result<Outcomes, BatchError> {
    let client = shared
        .pool
        .get()
        .await
        .map_err(|e| BatchError::Failed(pool_error(e)))?;
    let puts: Vec<&NewMessage> = batch.puts.iter().map(|(m, _)| m).collect();
    let subs: Vec<&Subscription> = batch.subs.iter().map(|(s, _)| s).collect();
    let finishes: Vec<&Finish> = batch.finishes.iter().map(|(f, _)| f).collect();
    batch::run(client, &shared.keys, &puts, &subs, &finishes).await
}

fn answer(batch: Batch, outcomes: Outcomes) {
    // A caller that went away meanwhile finds its write committed when it looks.
    for ((_, reply), outcome) in batch.puts.into_iter().zip(outcomes.puts) {
        let _ = reply.send(Ok(outcome));
    }
    for ((_, reply), inserted) in batch.subs.into_iter().zip(outcomes.subs) {
        let _ = reply.send(Ok(inserted));
    }
    for ((finish, reply), finished) in batch.finishes.into_iter().zip(outcomes.finished) {
        if !finished {
            finish.log_not_held();
        }
        let _ = reply.send(Ok(()));
    }
}

/// Answers the one caller of a batch of one with its error.
fn fail_alone(batch: Batch, e: StoreError) {
    if let Some((_, reply)) = batch.puts.into_iter().next() {
        let _ = reply.send(Err(e));
    } else if let Some((_, reply)) = batch.subs.into_iter().next() {
        let _ = reply.send(Err(e));
    } else if let Some((_, reply)) = batch.finishes.into_iter().next() {
        let _ = reply.send(Err(e));
    }
}

/// Runs every write of a failed batch on its own, at once, each on its own connection.
async fn one_by_one(shared: &Shared, batch: Batch) {
    let (pool, keys) = (&shared.pool, &shared.keys);
    let puts = batch.puts.into_iter().map(|(msg, reply)| async move {
        let r = match pool.get().await {
            Ok(mut client) => ops::put_message(&mut client, keys, &msg).await,
            Err(e) => Err(pool_error(e)),
        };
        let _ = reply.send(r);
    });
    let subs = batch.subs.into_iter().map(|(sub, reply)| async move {
        let r = match pool.get().await {
            Ok(client) => ops::upsert_subscription(&client, &sub).await,
            Err(e) => Err(pool_error(e)),
        };
        let _ = reply.send(r);
    });
    let finishes = batch.finishes.into_iter().map(|(finish, reply)| async move {
        let r = match pool.get().await {
            Ok(client) => ops::finish_job(&client, &finish).await,
            Err(e) => Err(pool_error(e)),
        };
        let _ = reply.send(r);
    });
    tokio::join!(
        futures_util::future::join_all(puts),
        futures_util::future::join_all(subs),
        futures_util::future::join_all(finishes),
    );
}
