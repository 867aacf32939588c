//! Group commit behind a write-ahead log: one thread applies every queued write in one
//! transaction, and one small sequential log append + `fdatasync` makes the batch durable.
//!
//! An fsync costs milliseconds whatever it carries, so committing each Store alone caps
//! the relay at a few hundred Stores per second. The writer drains the queue and applies
//! all requests in one transaction. A redb commit with `Durability::Immediate` writes
//! every copy-on-write B-tree page the batch touched (about 1 MB for 64 Stores) and
//! fsyncs it, which alone caps the relay near 5 000 Stores/s. So the durable point of a
//! batch is its record in the log instead:
//!
//! 1. encode the batch's operations and, on a helper thread, append `(N, operations)` to
//!    the log and `fdatasync` it, while this thread applies them in one write
//!    transaction (invisible until commit): the disk and the CPU work at the same time;
//! 2. an operation that fails on its own is dropped and the rest applied again, as before;
//!    it stays in the record and fails the same way on replay, where it is skipped;
//! 3. stamp the transaction with the batch number (`meta.last_batch = N`) and wait for the
//!    record: if the append or sync failed, abort the transaction: the whole batch fails
//!    `Unavailable` and nothing is applied;
//! 4. commit with `Durability::None` (visible to readers, not yet on disk in redb);
//! 5. answer the callers: `Ok` means "in the log on disk".
//!
//! A record whose batch did not commit (a redb error, or every operation failed) is cut
//! off the log again, so batch numbers in the log stay consecutive; if even that fails, the
//! database is reopened, which replays the record (the callers' error then means "unknown
//! outcome", as a lost answer would).
//!
//! Every [`CHECKPOINT_INTERVAL`] or [`CHECKPOINT_BATCHES`] batches, when idle, and on
//! close, the writer commits an empty transaction with `Durability::Immediate`, which
//! makes every earlier non-durable commit durable, then empties the log: redb's durable
//! `last_batch` now covers every record. Opening the store (and reopening it after an I/O
//! error, which discards redb's non-durable commits) reads the durable `last_batch = K`,
//! replays the log records `K+1, K+2, …` in order, each in its own transaction, stops at
//! the first torn, checksum-bad or out-of-sequence record (a torn tail is a batch that
//! was never acknowledged; damage before the tail is reported as an error), checkpoints
//! and empties the log. Replay is exact because every operation takes its inputs
//! (clocks, node names, limits) from its arguments and numbers things from counters in
//! the database ([`super::write_op`]).
//!
//! A store opened with a custom opener (tests that inject I/O faults into redb) has no
//! log and commits every batch with `Durability::Immediate`, as before the log existed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use ::redb::{Database, Durability, ReadableDatabase};
use tokio::sync::oneshot;

use super::errors::{db_error, io_cause, reopen_needed};
use super::tables::{self, META_LAST_BATCH, OpError, Tables};
use super::wal::{Stop, Wal};
use super::write_op::{self, Reply, WriteOp};
use crate::store::{StoreError, linkage::StoreKeys};

/// The most requests one transaction carries. Bounds the transaction's memory and the
/// latency of the first caller of a batch.
const MAX_BATCH: usize = 1024;

/// While writes keep arriving less than this apart, the writer waits for more before it
/// commits: callers answered by the last commit send their next writes at nearly the same
/// time, and one commit for all of them is far cheaper than two.
const LINGER_GAP: Duration = Duration::from_micros(100);
/// The longest a batch waits for more writes.
const LINGER_MAX: Duration = Duration::from_millis(1);

/// How long a failed reopen is not tried again: opening a file that needs repair reads all
/// of it, which must not happen for every write while the disk is still full.
const REOPEN_BACKOFF: Duration = Duration::from_secs(1);

/// The longest redb holds batches only in memory (and the log) before a checkpoint.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// The most batches between checkpoints: bounds the log and the replay after a crash.
pub const CHECKPOINT_BATCHES: u64 = 1000;

/// Opens the database file and checks its schema.
pub type Opener = Box<dyn Fn() -> Result<Database, StoreError> + Send + Sync>;

/// When the writer checkpoints.
#[derive(Debug, Clone, Copy)]
pub struct Checkpoints {
    pub every: Duration,
    pub batches: u64,
}

impl Default for Checkpoints {
    fn default() -> Self {
        Checkpoints {
            every: CHECKPOINT_INTERVAL,
            batches: CHECKPOINT_BATCHES,
        }
    }
}

/// What the last replay of the log did (kept for operators' logs and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// Batches found in the log after redb's durable state and applied again.
    pub applied: u64,
    /// Why replay stopped.
    pub stop: Stop,
}

/// State shared by the store handle, read tasks and the writer thread.
pub struct Shared {
    /// `None` while closed, or after an I/O error until the writer reopened the file.
    pub db: RwLock<Option<Database>>,
    /// Opens the file again; redb refuses all work after an I/O error until then.
    opener: Opener,
    /// Set when an I/O error latched the database.
    pub needs_reopen: AtomicBool,
    /// Set by `close`: reads fail with `Closed`.
    pub closed: AtomicBool,
    /// When and why the last reopen failed.
    reopen_failure: Mutex<Option<(Instant, String)>>,
    /// What the last replay of the log did.
    pub last_replay: Mutex<Option<Replay>>,
    /// Seal job references, key pushed markers (see `store::linkage`).
    pub keys: Arc<StoreKeys>,
}

impl Shared {
    /// Wraps a database opened (and recovered) by `opener`.
    pub fn new(db: Database, opener: Opener, keys: Arc<StoreKeys>) -> Self {
        Shared {
            db: RwLock::new(Some(db)),
            opener,
            needs_reopen: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            reopen_failure: Mutex::new(None),
            last_replay: Mutex::new(None),
            keys,
        }
    }

    /// Reopens the file if an I/O error latched the database (redb then refuses all work
    /// until the file is opened again, which also repairs it), and runs `recover` on it
    /// before readers see it.
    fn ensure_open(
        &self,
        recover: &mut dyn FnMut(&Database) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let open = self.db.read().unwrap_or_else(PoisonError::into_inner).is_some();
        if open && !self.needs_reopen.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut failure = self.reopen_failure.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((at, why)) = failure.as_ref()
            && at.elapsed() < REOPEN_BACKOFF
        {
            return Err(StoreError::unavailable(why.clone()));
        }
        let mut slot = self.db.write().unwrap_or_else(PoisonError::into_inner);
        // The old handle must be gone first: the file admits one handle at a time.
        *slot = None;
        match (self.opener)().and_then(|db| recover(&db).map(|()| db)) {
            Ok(db) => {
                *slot = Some(db);
                *failure = None;
                self.needs_reopen.store(false, Ordering::Release);
                tracing::info!("storage reopened after an I/O error");
                Ok(())
            }
            Err(e) => {
                let why = format!("reopening the database failed: {e}");
                *failure = Some((Instant::now(), why.clone()));
                Err(StoreError::unavailable(why))
            }
        }
    }

    /// Drops the database handle, which flushes and releases the file.
    pub fn shut(&self) {
        self.closed.store(true, Ordering::Release);
        *self.db.write().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// One queued write: an operation to run in the batch's transaction and its caller.
pub trait PendingWrite: Send {
    /// Runs the operation; it may run again if another operation of the batch fails.
    fn apply(&mut self, t: &mut Tables<'_>) -> Result<(), OpError>;
    /// The operation as the log records it; `None` for test-only writes that are not logged.
    fn logged(&self) -> Option<&WriteOp>;
    /// Answers the caller after the commit.
    fn succeed(self: Box<Self>);
    /// Answers the caller with an error; nothing of this operation was committed.
    fn fail(self: Box<Self>, err: StoreError);
}

/// A logged write and its caller.
pub struct Pending<R> {
    op: WriteOp,
    result: Option<Reply>,
    extract: fn(Reply) -> Option<R>,
    reply: Option<oneshot::Sender<Result<R, StoreError>>>,
}

impl<R> Pending<R> {
    /// Wraps an operation, how to pick its caller's answer out of its reply, and the
    /// channel its caller waits on (`None` for a replayed write nobody waits for).
    pub fn new(
        op: WriteOp,
        extract: fn(Reply) -> Option<R>,
        reply: Option<oneshot::Sender<Result<R, StoreError>>>,
    ) -> Self {
        Pending {
            op,
            result: None,
            extract,
            reply,
        }
    }
}

impl<R: Send> PendingWrite for Pending<R> {
    fn apply(&mut self, t: &mut Tables<'_>) -> Result<(), OpError> {
        self.result = Some(self.op.apply(t)?);
        Ok(())
    }

    fn logged(&self) -> Option<&WriteOp> {
        Some(&self.op)
    }

    fn succeed(self: Box<Self>) {
        let answer = self
            .result
            .and_then(self.extract)
            .ok_or_else(|| StoreError::unavailable("internal: write committed without a result"));
        // A caller that gave up waiting needs no answer.
        if let Some(reply) = self.reply {
            let _ = reply.send(answer);
        }
    }

    fn fail(self: Box<Self>, err: StoreError) {
        match self.reply {
            Some(reply) => {
                let _ = reply.send(Err(err));
            }
            None => tracing::debug!(error = %err, "a replayed write failed, as it did when it was made"),
        }
    }
}

/// A write given as a closure (tests); it is not logged.
#[cfg(test)]
pub struct Unlogged<R, F> {
    pub op: F,
    pub result: Option<R>,
    pub reply: oneshot::Sender<Result<R, StoreError>>,
}

#[cfg(test)]
impl<R, F> PendingWrite for Unlogged<R, F>
where
    R: Send,
    F: FnMut(&mut Tables<'_>) -> Result<R, OpError> + Send,
{
    fn apply(&mut self, t: &mut Tables<'_>) -> Result<(), OpError> {
        self.result = Some((self.op)(t)?);
        Ok(())
    }

    fn logged(&self) -> Option<&WriteOp> {
        None
    }

    fn succeed(self: Box<Self>) {
        let answer = self
            .result
            .ok_or_else(|| StoreError::unavailable("internal: write committed without a result"));
        let _ = self.reply.send(answer);
    }

    fn fail(self: Box<Self>, err: StoreError) {
        let _ = self.reply.send(Err(err));
    }
}

/// The log and where the writer is in it.
pub struct Log {
    wal: Wal,
    /// The number the next batch gets.
    next_batch: u64,
    /// Batches committed without durability since the last checkpoint.
    pending: u64,
    last_checkpoint: Instant,
    policy: Checkpoints,
    /// Each record's payload is sealed: a Store's names both an account and its index.
    keys: Arc<StoreKeys>,
}

impl Log {
    /// Wraps an opened log; [`recover`] it before use.
    pub fn new(wal: Wal, policy: Checkpoints, keys: Arc<StoreKeys>) -> Self {
        Log {
            wal,
            next_batch: 1,
            pending: 0,
            last_checkpoint: Instant::now(),
            policy,
            keys,
        }
    }

    fn due_in(&self) -> Option<Duration> {
        (self.pending > 0).then(|| self.policy.every.saturating_sub(self.last_checkpoint.elapsed()))
    }

    fn due(&self) -> bool {
        self.pending >= self.policy.batches || self.due_in().is_some_and(|d| d.is_zero())
    }

    /// The next batch's record: its writes encoded and sealed under the batch's number.
    fn record(&self, batch: &[Box<dyn PendingWrite>]) -> Record {
        let mut plain = Vec::new();
        let ops: Vec<&WriteOp> = batch.iter().filter_map(|w| w.logged()).collect();
        write_op::encode(ops.into_iter(), &mut plain);
        Record {
            number: self.next_batch,
            start: self.wal.end(),
            payload: self.keys.seal_wal(self.next_batch, &plain),
        }
    }
}

/// One batch's record in the log.
struct Record {
    /// The batch's number (stamped into the database as `last_batch` in the same commit).
    number: u64,
    /// Where the record starts, to cut it off if the batch does not commit.
    start: u64,
    /// The sealed, encoded writes.
    payload: Vec<u8>,
}

/// The writer thread's state.
pub struct Writer<'s> {
    pub shared: &'s Shared,
    /// `None`: no log, every batch commits durably.
    pub log: Option<Log>,
}

/// Reads the durable `last_batch`, replays the log after it, checkpoints and empties the log.
pub fn recover(db: &Database, log: &mut Log) -> Result<Replay, StoreError> {
    let durable = {
        let txn = db.begin_read().map_err(|e| db_error(e.into()))?;
        let meta = txn.open_table(tables::META).map_err(|e| db_error(e.into()))?;
        let last = meta.get(META_LAST_BATCH).map_err(|e| db_error(e.into()))?;
        last.map_or(0, |g| g.value())
    };
    let (records, mut stop) = log.wal.read_all()?;
    let mut next = durable + 1;
    let mut applied = 0;
    for record in records {
        if record.batch < next {
            continue;
        }
        if record.batch != next {
            tracing::error!(
                expected = next,
                found = record.batch,
                "write-ahead log skips batches"
            );
            stop = Stop::Corrupt { offset: u64::MAX };
            break;
        }
        let ops = match log
            .keys
            .open_wal(record.batch, &record.payload)
            .and_then(|plain| write_op::decode(&plain))
        {
            Ok(ops) => ops,
            Err(e) => {
                tracing::error!(error = %e, batch = next, "undecodable write-ahead log record");
                stop = Stop::Corrupt { offset: u64::MAX };
                break;
            }
        };
        let mut batch: Vec<Box<dyn PendingWrite>> = ops
            .into_iter()
            .map(|op| Box::new(Pending::<()>::new(op, |_| Some(()), None)) as Box<dyn PendingWrite>)
            .collect();
        commit_replayed(db, &log.keys, &mut batch, next)?;
        next += 1;
        applied += 1;
    }
    match &stop {
        Stop::End => {}
        Stop::TornTail { offset } => {
            tracing::info!(
                offset,
                "ignored an unacknowledged batch torn by a crash at the end of the log"
            );
        }
        Stop::Corrupt { offset } => tracing::error!(
            offset,
            "the write-ahead log is damaged; batches after the damage are lost"
        ),
    }
    if applied > 0 {
        tracing::info!(batches = applied, "replayed the write-ahead log");
    }
    checkpoint_db(db).map_err(db_error)?;
    log.wal.reset().map_err(|e| {
        StoreError::unavailable(format!("cannot empty the write-ahead log: {}", io_cause(&e))).because(e)
    })?;
    log.next_batch = next;
    log.pending = 0;
    log.last_checkpoint = Instant::now();
    Ok(Replay { applied, stop })
}

/// Applies one replayed batch; operations that fail are dropped as they were live.
fn commit_replayed(
    db: &Database,
    keys: &StoreKeys,
    batch: &mut Vec<Box<dyn PendingWrite>>,
    number: u64,
) -> Result<(), StoreError> {
    loop {
        match attempt(db, keys, batch, Some(number), &mut |_| Ok(())) {
            Attempt::Committed => return Ok(()),
            Attempt::OpFailed(i, e) => batch.remove(i).fail(e),
            Attempt::Failed(e) => return Err(db_error(e)),
            Attempt::LogFailed(e) => return Err(e),
        }
    }
}

/// Makes every earlier non-durable commit durable.
fn checkpoint_db(db: &Database) -> Result<(), ::redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    txn.commit()?;
    Ok(())
}

impl Writer<'_> {
    /// The writer thread's loop; returns when every sender is gone and the queue is empty,
    /// after a last checkpoint.
    pub fn run(mut self, rx: Receiver<Box<dyn PendingWrite>>) {
        loop {
            let wait = self.log.as_ref().and_then(Log::due_in);
            let first = match wait {
                Some(wait) => match rx.recv_timeout(wait) {
                    Ok(w) => w,
                    Err(RecvTimeoutError::Timeout) => {
                        self.checkpoint();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                },
                None => match rx.recv() {
                    Ok(w) => w,
                    Err(_) => break,
                },
            };
            let mut batch = vec![first];
            let linger_end = Instant::now() + LINGER_MAX;
            while batch.len() < MAX_BATCH {
                let gap = LINGER_GAP.min(linger_end.saturating_duration_since(Instant::now()));
                match rx.recv_timeout(gap) {
                    Ok(w) => batch.push(w),
                    Err(_) => break,
                }
            }
            self.commit_batch(batch);
            if self.log.as_ref().is_some_and(Log::due) {
                self.checkpoint();
            }
        }
        if self.log.as_ref().is_some_and(|l| l.pending > 0) {
            self.checkpoint();
        }
    }

    /// Makes redb durable up to the last batch and empties the log.
    fn checkpoint(&mut self) {
        let Some(log) = self.log.as_mut() else { return };
        let guard = self.shared.db.read().unwrap_or_else(PoisonError::into_inner);
        let Some(db) = guard.as_ref() else { return };
        // Try again at the next interval whatever happens.
        log.last_checkpoint = Instant::now();
        if let Err(e) = checkpoint_db(db) {
            if reopen_needed(&e) {
                self.shared.needs_reopen.store(true, Ordering::Release);
            }
            tracing::warn!(error = %db_error(e), "storage checkpoint failed; the write-ahead log keeps the batches");
            return;
        }
        log.pending = 0;
        // Harmless when it fails: the records left are at or below the durable last_batch,
        // and replay skips them.
        if let Err(e) = log.wal.reset() {
            tracing::warn!(error = %io_cause(&e), "cannot empty the write-ahead log");
        }
    }

    /// Reopens the database if an I/O error latched it, replaying the log into it.
    fn ensure_open(&mut self) -> Result<(), StoreError> {
        let shared = self.shared;
        let log = &mut self.log;
        shared.ensure_open(&mut |db| {
            if let Some(log) = log.as_mut() {
                let replay = recover(db, log)?;
                *shared.last_replay.lock().unwrap_or_else(PoisonError::into_inner) = Some(replay);
            }
            Ok(())
        })
    }

    /// Commits one batch in its stages: seal its log record, apply it while the record is
    /// appended, cut the record again if the batch did not commit, answer every caller.
    fn commit_batch(&mut self, mut batch: Vec<Box<dyn PendingWrite>>) {
        let shared = self.shared;
        if let Err(e) = self.ensure_open() {
            return fail_all(batch, &e);
        }
        let guard = shared.db.read().unwrap_or_else(PoisonError::into_inner);
        let Some(db) = guard.as_ref() else {
            return fail_all(batch, &StoreError::Closed);
        };
        let record = self.log.as_ref().map(|log| log.record(&batch));
        let (outcome, appended) = self.apply_logged(db, &mut batch, record.as_ref());
        // A record whose batch did not commit must go: its number is given to the next batch.
        let committed = matches!(outcome, Some(Attempt::Committed));
        if appended && !committed && !self.cut(record.as_ref().map(|r| r.start)) {
            shared.needs_reopen.store(true, Ordering::Release);
        }
        self.settle(outcome, batch);
        if shared.needs_reopen.load(Ordering::Acquire) {
            drop(guard);
            // Reopen now rather than at the next write, so reads work again at once.
            if let Err(e) = self.ensure_open() {
                tracing::warn!(error = %e, "storage stays unavailable");
            }
        }
    }

    /// Applies the batch in one transaction while its record (if any) is appended and
    /// synced on another thread: the disk and the CPU work at the same time, and the
    /// commit waits for both. A write that fails on its own is answered and taken out, and
    /// the rest is tried again. Returns how the last attempt ended (`None`: every write
    /// failed on its own) and whether the record reached the log.
    fn apply_logged(
        &mut self,
        db: &Database,
        batch: &mut Vec<Box<dyn PendingWrite>>,
        record: Option<&Record>,
    ) -> (Option<Attempt>, bool) {
        let keys = &self.shared.keys;
        let number = record.map(|r| r.number);
        std::thread::scope(|s| {
            let mut append = match (self.log.as_mut(), record) {
                (Some(log), Some(record)) => {
                    Some(s.spawn(move || log.wal.append(record.number, &record.payload)))
                }
                _ => None,
            };
            let mut appended = false;
            let mut join = |append: &mut Option<std::thread::ScopedJoinHandle<'_, std::io::Result<()>>>| {
                let Some(h) = append.take() else { return Ok(()) };
                match h.join() {
                    Ok(Ok(())) => {
                        appended = true;
                        Ok(())
                    }
                    Ok(Err(e)) => Err(StoreError::unavailable(format!(
                        "cannot write the write-ahead log: {}",
                        io_cause(&e)
                    ))
                    .because(e)),
                    Err(_) => Err(StoreError::unavailable("the write-ahead log writer panicked")),
                }
            };
            let outcome = loop {
                match attempt(db, keys, batch, number, &mut |_| join(&mut append)) {
                    Attempt::OpFailed(i, e) => {
                        tracing::warn!(error = %e, "a write failed on its own; committing the rest of its batch");
                        batch.remove(i).fail(e);
                        if batch.is_empty() {
                            break None;
                        }
                    }
                    other => break Some(other),
                }
            };
            // The batch may have ended before it waited for its record.
            let _ = join(&mut append);
            (outcome, appended)
        })
    }

    /// Answers the callers of a batch by how its commit ended.
    fn settle(&mut self, outcome: Option<Attempt>, batch: Vec<Box<dyn PendingWrite>>) {
        match outcome {
            Some(Attempt::Committed) => {
                if let Some(log) = self.log.as_mut() {
                    log.next_batch += 1;
                    log.pending += 1;
                }
                batch.into_iter().for_each(|w| w.succeed());
            }
            Some(Attempt::LogFailed(e)) => {
                tracing::warn!(error = %e, writes = batch.len(), "storage log append failed");
                fail_all(batch, &e);
            }
            Some(Attempt::Failed(e)) => {
                let reopen = reopen_needed(&e);
                let err = db_error(e);
                tracing::warn!(error = %err, writes = batch.len(), "storage commit failed");
                fail_all(batch, &err);
                if reopen {
                    self.shared.needs_reopen.store(true, Ordering::Release);
                }
            }
            // Every write was answered on its own.
            Some(Attempt::OpFailed(..)) | None => {}
        }
    }

    /// Cuts the record of a batch that did not commit off the log; false when that failed
    /// (the database must then be reopened, which replays the record).
    fn cut(&mut self, start: Option<u64>) -> bool {
        let (Some(log), Some(start)) = (self.log.as_mut(), start) else {
            return true;
        };
        match log.wal.truncate(start) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %io_cause(&e), "cannot cut a failed batch from the log; replaying it");
                false
            }
        }
    }
}

/// How one attempt at committing a batch ended.
enum Attempt {
    Committed,
    /// Operation `.0` failed on its own; the transaction was rolled back.
    OpFailed(usize, StoreError),
    /// The log append failed; the transaction was rolled back.
    LogFailed(StoreError),
    /// The transaction failed as a whole.
    Failed(::redb::Error),
}

/// Writes a batch's record to the log before its commit.
type LogHook<'a> = dyn FnMut(&[Box<dyn PendingWrite>]) -> Result<(), StoreError> + 'a;

/// Applies the batch in one transaction; with a batch `number`, stamps it, calls `log`
/// before the commit and commits without durability (the log is the durable copy).
fn attempt(
    db: &Database,
    keys: &StoreKeys,
    batch: &mut [Box<dyn PendingWrite>],
    number: Option<u64>,
    log: &mut LogHook<'_>,
) -> Attempt {
    let mut txn = match db.begin_write() {
        Ok(txn) => txn,
        Err(e) => return Attempt::Failed(e.into()),
    };
    let durability = if number.is_some() {
        Durability::None
    } else {
        Durability::Immediate
    };
    if let Err(e) = txn.set_durability(durability) {
        return Attempt::Failed(e.into());
    }
    let op_failure = {
        let mut tables = match Tables::open(&txn, keys) {
            Ok(t) => t,
            Err(e) => return Attempt::Failed(e.into()),
        };
        let mut failure = None;
        for (i, w) in batch.iter_mut().enumerate() {
            match w.apply(&mut tables) {
                Ok(()) => {}
                Err(OpError::Op(e)) => {
                    failure = Some((i, e));
                    break;
                }
                Err(OpError::Db(e)) => return Attempt::Failed(e),
            }
        }
        if failure.is_none()
            && let Some(n) = number
            && let Err(e) = tables.meta.insert(META_LAST_BATCH, n)
        {
            return Attempt::Failed(e.into());
        }
        failure
    };
    if let Some((i, e)) = op_failure {
        return match txn.abort() {
            Ok(()) => Attempt::OpFailed(i, e),
            Err(abort) => Attempt::Failed(abort.into()),
        };
    }
    if let Err(e) = log(batch) {
        return match txn.abort() {
            Ok(()) => Attempt::LogFailed(e),
            Err(abort) => Attempt::Failed(abort.into()),
        };
    }
    match txn.commit() {
        Ok(()) => Attempt::Committed,
        Err(e) => Attempt::Failed(e.into()),
    }
}

fn fail_all(batch: Vec<Box<dyn PendingWrite>>, err: &StoreError) {
    for w in batch {
        w.fail(err.clone());
    }
}
