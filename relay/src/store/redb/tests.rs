//! Tests of the redb backend: the conformance suite plus what only a file can show
//! (reopen, schema version, I/O faults, group commit).

use std::fs::OpenOptions;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ::redb::backends::FileBackend;
use ::redb::{BackendError, StorageBackend};
use tempfile::TempDir;

use super::*;

const T0: i64 = 1_700_000_000_000;
const DAY: i64 = 86_400_000;

async fn fresh() -> (TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path()).unwrap();
    (dir, Arc::new(store))
}

crate::store_conformance_tests!(fresh);

fn msg(account: &Account, data: &[u8], created_ms: i64, expires_ms: i64) -> NewMessage {
    NewMessage {
        account: *account,
        account_index: [1; 32],
        namespace: 20,
        hash: tidings_proto::hash::message_hash(account, 20, data),
        data: data.to_vec(),
        created_ms,
        expires_ms,
    }
}

fn sub(device_id: DeviceId, expires_ms: i64) -> Subscription {
    Subscription {
        account_index: [1; 32],
        device_id,
        namespaces: vec![20],
        want_data: true,
        sealed: vec![7; 100],
        expires_ms,
    }
}

async fn with_timeout<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("test timed out")
}

#[tokio::test]
async fn everything_survives_a_reopen_and_counters_continue() {
    with_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        let account = [5u8; 32];
        let (max_job, seq3) = {
            let store = RedbStore::open(dir.path()).unwrap();
            store.upsert_subscription(sub([9; 16], T0 + DAY)).await.unwrap();
            for d in [&b"1"[..], b"2", b"3"] {
                store.put_message(msg(&account, d, T0, T0 + DAY)).await.unwrap();
            }
            let seq3 = store
                .put_message(msg(&account, b"3", T0, T0 + DAY))
                .await
                .unwrap()
                .seq;
            let jobs = store.claim_jobs("a", T0, 1000, 1).await.unwrap();
            store
                .delete_messages(&account, 20, &[msg(&account, b"1", 0, 0).hash])
                .await
                .unwrap();
            store.close().await.unwrap();
            (jobs[0].id + 2, seq3)
        };
        {
            let store = RedbStore::open(dir.path()).unwrap();
            let page = store.get_messages(&account, 20, 0, 10, T0).await.unwrap();
            assert_eq!(
                page.messages.iter().map(|m| m.data.clone()).collect::<Vec<_>>(),
                [b"2", b"3"]
            );
            assert_eq!(
                store.get_subscription(&[1; 32], &[9; 16]).await.unwrap(),
                Some(sub([9; 16], T0 + DAY))
            );
            assert_eq!(store.outbox_stats().await.unwrap().depth, 3);
            // The lease taken before the restart still holds.
            assert_eq!(store.claim_jobs("b", T0 + 10, 1000, 10).await.unwrap().len(), 2);
            let out = store
                .put_message(msg(&account, b"4", T0, T0 + DAY))
                .await
                .unwrap();
            assert_eq!(out.seq, seq3 + 1);
            let jobs = store.claim_jobs("b", T0 + 20, 1000, 10).await.unwrap();
            assert_eq!(jobs.len(), 1);
            assert!(jobs[0].id > max_job, "job ids continue after a restart");
            // Dropped without close: the drop still finishes and releases the file.
        }
        let store = RedbStore::open(dir.path()).unwrap();
        assert_eq!(
            store
                .get_messages(&account, 20, 0, 10, T0)
                .await
                .unwrap()
                .messages
                .len(),
            3
        );
        assert_eq!(store.outbox_stats().await.unwrap().depth, 4);
    })
    .await;
}

#[tokio::test]
async fn an_unknown_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(RedbStore::open(dir.path()).unwrap());
    {
        let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(tables::META)
            .unwrap()
            .insert(tables::META_SCHEMA, 99)
            .unwrap();
        txn.commit().unwrap();
    }
    let err = RedbStore::open(dir.path()).unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt(m) if m.contains("99")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_foreign_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(FILE_NAME), vec![0x42; 8192]).unwrap();
    assert!(RedbStore::open(dir.path()).is_err());

    let other = tempfile::tempdir().unwrap();
    {
        let db = Database::create(other.path().join(FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        let def: ::redb::TableDefinition<u64, u64> = ::redb::TableDefinition::new("messages");
        txn.open_table(def).unwrap().insert(1, 2).unwrap();
        txn.commit().unwrap();
    }
    let err = RedbStore::open(other.path()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
}

#[tokio::test]
async fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = RedbStore::open(dir.path()).unwrap();
    let err = RedbStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}

/// A file backend whose writes fail with "no space left" while `full` is set.
#[derive(Debug)]
struct FlakyBackend {
    inner: FileBackend,
    full: Arc<AtomicBool>,
}

impl FlakyBackend {
    fn check(&self) -> Result<(), std::io::Error> {
        if self.full.load(Ordering::SeqCst) {
            Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "no space left on device",
            ))
        } else {
            Ok(())
        }
    }
}

impl StorageBackend for FlakyBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        if len > self.inner.len()? {
            self.check()?;
        }
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.check()?;
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.check()?;
        self.inner.write(offset, data)
    }
    fn close(&self) -> Result<(), std::io::Error> {
        self.inner.close()
    }
    fn try_lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }
    fn try_lock_shared_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }
    fn lock_range(&self, start: std::ops::Bound<u64>, end: std::ops::Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }
    fn lock_shared_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }
    fn unlock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }
    fn query_lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

fn flaky_store(dir: &Path, full: Arc<AtomicBool>) -> RedbStore {
    let path = dir.join(FILE_NAME);
    RedbStore::with_opener(Box::new(move || {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let backend = FlakyBackend {
            inner: FileBackend::new(file).map_err(open_error)?,
            full: Arc::clone(&full),
        };
        let db = Database::builder()
            .create_with_backend(backend)
            .map_err(open_error)?;
        tables::init_schema(&db).map_err(op_error)?;
        Ok(db)
    }))
    .unwrap()
}

#[tokio::test]
async fn a_full_disk_fails_writes_cleanly_and_the_store_recovers() {
    with_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        let full = Arc::new(AtomicBool::new(false));
        let store = flaky_store(dir.path(), Arc::clone(&full));
        let account = [3u8; 32];
        let first = store
            .put_message(msg(&account, b"before", T0, T0 + DAY))
            .await
            .unwrap();

        full.store(true, Ordering::SeqCst);
        let err = store
            .put_message(msg(&account, b"while full", T0, T0 + DAY))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::Unavailable(m) if m.contains("disk full")),
            "{err:?}"
        );
        let err = store.check_writable().await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");

        full.store(false, Ordering::SeqCst);
        // A failed reopen is retried after a short backoff; poll until the store is back.
        let deadline = Instant::now() + Duration::from_secs(20);
        while store.check_writable().await.is_err() {
            assert!(Instant::now() < deadline, "the store did not recover");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let after = store
            .put_message(msg(&account, b"after", T0, T0 + DAY))
            .await
            .unwrap();
        assert_eq!(after.seq, first.seq + 1, "the failed write left nothing behind");
        let page = store.get_messages(&account, 20, 0, 10, T0).await.unwrap();
        assert_eq!(
            page.messages.iter().map(|m| m.data.clone()).collect::<Vec<_>>(),
            [&b"before"[..], b"after"]
        );
        store.close().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_write_does_not_fail_its_batch() {
    with_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(RedbStore::open(dir.path()).unwrap());
        // A subscription record that cannot be decoded makes the fan-out of its account fail.
        let bad_index = [0xbb; 32];
        {
            let db = store.shared.db.read().unwrap();
            let txn = db.as_ref().unwrap().begin_write().unwrap();
            txn.open_table(tables::SUBS)
                .unwrap()
                .insert(keys::sub(&bad_index, &[1; 16]).as_slice(), &[1u8][..])
                .unwrap();
            txn.commit().unwrap();
        }
        // Hold the writer so the next writes queue up and form one batch.
        let (open_gate, gate) = std::sync::mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        let blocker = {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .write(move |_| {
                        let _ = gate.lock().unwrap().recv_timeout(Duration::from_secs(5));
                        Ok(())
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let account = [4u8; 32];
        let put = |m: NewMessage| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.put_message(m).await })
        };
        let good1 = put(msg(&account, b"good 1", T0, T0 + DAY));
        let bad = put(NewMessage {
            account_index: bad_index,
            ..msg(&account, b"bad", T0, T0 + DAY)
        });
        let good2 = put(msg(&account, b"good 2", T0, T0 + DAY));
        tokio::time::sleep(Duration::from_millis(100)).await;
        open_gate.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        let (s1, s2) = (
            good1.await.unwrap().unwrap().seq,
            good2.await.unwrap().unwrap().seq,
        );
        assert!(matches!(bad.await.unwrap(), Err(StoreError::Corrupt(_))));
        let page = store.get_messages(&account, 20, 0, 10, T0).await.unwrap();
        let mut seqs = vec![s1, s2];
        seqs.sort_unstable();
        assert_eq!(page.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), seqs);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_finishes_queued_writes() {
    with_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(RedbStore::open(dir.path()).unwrap());
        let account = [6u8; 32];
        let mut tasks = Vec::new();
        for i in 0..200u32 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                store
                    .put_message(msg(&account, &i.to_be_bytes(), T0, T0 + DAY))
                    .await
            }));
        }
        tokio::task::yield_now().await;
        store.close().await.unwrap();
        let mut acked = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(out) => acked.push(out.seq),
                Err(StoreError::Closed) => {}
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        drop(store);
        let store = RedbStore::open(dir.path()).unwrap();
        let page = store.get_messages(&account, 20, 0, 1000, T0).await.unwrap();
        let stored: Vec<u64> = page.messages.iter().map(|m| m.seq).collect();
        acked.sort_unstable();
        assert_eq!(stored, acked, "every acknowledged write is on disk, nothing else");
    })
    .await;
}

#[tokio::test]
async fn sweep_forgets_pushed_markers_after_the_message_expires() {
    with_timeout(async {
        let (_dir, store) = fresh().await;
        let account = [8u8; 32];
        store.upsert_subscription(sub([2; 16], T0 + DAY)).await.unwrap();
        assert_eq!(
            store
                .put_message(msg(&account, b"m", T0, T0 + 10))
                .await
                .unwrap()
                .jobs_enqueued,
            1
        );
        let jobs = store.claim_jobs("a", T0, 1000, 10).await.unwrap();
        store.finish_job(&jobs[0], JobOutcome::Delivered).await.unwrap();
        assert_eq!(store.sweep_expired(T0 + 100, 1).await.unwrap(), 1);
        assert_eq!(
            store.sweep_expired(T0 + 100, 100).await.unwrap(),
            1,
            "the marker goes after the message"
        );
        assert_eq!(store.sweep_expired(T0 + 100, 100).await.unwrap(), 0);
    })
    .await;
}

/// Rough throughput of acknowledged Stores with 64 concurrent clients; prints, asserts nothing.
///
/// `cargo test -p tidings-relay --release store::redb::tests::throughput -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, run by hand"]
async fn throughput_of_concurrent_puts() {
    const CLIENTS: usize = 64;
    const PUTS: usize = 500;
    let (_dir, store) = fresh().await;
    for (label, with_sub) in [("no subscription", false), ("one subscription each", true)] {
        let start = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..CLIENTS {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                let account: Account = tidings_proto::random_bytes();
                let index: AccountIndex = tidings_proto::random_bytes();
                if with_sub {
                    store
                        .upsert_subscription(Subscription {
                            account_index: index,
                            ..sub([c as u8; 16], T0 + DAY)
                        })
                        .await
                        .unwrap();
                }
                for i in 0..PUTS {
                    let data = [&(i as u64).to_be_bytes()[..], &[0x5a; 192]].concat();
                    let m = NewMessage {
                        account_index: index,
                        ..msg(&account, &data, T0, T0 + DAY)
                    };
                    store.put_message(m).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{label}: {} puts in {secs:.2}s = {:.0} puts/s",
            CLIENTS * PUTS,
            (CLIENTS * PUTS) as f64 / secs
        );
    }
}
