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
    let store = RedbStore::open(dir.path(), crate::store::linkage::test_keys()).unwrap();
    (dir, Arc::new(store))
}

crate::store_conformance_tests!(fresh);

fn msg(account: &Account, data: &[u8], created_ms: i64, expires_ms: i64) -> NewMessage {
    NewMessage {
        account: *account,
        account_index: AccountIndex([1; 32]),
        namespace: 20,
        hash: tidings_proto::hash::message_hash(account, 20, data),
        data: data.to_vec(),
        created_ms,
        expires_ms,
    }
}

fn sub(device_id: DeviceId, expires_ms: i64) -> Subscription {
    Subscription {
        account_index: AccountIndex([1; 32]),
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
        let account = Account([5u8; 32]);
        let (max_job, seq3) = {
            let store = RedbStore::open(dir.path(), crate::store::linkage::test_keys()).unwrap();
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
            let store = RedbStore::open(dir.path(), crate::store::linkage::test_keys()).unwrap();
            let page = store.get_messages(&account, 20, 0, 10, T0).await.unwrap();
            assert_eq!(
                page.messages.iter().map(|m| m.data.clone()).collect::<Vec<_>>(),
                [b"2", b"3"]
            );
            assert_eq!(
                store
                    .get_subscription(&AccountIndex([1; 32]), &[9; 16])
                    .await
                    .unwrap(),
                Some(sub([9; 16], T0 + DAY))
            );
            assert_eq!(store.outbox_stats().await.unwrap().depth, 3);
            // Leases live in memory: the restart voided the one taken before it.
            assert_eq!(store.claim_jobs("b", T0 + 10, 1000, 10).await.unwrap().len(), 3);
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
        let store = RedbStore::open(dir.path(), crate::store::linkage::test_keys()).unwrap();
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
    drop(RedbStore::open(dir.path(), crate::store::linkage::test_keys()).unwrap());
    {
        let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(tables::META)
            .unwrap()
            .insert(tables::META_SCHEMA, 99)
            .unwrap();
        txn.commit().unwrap();
    }
    let err = RedbStore::open(dir.path(), crate::store::linkage::test_keys()).unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { reason: m, .. } if m.contains("99")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_foreign_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(FILE_NAME), vec![0x42; 8192]).unwrap();
    assert!(RedbStore::open(dir.path(), crate::store::linkage::test_keys()).is_err());

    let other = tempfile::tempdir().unwrap();
    {
        let db = Database::create(other.path().join(FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        let def: ::redb::TableDefinition<u64, u64> = ::redb::TableDefinition::new("mailboxes");
        txn.open_table(def).unwrap().insert(1, 2).unwrap();
        txn.commit().unwrap();
    }
    let err = RedbStore::open(other.path(), crate::store::linkage::test_keys()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
}

#[tokio::test]
async fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = RedbStore::open(dir.path(), crate::store::linkage::test_keys()).unwrap();
    let err = RedbStore::open(dir.path(), crate::store::linkage::test_keys()).unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
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
    RedbStore::with_opener(
        Box::new(move || {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| StoreError::unavailable(e.to_string()))?;
            let backend = FlakyBackend {
                inner: FileBackend::new(file).map_err(open_error)?,
                full: Arc::clone(&full),
            };
            let db = Database::builder()
                .create_with_backend(backend)
                .map_err(open_error)?;
            tables::init_schema(&db, &crate::store::linkage::test_keys()).map_err(op_error)?;
            Ok(db)
        }),
        crate::store::linkage::test_keys(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_full_disk_fails_writes_cleanly_and_the_store_recovers() {
    with_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        let full = Arc::new(AtomicBool::new(false));
        let store = flaky_store(dir.path(), Arc::clone(&full));
        let account = Account([3u8; 32]);
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
            matches!(&err, StoreError::Unavailable { reason: m, .. } if m.contains("disk full")),
            "{err:?}"
        );
        // The io error is kept underneath, so code can act on its kind, not on the text.
        assert_eq!(
            err.cause_as::<std::io::Error>().map(std::io::Error::kind),
            Some(std::io::ErrorKind::StorageFull),
            "{err:?}"
        );
        let err = store.check_writable().await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");

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
        let store = Arc::new(RedbStore::open(dir.path(), crate::store::linkage::test_keys()).unwrap());
        // A subscription record that cannot be decoded makes the fan-out of its account fail.
        let bad_index = AccountIndex([0xbb; 32]);
        {
            let db = store.shared.db.read().unwrap();
            let txn = db.as_ref().unwrap().begin_write().unwrap();
            txn.open_table(tables::ACCOUNTS)
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
        let account = Account([4u8; 32]);
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
        assert!(matches!(bad.await.unwrap(), Err(StoreError::Corrupt { .. })));
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
        let store = Arc::new(RedbStore::open(dir.path(), crate::store::linkage::test_keys()).unwrap());
        let account = Account([6u8; 32]);
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
        let store = RedbStore::open(dir.path(), crate::store::linkage::test_keys()).unwrap();
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
        let account = Account([8u8; 32]);
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
/// `cargo test -p tidings-relay --release --lib store::redb::tests::throughput -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, run by hand"]
async fn throughput_of_concurrent_puts() {
    const CLIENTS: usize = 64;
    const PUTS: usize = 500;
    let (_dir, store) = fresh().await;
    let phases = [
        ("each put to another mailbox, no subscription", false),
        ("one mailbox per client, one live subscription each", true),
    ];
    for (label, subscribed) in phases {
        let start = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..CLIENTS {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                let mut account: Account = Account(tidings_proto::random_bytes());
                let index: AccountIndex = AccountIndex(tidings_proto::random_bytes());
                if subscribed {
                    let live = Subscription {
                        account_index: index,
                        ..sub([c as u8; 16], wall_ms() + DAY)
                    };
                    store.upsert_subscription(live).await.unwrap();
                }
                for i in 0..PUTS {
                    if !subscribed {
                        account = Account(tidings_proto::random_bytes());
                    }
                    let data = [&(i as u64).to_be_bytes()[..], &[0x5a; 192]].concat();
                    let now = wall_ms();
                    let m = NewMessage {
                        account_index: index,
                        ..msg(&account, &data, now, now + 14 * DAY)
                    };
                    let out = store.put_message(m).await.unwrap();
                    assert_eq!(out.jobs_enqueued, u32::from(subscribed));
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let secs = start.elapsed().as_secs_f64();
        let n = CLIENTS * PUTS;
        println!("{label}: {n} puts in {secs:.2}s = {:.0} puts/s", n as f64 / secs);
    }
}

/// The same measurement without the write-ahead log (every batch commits durably in redb),
/// for comparison on the same machine at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, run by hand"]
async fn throughput_of_concurrent_puts_without_log() {
    const CLIENTS: usize = 64;
    const PUTS: usize = 500;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let store = Arc::new(
        RedbStore::with_opener(
            Box::new(move || open_file(&path, &crate::store::linkage::test_keys(), DEFAULT_CACHE_BYTES)),
            crate::store::linkage::test_keys(),
        )
        .unwrap(),
    );
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            for i in 0..PUTS {
                let account: Account = Account(tidings_proto::random_bytes());
                let data = [&(i as u64).to_be_bytes()[..], &[0x5a; 192]].concat();
                let now = wall_ms();
                store
                    .put_message(msg(&account, &data, now, now + 14 * DAY))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let n = CLIENTS * PUTS;
    println!(
        "without log, each put to another mailbox: {n} puts in {secs:.2}s = {:.0} puts/s",
        n as f64 / secs
    );
}

fn wall_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    now.as_millis() as i64
}

/// A store that checkpoints only when opened and closed, so its redb file lags the log.
fn lagging_store(dir: &Path) -> RedbStore {
    let never = Checkpoints {
        every: Duration::from_secs(3600),
        batches: u64::MAX,
    };
    RedbStore::open_with(
        dir,
        never,
        crate::store::linkage::test_keys(),
        DEFAULT_CACHE_BYTES,
    )
    .unwrap()
}

/// What a crash would leave on disk now: the files as the OS has them, with the live
/// store's non-durable redb commits and its un-checkpointed log.
fn crash_image(live: &Path) -> TempDir {
    let image = tempfile::tempdir().unwrap();
    for name in [FILE_NAME, wal::FILE_NAME] {
        std::fs::copy(live.join(name), image.path().join(name)).unwrap();
    }
    image
}

fn replay_of(store: &RedbStore) -> writer::Replay {
    store.shared.last_replay.lock().unwrap().clone().unwrap()
}

fn wal_bytes(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join(wal::FILE_NAME)).unwrap()
}

/// Offsets of the records of a log, and where it ends.
fn record_offsets(bytes: &[u8]) -> (Vec<usize>, usize) {
    let mut at = 0;
    let mut out = Vec::new();
    for record in wal::parse(bytes).0 {
        out.push(at);
        at += 16 + record.payload.len();
    }
    (out, at)
}

/// Puts messages "0".."n" one by one (one batch each) and returns their seqs.
async fn put_each(store: &RedbStore, account: &Account, n: u32) -> Vec<u64> {
    let mut seqs = Vec::new();
    for i in 0..n {
        let out = store
            .put_message(msg(account, i.to_string().as_bytes(), T0, T0 + DAY))
            .await
            .unwrap();
        seqs.push(out.seq);
    }
    seqs
}

async fn stored_seqs(store: &RedbStore, account: &Account) -> Vec<(u64, Vec<u8>)> {
    let page = store.get_messages(account, 20, 0, 1000, T0).await.unwrap();
    page.messages.into_iter().map(|m| (m.seq, m.data)).collect()
}

#[tokio::test]
async fn acknowledged_batches_survive_a_crash_without_checkpoint() {
    with_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        let account = Account([11u8; 32]);
        let store = lagging_store(dir.path());
        store.upsert_subscription(sub([3; 16], T0 + DAY)).await.unwrap();
        let seqs = put_each(&store, &account, 20).await;
        let jobs = store.claim_jobs("node-a", T0, 60_000, 5).await.unwrap();
        assert_eq!(jobs.len(), 5);
        store.finish_job(&jobs[0], JobOutcome::Delivered).await.unwrap();
        store
            .delete_messages(&account, 20, &[msg(&account, b"3", 0, 0).hash])
            .await
            .unwrap();
        let expected = stored_seqs(&store, &account).await;
        let expected_stats = store.outbox_stats().await.unwrap();
        assert_eq!(expected.len(), 19);
        assert_eq!(seqs.len(), 20);

        let image = crash_image(dir.path());
        drop(store);
        let store = RedbStore::open(image.path(), crate::store::linkage::test_keys()).unwrap();
        let replay = replay_of(&store);
        assert!(replay.applied > 0, "redb lagged the log: {replay:?}");
        assert_eq!(replay.stop, wal::Stop::End);
        assert_eq!(stored_seqs(&store, &account).await, expected);
        assert_eq!(store.outbox_stats().await.unwrap(), expected_stats);
        // The delivered job is gone; the crash voided the leases (they live in memory),
        // so every other job is claimable at once.
        let rest = store.claim_jobs("node-b", T0 + 1, 60_000, 100).await.unwrap();
        assert_eq!(rest.len(), 19);
        assert!(rest.iter().all(|j| j.id != jobs[0].id));
        let next = store
            .put_message(msg(&account, b"after", T0, T0 + DAY))
            .await
            .unwrap();
        assert_eq!(next.seq, seqs[19] + 1, "seqs continue after the replay");
        store.close().await.unwrap();
        assert!(
            wal::parse(&wal_bytes(image.path())).0.is_empty(),
            "close checkpoints and empties the log"
        );
    })
    .await;
}

#[tokio::test]
async fn a_torn_tail_record_is_ignored() {
    with_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        let account = Account([12u8; 32]);
        let store = lagging_store(dir.path());
        put_each(&store, &account, 5).await;
        let expected = stored_seqs(&store, &account).await;
        let image = crash_image(dir.path());
        drop(store);
        // A batch that was being appended when the process died: the next batch's header,
        // promising more bytes than made it to disk.
        let path = image.path().join(wal::FILE_NAME);
        let mut bytes = wal_bytes(image.path());
        let (offsets, end) = record_offsets(&bytes);
        assert_eq!(offsets.len(), 5, "one record per batch");
        let whole = end as u64;
        let mut torn = Vec::new();
        torn.extend_from_slice(&200u32.to_le_bytes());
        torn.extend_from_slice(&0x1234_5678u32.to_le_bytes());
        let next = wal::parse(&bytes).0.last().unwrap().batch + 1;
        torn.extend_from_slice(&next.to_le_bytes());
        torn.extend_from_slice(&[0xab; 30]);
        bytes[end..end + torn.len()].copy_from_slice(&torn);
        std::fs::write(&path, bytes).unwrap();

        let store = RedbStore::open(image.path(), crate::store::linkage::test_keys()).unwrap();
        assert_eq!(replay_of(&store).stop, wal::Stop::TornTail { offset: whole });
        assert_eq!(stored_seqs(&store, &account).await, expected);
        assert_eq!(
            store
                .put_message(msg(&account, b"next", T0, T0 + DAY))
                .await
                .unwrap()
                .seq,
            6
        );
    })
    .await;
}

#[tokio::test]
async fn a_corrupt_record_stops_the_replay_there() {
    with_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        let account = Account([13u8; 32]);
        let store = lagging_store(dir.path());
        put_each(&store, &account, 5).await;
        let image = crash_image(dir.path());
        drop(store);
        let path = image.path().join(wal::FILE_NAME);
        let mut bytes = wal_bytes(image.path());
        let (offsets, _) = record_offsets(&bytes);
        assert_eq!(offsets.len(), 5, "one record per batch");
        bytes[offsets[2] + 20] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();

        let store = RedbStore::open(image.path(), crate::store::linkage::test_keys()).unwrap();
        assert_eq!(
            replay_of(&store).stop,
            wal::Stop::Corrupt {
                offset: offsets[2] as u64
            }
        );
        assert_eq!(
            stored_seqs(&store, &account).await,
            [(1, b"0".to_vec()), (2, b"1".to_vec())],
            "the batches before the damage are replayed, none after"
        );
        // The damaged log was emptied, so new batches are not stuck behind the damage.
        store
            .put_message(msg(&account, b"new", T0, T0 + DAY))
            .await
            .unwrap();
        let image2 = crash_image(image.path());
        drop(store);
        let store = RedbStore::open(image2.path(), crate::store::linkage::test_keys()).unwrap();
        assert_eq!(stored_seqs(&store, &account).await.len(), 3);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_replay_to_the_same_state() {
    with_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(lagging_store(dir.path()));
        store.upsert_subscription(sub([4; 16], T0 + DAY)).await.unwrap();
        let mut tasks = Vec::new();
        for c in 0..16u8 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                let account = Account([c; 32]);
                let mut acked = Vec::new();
                for i in 0..20u32 {
                    let m = msg(&account, &i.to_be_bytes(), T0, T0 + DAY);
                    acked.push(store.put_message(m).await.unwrap().seq);
                }
                acked
            }));
        }
        let mut acked = Vec::new();
        for t in tasks {
            acked.push(t.await.unwrap());
        }
        let claimed = store.claim_jobs("n", T0, 1000, 50).await.unwrap();
        let image = crash_image(dir.path());
        let reopened = RedbStore::open(image.path(), crate::store::linkage::test_keys()).unwrap();
        for (c, seqs) in acked.iter().enumerate() {
            let account = Account([c as u8; 32]);
            let got: Vec<u64> = stored_seqs(&reopened, &account)
                .await
                .iter()
                .map(|m| m.0)
                .collect();
            assert_eq!(&got, seqs);
            assert_eq!(
                stored_seqs(&reopened, &account).await,
                stored_seqs(&store, &account).await
            );
        }
        assert_eq!(
            reopened.outbox_stats().await.unwrap(),
            store.outbox_stats().await.unwrap()
        );
        let more_live = store.claim_jobs("n", T0, 1000, 1000).await.unwrap();
        // The reopened store has no leases (they live in memory): it hands out all jobs.
        let all_replayed = reopened.claim_jobs("n", T0, 1000, 1000).await.unwrap();
        assert_eq!(claimed.len(), 50);
        assert_eq!(
            [claimed, more_live].concat(),
            all_replayed,
            "job ids and seqs replay identically"
        );
    })
    .await;
}

#[tokio::test]
async fn a_job_sealed_under_another_key_is_dropped_when_claimed() {
    with_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        let account = Account([12u8; 32]);
        {
            let store = RedbStore::open(dir.path(), crate::store::linkage::test_keys()).unwrap();
            store.upsert_subscription(sub([6; 16], T0 + DAY)).await.unwrap();
            store
                .put_message(msg(&account, b"x", T0, T0 + DAY))
                .await
                .unwrap();
            store.close().await.unwrap();
        }
        let other = crate::store::linkage::StoreKeys::new([1; 32], [2; 32]);
        let store = RedbStore::open(dir.path(), other).unwrap();
        assert_eq!(store.outbox_stats().await.unwrap().depth, 1);
        assert!(store.claim_jobs("a", T0, 1000, 10).await.unwrap().is_empty());
        assert_eq!(
            store.outbox_stats().await.unwrap().depth,
            0,
            "the undeliverable job is removed, not skipped forever"
        );
    })
    .await;
}

/// While the writer holds the database handle (reopening the file after an I/O error can
/// read all of it), a Store's span check must not block the runtime thread it runs on.
#[tokio::test(flavor = "current_thread")]
async fn a_span_check_does_not_stall_the_runtime_while_the_handle_is_held() {
    with_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path(), crate::store::linkage::test_keys()).unwrap();
        let alive = Arc::new(AtomicBool::new(false));
        let (locked_tx, locked_rx) = tokio::sync::oneshot::channel();
        let holder = {
            let (shared, alive) = (Arc::clone(&store.shared), Arc::clone(&alive));
            std::thread::spawn(move || {
                let _handle = shared.db.write().unwrap();
                locked_tx.send(()).unwrap();
                let give_up = Instant::now() + Duration::from_secs(10);
                while !alive.load(Ordering::Acquire) && Instant::now() < give_up {
                    std::thread::sleep(Duration::from_millis(1));
                }
                alive.load(Ordering::Acquire)
            })
        };
        locked_rx.await.unwrap();
        // Runs only if the span check yields this (only) runtime thread.
        let flag = Arc::clone(&alive);
        tokio::spawn(async move { flag.store(true, Ordering::Release) });
        assert_eq!(store.seq_span(&Account([1; 32]), 20).await.unwrap(), 0);
        assert!(
            holder.join().unwrap(),
            "the runtime ran other tasks while the handle was held"
        );
    })
    .await;
}
