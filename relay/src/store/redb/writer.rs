//! Group commit: one thread applies every queued write in one transaction and fsyncs once.
//!
//! An fsync costs milliseconds whatever it carries, so committing each Store alone caps
//! the relay at a few hundred Stores per second. The writer drains the queue, applies all
//! requests in one transaction, commits it with `Durability::Immediate`, and only then
//! answers each caller, so an `Ok` still means "on disk".

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use ::redb::{Database, Durability};
use tokio::sync::oneshot;

use super::errors::{db_error, reopen_needed};
use super::tables::{OpError, Tables};
use crate::store::StoreError;

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

/// Opens the database file and checks its schema.
pub type Opener = Box<dyn Fn() -> Result<Database, StoreError> + Send + Sync>;

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
}

impl Shared {
    /// Opens the database for the first time.
    pub fn open(opener: Opener) -> Result<Self, StoreError> {
        let db = opener()?;
        Ok(Shared {
            db: RwLock::new(Some(db)),
            opener,
            needs_reopen: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            reopen_failure: Mutex::new(None),
        })
    }

    /// Reopens the file if an I/O error latched the database (redb then refuses all work
    /// until the file is opened again, which also repairs it).
    fn ensure_open(&self) -> Result<(), StoreError> {
        let open = self.db.read().unwrap_or_else(PoisonError::into_inner).is_some();
        if open && !self.needs_reopen.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut failure = self.reopen_failure.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((at, why)) = failure.as_ref()
            && at.elapsed() < REOPEN_BACKOFF
        {
            return Err(StoreError::Unavailable(why.clone()));
        }
        let mut slot = self.db.write().unwrap_or_else(PoisonError::into_inner);
        // The old handle must be gone first: the file admits one handle at a time.
        *slot = None;
        match (self.opener)() {
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
                Err(StoreError::Unavailable(why))
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
    /// Answers the caller after the commit.
    fn succeed(self: Box<Self>);
    /// Answers the caller with an error; nothing of this operation was committed.
    fn fail(self: Box<Self>, err: StoreError);
}

/// A typed [`PendingWrite`].
pub struct Pending<R, F> {
    op: F,
    result: Option<R>,
    reply: oneshot::Sender<Result<R, StoreError>>,
}

impl<R, F> Pending<R, F> {
    /// Wraps an operation and the channel its caller waits on.
    pub fn new(op: F, reply: oneshot::Sender<Result<R, StoreError>>) -> Self {
        Pending {
            op,
            result: None,
            reply,
        }
    }
}

impl<R, F> PendingWrite for Pending<R, F>
where
    R: Send,
    F: FnMut(&mut Tables<'_>) -> Result<R, OpError> + Send,
{
    fn apply(&mut self, t: &mut Tables<'_>) -> Result<(), OpError> {
        self.result = Some((self.op)(t)?);
        Ok(())
    }

    fn succeed(self: Box<Self>) {
        let answer = self
            .result
            .ok_or_else(|| StoreError::Unavailable("internal: write committed without a result".into()));
        // A caller that gave up waiting needs no answer.
        let _ = self.reply.send(answer);
    }

    fn fail(self: Box<Self>, err: StoreError) {
        let _ = self.reply.send(Err(err));
    }
}

/// The writer thread's loop; returns when every sender is gone and the queue is empty.
pub fn run(shared: &Shared, rx: Receiver<Box<dyn PendingWrite>>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        let linger_end = Instant::now() + LINGER_MAX;
        while batch.len() < MAX_BATCH {
            let gap = LINGER_GAP.min(linger_end.saturating_duration_since(Instant::now()));
            match rx.recv_timeout(gap) {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let n = batch.len();
        let t = Instant::now();
        commit_batch(shared, batch);
        STATS.with(|st| {
            let mut st = st.borrow_mut();
            st.0 += 1;
            st.1 += n;
            st.2 += t.elapsed().as_micros();
            if st.0 % 200 == 0 {
                eprintln!(
                    "DEBUG batches {} avg size {:.1} avg us {} apply {} commit {}",
                    st.0,
                    st.1 as f64 / st.0 as f64,
                    st.2 / st.0 as u128,
                    APPLY.load(Ordering::Relaxed) / st.0 as u64,
                    COMMIT.load(Ordering::Relaxed) / st.0 as u64
                );
            }
        });
    }
}

/// How one attempt at committing a batch ended.
enum Attempt {
    Committed,
    /// Operation `.0` failed on its own; the transaction was rolled back.
    OpFailed(usize, StoreError),
    /// The transaction failed as a whole.
    Failed(::redb::Error),
}

fn commit_batch(shared: &Shared, mut batch: Vec<Box<dyn PendingWrite>>) {
    if let Err(e) = shared.ensure_open() {
        return fail_all(batch, &e);
    }
    let guard = shared.db.read().unwrap_or_else(PoisonError::into_inner);
    let Some(db) = guard.as_ref() else {
        return fail_all(batch, &StoreError::Closed);
    };
    loop {
        match attempt(db, &mut batch) {
            Attempt::Committed => {
                batch.into_iter().for_each(|w| w.succeed());
                return;
            }
            Attempt::OpFailed(i, e) => {
                tracing::warn!(error = %e, "a write failed on its own; committing the rest of its batch");
                batch.remove(i).fail(e);
                if batch.is_empty() {
                    return;
                }
            }
            Attempt::Failed(e) => {
                let reopen = reopen_needed(&e);
                let err = db_error(e);
                tracing::warn!(error = %err, writes = batch.len(), "storage commit failed");
                fail_all(batch, &err);
                if reopen {
                    shared.needs_reopen.store(true, Ordering::Release);
                    drop(guard);
                    // Reopen now rather than at the next write, so reads work again at once.
                    if let Err(e) = shared.ensure_open() {
                        tracing::warn!(error = %e, "storage stays unavailable");
                    }
                }
                return;
            }
        }
    }
}

thread_local!(static STATS: std::cell::RefCell<(usize, usize, u128)> = const { std::cell::RefCell::new((0, 0, 0)) });
static APPLY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static COMMIT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
fn attempt(db: &Database, batch: &mut [Box<dyn PendingWrite>]) -> Attempt {
    let mut txn = match db.begin_write() {
        Ok(txn) => txn,
        Err(e) => return Attempt::Failed(e.into()),
    };
    if let Err(e) = txn.set_durability(Durability::Immediate) {
        return Attempt::Failed(e.into());
    }
    let t0 = Instant::now();
    let op_failure = {
        let mut tables = match Tables::open(&txn) {
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
        failure
    };
    if let Some((i, e)) = op_failure {
        return match txn.abort() {
            Ok(()) => Attempt::OpFailed(i, e),
            Err(abort) => Attempt::Failed(abort.into()),
        };
    }
    APPLY.fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
    let t1 = Instant::now();
    let r = txn.commit();
    COMMIT.fetch_add(t1.elapsed().as_micros() as u64, Ordering::Relaxed);
    match r {
        Ok(()) => Attempt::Committed,
        Err(e) => Attempt::Failed(e.into()),
    }
}

fn fail_all(batch: Vec<Box<dyn PendingWrite>>, err: &StoreError) {
    for w in batch {
        w.fail(copy_error(err));
    }
}

/// `StoreError` holds no source, so each caller gets an equal copy.
pub fn copy_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
        StoreError::Closed => StoreError::Closed,
    }
}
