//! The embedded store: one redb file in the relay's data directory.
//!
//! Writes go through one writer thread that group-commits (see `writer`): every
//! acknowledged write is in the write-ahead log `tidings.wal` on disk (see `wal`), yet
//! one small sequential append and `fdatasync` serves all writes queued meanwhile; redb
//! itself is made durable by a checkpoint about once a second.
//! Reads run in read transactions and never wait for the writer: on the blocking pool,
//! except the two lookups of [`Store::seq_span`] that every Store makes, which run inline
//! (the hand-off cost more than the read: 14 200 against 10 000 Stores/s).
//! Push job leases are kept in memory (`leases`): claiming is a read, and only a job's
//! outcome is written.
//!
//! After an I/O error (disk full, EIO) redb refuses all work until the file is opened
//! again; the writer then reopens it (which repairs it), so the store recovers by itself
//! once space returns. Writes fail with [`StoreError::Unavailable`] meanwhile.

mod errors;
mod keys;
mod leases;
mod ops;
mod records;
mod tables;
mod wal;
mod write_op;
mod writer;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, PoisonError, RwLock, TryLockError};
use std::thread::{self, JoinHandle};

use ::redb::{Database, ReadTransaction, ReadableDatabase};
use async_trait::async_trait;
use tokio::sync::oneshot;

use self::errors::{db_error, open_error, reopen_needed};
use self::leases::Leases;
use self::tables::OpError;
use self::wal::Wal;
use self::write_op::{Reply, WriteOp};
use self::writer::{Checkpoints, Log, Opener, Pending, PendingWrite, Shared, Writer};
use super::{
    Account, AccountIndex, DeviceId, Hash, JobOutcome, Lease, NewMessage, OutboxStats, Page, PushInputs,
    PushJob, PutOutcome, Store, StoreError, StoredMessage, Subscription, linkage::StoreKeys,
};

/// The page cache of [`RedbStore::open`]: 128 MiB (redb's own default is 1 GiB).
pub const DEFAULT_CACHE_BYTES: usize = 128 << 20;

/// Name of the database file inside the data directory.
pub const FILE_NAME: &str = "tidings.redb";

/// The embedded [`Store`].
pub struct RedbStore {
    shared: Arc<Shared>,
    /// The writer's queue; `None` once closed.
    queue: RwLock<Option<Sender<Box<dyn PendingWrite>>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Push job leases: only this process opens the file, so they live in memory.
    leases: Arc<Mutex<Leases>>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore").finish_non_exhaustive()
    }
}

/// Opens (or creates) the file and checks its schema version.
fn open_file(path: &Path, keys: &StoreKeys, cache_bytes: usize) -> Result<Database, StoreError> {
    let db = Database::builder()
        .set_cache_size(cache_bytes)
        .create(path)
        .map_err(open_error)?;
    tables::init_schema(&db, keys).map_err(op_error)?;
    Ok(db)
}

fn op_error(e: OpError) -> StoreError {
    match e {
        OpError::Op(e) => e,
        OpError::Db(e) => db_error(e),
    }
}

impl RedbStore {
    /// Opens the store in `dir` (created if missing), in the file `dir/tidings.redb`.
    ///
    /// Fails with [`StoreError::Corrupt`] for a file of another schema version or not
    /// written by tidings, and [`StoreError::Unavailable`] when the file cannot be opened
    /// (in use by another process, permissions, I/O). Blocking: after an unclean stop redb
    /// repairs the file first, which reads all of it; call it before serving (or from
    /// `spawn_blocking`). `keys` (from the relay secret) hide which account a push job or
    /// pushed marker belongs to, and seal the write-ahead log.
    pub fn open(dir: &Path, keys: StoreKeys) -> Result<RedbStore, StoreError> {
        Self::open_with_cache(dir, keys, DEFAULT_CACHE_BYTES)
    }

    /// [`RedbStore::open`] with a page cache of `cache_bytes` (the relay's
    /// `storage.cache_mb`).
    pub fn open_with_cache(dir: &Path, keys: StoreKeys, cache_bytes: usize) -> Result<RedbStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::unavailable(format!("cannot create the data directory {}: {e}", dir.display()))
                .because(e)
        })?;
        Self::open_with(dir, Checkpoints::default(), keys, cache_bytes)
    }

    /// Opens the store in `dir` with its write-ahead log, checkpointing as `policy` says.
    fn open_with(
        dir: &Path,
        policy: Checkpoints,
        keys: StoreKeys,
        cache_bytes: usize,
    ) -> Result<RedbStore, StoreError> {
        let path = dir.join(FILE_NAME);
        let keys = Arc::new(keys);
        let for_opener = Arc::clone(&keys);
        Self::start(
            Box::new(move || open_file(&path, &for_opener, cache_bytes)),
            Some((dir, policy)),
            keys,
        )
    }

    /// Opens the store with a custom way to open the database (tests inject I/O faults
    /// into redb). Such a store has no log: every batch commits durably in redb.
    #[cfg(test)]
    fn with_opener(opener: Opener, keys: StoreKeys) -> Result<RedbStore, StoreError> {
        Self::start(opener, None, Arc::new(keys))
    }

    /// Opens the database (which locks its file), then replays the log into it.
    fn start(
        opener: Opener,
        log: Option<(&Path, Checkpoints)>,
        keys: Arc<StoreKeys>,
    ) -> Result<RedbStore, StoreError> {
        let db = opener()?;
        let (log, replay) = match log {
            Some((dir, policy)) => {
                let mut log = Log::new(Wal::open(dir)?, policy, Arc::clone(&keys));
                let replay = writer::recover(&db, &mut log)?;
                (Some(log), Some(replay))
            }
            None => (None, None),
        };
        let shared = Arc::new(Shared::new(db, opener, keys));
        *shared.last_replay.lock().unwrap_or_else(PoisonError::into_inner) = replay;
        let (tx, rx) = mpsc::channel();
        let for_writer = Arc::clone(&shared);
        let writer = thread::Builder::new()
            .name("tidings-redb-writer".into())
            .spawn(move || {
                Writer {
                    shared: &for_writer,
                    log,
                }
                .run(rx)
            })
            .map_err(|e| {
                StoreError::unavailable(format!("cannot start the storage writer: {e}")).because(e)
            })?;
        Ok(RedbStore {
            shared,
            queue: RwLock::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            leases: Arc::default(),
        })
    }

    /// Queues a write for the next group commit and waits until it is on disk; `extract`
    /// picks the caller's answer out of the operation's reply.
    async fn submit<R>(&self, op: WriteOp, extract: fn(Reply) -> Option<R>) -> Result<R, StoreError>
    where
        R: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.enqueue(Box::new(Pending::new(op, extract, Some(reply))))?;
        answer.await.map_err(|_| writer_gone())?
    }

    /// Queues an unlogged write given as a closure (tests: it does not survive a crash).
    #[cfg(test)]
    async fn write<R, F>(&self, op: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnMut(&mut tables::Tables<'_>) -> Result<R, OpError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.enqueue(Box::new(writer::Unlogged {
            op,
            result: None,
            reply,
        }))?;
        answer.await.map_err(|_| writer_gone())?
    }

    fn enqueue(&self, w: Box<dyn PendingWrite>) -> Result<(), StoreError> {
        let queue = self.queue.read().unwrap_or_else(PoisonError::into_inner);
        let Some(queue) = queue.as_ref() else {
            return Err(StoreError::Closed);
        };
        queue.send(w).map_err(|_| writer_gone())
    }

    /// Runs `f` in a read transaction on the blocking pool.
    async fn read<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<R, OpError> + Send + 'static,
    {
        let shared = self.open_shared()?;
        let task = tokio::task::spawn_blocking(move || read_in(&shared, f));
        task.await
            .map_err(|e| StoreError::unavailable(format!("storage read task failed: {e}")).because(e))?
    }

    /// Runs `f` in a read transaction on the calling thread, for a few point lookups on a
    /// hot path. A read never waits for the writer (redb readers see the last commit), and
    /// the pages it touches are in redb's cache or the OS page cache on a running relay,
    /// so this takes microseconds: far less than a trip through the blocking pool.
    ///
    /// The exception is a reopen after an I/O error, which holds the database handle while
    /// redb repairs the file (reading all of it): rather than stall a runtime thread for
    /// that, such a read goes through the blocking pool like any other.
    async fn read_quick<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<R, OpError> + Send + 'static,
    {
        let shared = self.open_shared()?;
        // The guard must be gone before the await below: it may not cross threads.
        let f = {
            let db = match shared.db.try_read() {
                Ok(db) => Some(db),
                Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
                Err(TryLockError::WouldBlock) => None,
            };
            match db {
                Some(db) => return read_with(&shared, db.as_ref(), f),
                None => f,
            }
        };
        self.read(f).await
    }

    /// Runs `f` with the leases locked and, inside that lock, a read transaction: a
    /// snapshot taken before the lock could predate a finish whose lease is already gone.
    async fn read_leased<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Leases, &ReadTransaction) -> Result<R, OpError> + Send + 'static,
    {
        let shared = self.open_shared()?;
        let leases = Arc::clone(&self.leases);
        let task = tokio::task::spawn_blocking(move || {
            let mut leases = leases.lock().unwrap_or_else(PoisonError::into_inner);
            read_in(&shared, |txn| f(&mut leases, txn))
        });
        task.await
            .map_err(|e| StoreError::unavailable(format!("storage read task failed: {e}")).because(e))?
    }

    fn open_shared(&self) -> Result<Arc<Shared>, StoreError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        Ok(Arc::clone(&self.shared))
    }
}

/// Runs `f` in a read transaction of the current database handle.
fn read_in<R>(
    shared: &Shared,
    f: impl FnOnce(&ReadTransaction) -> Result<R, OpError>,
) -> Result<R, StoreError> {
    let db = shared.db.read().unwrap_or_else(PoisonError::into_inner);
    read_with(shared, db.as_ref(), f)
}

/// Runs `f` in a read transaction of `db` (`None`: closed, or being reopened).
fn read_with<R>(
    shared: &Shared,
    db: Option<&Database>,
    f: impl FnOnce(&ReadTransaction) -> Result<R, OpError>,
) -> Result<R, StoreError> {
    let Some(db) = db else {
        return Err(if shared.closed.load(Ordering::Acquire) {
            StoreError::Closed
        } else {
            StoreError::unavailable("the database is being reopened after an I/O error")
        });
    };
    db.begin_read()
        .map_err(OpError::from)
        .and_then(|txn| f(&txn))
        .map_err(|e| match e {
            OpError::Op(e) => e,
            OpError::Db(e) => {
                if reopen_needed(&e) {
                    shared.needs_reopen.store(true, Ordering::Release);
                }
                db_error(e)
            }
        })
}

fn flag(r: Reply) -> Option<bool> {
    match r {
        Reply::Flag(f) => Some(f),
        _ => None,
    }
}

fn done(r: Reply) -> Option<()> {
    matches!(r, Reply::Done).then_some(())
}

/// A finish in progress: while it lasts, the job's lease (if this claim still holds it)
/// cannot be taken over. Dropped unfinished (the caller gave up waiting), it leaves the
/// lease to run out, which is safe whether or not the write landed.
struct Finishing<'l> {
    leases: &'l Mutex<Leases>,
    id: u64,
    held: bool,
    recorded: bool,
}

impl<'l> Finishing<'l> {
    fn begin(leases: &'l Mutex<Leases>, job: &PushJob) -> Self {
        let held = leases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .begin_finish(job.id, &job.lease);
        Finishing {
            leases,
            id: job.id,
            held,
            recorded: false,
        }
    }

    fn end(mut self, recorded: bool) {
        self.recorded = recorded;
    }
}

impl Drop for Finishing<'_> {
    fn drop(&mut self) {
        if self.held {
            self.leases
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .end_finish(self.id, self.recorded);
        }
    }
}

fn writer_gone() -> StoreError {
    StoreError::unavailable("the storage writer stopped")
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish what is queued and exit; waiting for it
        // releases the file, so the store can be opened again right after the drop.
        self.queue
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(writer) = self
            .writer
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = writer.join();
        }
    }
}

#[async_trait]
impl Store for RedbStore {
    async fn put_message(&self, msg: NewMessage) -> Result<PutOutcome, StoreError> {
        self.submit(WriteOp::PutMessage(msg), |r| match r {
            Reply::Put(out) => Some(out),
            _ => None,
        })
        .await
    }

    async fn get_messages(
        &self,
        account: &Account,
        namespace: u32,
        after_seq: u64,
        limit: u32,
        now_ms: i64,
    ) -> Result<Page, StoreError> {
        let account = *account;
        self.read(move |txn| ops::get_messages(txn, &account, namespace, after_seq, limit, now_ms))
            .await
    }

    async fn seq_span(&self, account: &Account, namespace: u32) -> Result<u64, StoreError> {
        // Two index lookups on every Store: cheaper on this thread than the hand-off to
        // the blocking pool and back (see `read_quick`).
        let account = *account;
        self.read_quick(move |txn| ops::seq_span(txn, &account, namespace))
            .await
    }

    async fn count_messages(
        &self,
        account: &Account,
        namespace: u32,
        after_seq: u64,
        now_ms: i64,
        at_most: u32,
    ) -> Result<u32, StoreError> {
        let account = *account;
        self.read(move |txn| ops::count_messages(txn, &account, namespace, after_seq, now_ms, at_most))
            .await
    }

    async fn get_message(
        &self,
        account: &Account,
        namespace: u32,
        hash: &Hash,
    ) -> Result<Option<StoredMessage>, StoreError> {
        let (account, hash) = (*account, *hash);
        self.read(move |txn| ops::get_message(txn, &account, namespace, &hash))
            .await
    }

    async fn delete_messages(
        &self,
        account: &Account,
        namespace: u32,
        hashes: &[Hash],
    ) -> Result<u32, StoreError> {
        let op = WriteOp::DeleteMessages {
            account: *account,
            namespace,
            hashes: hashes.to_vec(),
        };
        self.submit(op, |r| match r {
            Reply::Count(n) => Some(n),
            _ => None,
        })
        .await
    }

    async fn sweep_expired(&self, now_ms: i64, max: u32) -> Result<u64, StoreError> {
        self.submit(WriteOp::SweepExpired { now_ms, max }, |r| match r {
            Reply::Removed(n) => Some(n),
            _ => None,
        })
        .await
    }

    async fn upsert_subscription(&self, sub: Subscription) -> Result<bool, StoreError> {
        self.submit(WriteOp::UpsertSubscription(sub), flag).await
    }

    async fn remove_subscription(
        &self,
        account_index: &AccountIndex,
        device_id: &DeviceId,
        expiring_by: i64,
    ) -> Result<bool, StoreError> {
        let op = WriteOp::RemoveSubscription {
            account_index: *account_index,
            device_id: *device_id,
            expiring_by,
        };
        self.submit(op, flag).await
    }

    async fn get_subscription(
        &self,
        account_index: &AccountIndex,
        device_id: &DeviceId,
    ) -> Result<Option<Subscription>, StoreError> {
        let (ai, dev) = (*account_index, *device_id);
        self.read(move |txn| ops::get_subscription(txn, &ai, &dev)).await
    }

    async fn push_inputs(&self, jobs: &[PushJob]) -> Result<Vec<PushInputs>, StoreError> {
        let jobs = jobs.to_vec();
        self.read(move |txn| {
            jobs.iter()
                .map(|job| {
                    Ok(PushInputs {
                        subscription: ops::get_subscription(txn, &job.account_index, &job.device_id)?,
                        message: ops::get_message(txn, &job.account, job.namespace, &job.hash)?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn claim_jobs(
        &self,
        node: &str,
        now_ms: i64,
        lease_ms: i64,
        max: u32,
    ) -> Result<Vec<PushJob>, StoreError> {
        let keys = Arc::clone(&self.shared.keys);
        let lease = Lease {
            owner: node.to_owned(),
            until_ms: now_ms.saturating_add(lease_ms.max(0)),
        };
        let (jobs, unreadable) = self
            .read_leased(move |leases, txn| {
                // The lock is held across the scan, so two claims never take the same job.
                leases.prune(now_ms);
                let (mut jobs, unreadable) = ops::due_jobs(txn, &keys, leases, now_ms, max)?;
                for job in &mut jobs {
                    leases.take(job.id, lease.clone());
                    job.lease = lease.clone();
                }
                Ok((jobs, unreadable))
            })
            .await?;
        for id in unreadable {
            self.submit(WriteOp::DropJob { id }, done).await?;
        }
        Ok(jobs)
    }

    async fn finish_job(&self, job: &PushJob, outcome: JobOutcome) -> Result<(), StoreError> {
        let finish = Finishing::begin(&self.leases, job);
        let op = WriteOp::FinishJob {
            job: job.clone(),
            outcome,
            held: finish.held,
        };
        let result = self.submit(op, done).await;
        finish.end(result.is_ok());
        result
    }

    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        self.read(ops::outbox_stats).await
    }

    async fn check_writable(&self) -> Result<(), StoreError> {
        self.submit(WriteOp::Probe, done).await
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.queue.write().unwrap_or_else(PoisonError::into_inner).take();
        let writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner).take();
        let shared = Arc::clone(&self.shared);
        let joined = tokio::task::spawn_blocking(move || {
            let clean = writer.is_none_or(|w| w.join().is_ok());
            shared.shut();
            clean
        })
        .await
        .map_err(|e| StoreError::unavailable(format!("closing the storage failed: {e}")).because(e))?;
        if joined { Ok(()) } else { Err(writer_gone()) }
    }
}

#[cfg(test)]
mod tests;
