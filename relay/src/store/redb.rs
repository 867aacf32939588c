//! The embedded store: one redb file in the relay's data directory.
//!
//! Writes go through one writer thread that group-commits (see [`writer`]): every
//! acknowledged write is fsync'd, yet one fsync serves all writes queued meanwhile.
//! Reads run in read transactions on the blocking pool and never wait for the writer.
//!
//! After an I/O error (disk full, EIO) redb refuses all work until the file is opened
//! again; the writer then reopens it (which repairs it), so the store recovers by itself
//! once space returns. Writes fail with [`StoreError::Unavailable`] meanwhile.

mod errors;
mod keys;
mod ops;
mod records;
mod tables;
mod writer;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::{self, JoinHandle};

use ::redb::{Database, ReadTransaction, ReadableDatabase};
use async_trait::async_trait;
use tokio::sync::oneshot;

use self::errors::{db_error, open_error, reopen_needed};
use self::tables::{OpError, Tables};
use self::writer::{Opener, Pending, PendingWrite, Shared};
use super::{
    Account, AccountIndex, DeviceId, Hash, JobOutcome, NewMessage, OutboxStats, Page, PushJob, PutOutcome,
    Store, StoreError, StoredMessage, Subscription,
};

/// Name of the database file inside the data directory.
pub const FILE_NAME: &str = "tidings.redb";

/// The embedded [`Store`].
pub struct RedbStore {
    shared: Arc<Shared>,
    /// The writer's queue; `None` once closed.
    queue: RwLock<Option<Sender<Box<dyn PendingWrite>>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore").finish_non_exhaustive()
    }
}

/// Opens (or creates) the file and checks its schema version.
fn open_file(path: &Path) -> Result<Database, StoreError> {
    let db = Database::builder().create(path).map_err(open_error)?;
    tables::init_schema(&db).map_err(op_error)?;
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
    /// (in use by another process, permissions, I/O).
    pub fn open(dir: &Path) -> Result<RedbStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create the data directory {}: {e}", dir.display()))
        })?;
        let path = dir.join(FILE_NAME);
        Self::with_opener(Box::new(move || open_file(&path)))
    }

    /// Opens the store with a custom way to open the database (tests inject I/O faults).
    fn with_opener(opener: Opener) -> Result<RedbStore, StoreError> {
        let shared = Arc::new(Shared::open(opener)?);
        let (tx, rx) = mpsc::channel();
        let for_writer = Arc::clone(&shared);
        let writer = thread::Builder::new()
            .name("tidings-redb-writer".into())
            .spawn(move || writer::run(&for_writer, rx))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the storage writer: {e}")))?;
        Ok(RedbStore {
            shared,
            queue: RwLock::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Queues a write for the next group commit and waits until it is on disk.
    async fn write<R, F>(&self, op: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnMut(&mut Tables<'_>) -> Result<R, OpError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        {
            let queue = self.queue.read().unwrap_or_else(PoisonError::into_inner);
            let Some(queue) = queue.as_ref() else {
                return Err(StoreError::Closed);
            };
            queue
                .send(Box::new(Pending::new(op, reply)))
                .map_err(|_| writer_gone())?;
        }
        answer.await.map_err(|_| writer_gone())?
    }

    /// Runs `f` in a read transaction on the blocking pool.
    async fn read<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<R, OpError> + Send + 'static,
    {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        let shared = Arc::clone(&self.shared);
        let task = tokio::task::spawn_blocking(move || {
            let db = shared.db.read().unwrap_or_else(PoisonError::into_inner);
            let Some(db) = db.as_ref() else {
                return Err(if shared.closed.load(Ordering::Acquire) {
                    StoreError::Closed
                } else {
                    StoreError::Unavailable("the database is being reopened after an I/O error".into())
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
        });
        task.await
            .map_err(|e| StoreError::Unavailable(format!("storage read task failed: {e}")))?
    }
}

fn writer_gone() -> StoreError {
    StoreError::Unavailable("the storage writer stopped".into())
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
        self.write(move |t| ops::put_message(t, &msg)).await
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
        let (account, hashes) = (*account, hashes.to_vec());
        self.write(move |t| ops::delete_messages(t, &account, namespace, &hashes))
            .await
    }

    async fn sweep_expired(&self, now_ms: i64, max: u32) -> Result<u64, StoreError> {
        self.write(move |t| ops::sweep_expired(t, now_ms, max)).await
    }

    async fn upsert_subscription(&self, sub: Subscription) -> Result<bool, StoreError> {
        self.write(move |t| ops::upsert_subscription(t, &sub)).await
    }

    async fn remove_subscription(
        &self,
        account_index: &AccountIndex,
        device_id: &DeviceId,
    ) -> Result<bool, StoreError> {
        let (ai, dev) = (*account_index, *device_id);
        self.write(move |t| ops::remove_subscription(t, &ai, &dev)).await
    }

    async fn get_subscription(
        &self,
        account_index: &AccountIndex,
        device_id: &DeviceId,
    ) -> Result<Option<Subscription>, StoreError> {
        let (ai, dev) = (*account_index, *device_id);
        self.read(move |txn| ops::get_subscription(txn, &ai, &dev)).await
    }

    async fn claim_jobs(
        &self,
        node: &str,
        now_ms: i64,
        lease_ms: i64,
        max: u32,
    ) -> Result<Vec<PushJob>, StoreError> {
        let node = node.to_owned();
        self.write(move |t| ops::claim_jobs(t, &node, now_ms, lease_ms, max))
            .await
    }

    async fn finish_job(&self, job: &PushJob, outcome: JobOutcome) -> Result<(), StoreError> {
        let job = job.clone();
        self.write(move |t| ops::finish_job(t, &job, outcome)).await
    }

    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        self.read(ops::outbox_stats).await
    }

    async fn check_writable(&self) -> Result<(), StoreError> {
        self.write(ops::probe).await
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
        .map_err(|e| StoreError::Unavailable(format!("closing the storage failed: {e}")))?;
        if joined { Ok(()) } else { Err(writer_gone()) }
    }
}

#[cfg(test)]
mod tests;
