//! Tests of the PostgreSQL backend: the conformance suite, then what only several nodes
//! on one database can show. Each test works in its own schema ([`TestSchema`]) and
//! skips visibly when no PostgreSQL is reachable.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::testing::TestSchema;
use super::*;
use crate::store::conformance;

const T0: i64 = 1_700_000_000_000;
const DAY: i64 = 86_400_000;
const NS: u32 = 20;

/// A store on a fresh schema, or `None` after a SKIPPED line.
async fn fresh(test: &str) -> Option<(TestSchema, Arc<dyn Store>)> {
    let schema = TestSchema::create(test).await?;
    let store = PostgresStore::open(schema.url(), crate::store::linkage::test_keys())
        .await
        .unwrap();
    Some((schema, Arc::new(store)))
}

async fn with_timeout<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("test timed out")
}

/// The conformance suite. `store_conformance_tests!` cannot skip, so the tests are
/// listed here; `every_conformance_test_runs_here` keeps the list complete.
macro_rules! pg_conformance_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some((_schema, store)) = fresh(stringify!($name)).await else { return };
                with_timeout(conformance::$name(&*store)).await;
            }
        )*
        const LISTED: &[&str] = &[$(stringify!($name)),*];
    };
}

pg_conformance_tests!(
    seq_strictly_increasing_and_never_reused,
    restore_is_idempotent,
    paging_with_limit_and_more,
    expired_messages_are_hidden_and_swept,
    delete_counts_existing,
    subscriptions_add_replace_remove,
    jobs_fan_out_to_matching_namespaces,
    no_job_for_duplicate_store,
    claim_leases_and_takeover,
    finish_after_losing_the_lease_changes_nothing,
    job_outcomes,
    same_device_and_hash_enqueued_once,
    remove_subscription_drops_pending_jobs,
    sweep_removes_expired_subscriptions,
    outbox_stats_report_depth_and_oldest,
    check_writable_when_healthy,
    closed_store_refuses_work,
    count_messages_per_mailbox,
    count_messages_after_a_seq,
    seq_span_bounds_the_count,
    remove_subscription_only_when_it_expires_by,
    push_inputs_match_the_single_reads,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_get_distinct_increasing_seqs() {
    let Some((_schema, store)) = fresh("concurrent_puts_get_distinct_increasing_seqs").await else {
        return;
    };
    tokio::time::timeout(
        Duration::from_secs(120),
        conformance::concurrent_puts_get_distinct_increasing_seqs(store),
    )
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_racing_finishes_take_each_job_once() {
    let Some((_schema, store)) = fresh("claims_racing_finishes_take_each_job_once").await else {
        return;
    };
    tokio::time::timeout(
        Duration::from_secs(120),
        conformance::claims_racing_finishes_take_each_job_once(store),
    )
    .await
    .expect("test timed out");
}

#[test]
fn every_conformance_test_runs_here() {
    let source = include_str!("../conformance.rs");
    let mut listed: HashSet<&str> = LISTED.iter().copied().collect();
    listed.insert("concurrent_puts_get_distinct_increasing_seqs");
    listed.insert("claims_racing_finishes_take_each_job_once");
    for line in source.lines() {
        let Some(rest) = line.strip_prefix("pub async fn ") else {
            continue;
        };
        let name = rest.split('(').next().unwrap_or_default();
        assert!(
            listed.contains(name),
            "conformance test {name} is not run against PostgreSQL"
        );
    }
}

struct Fixture {
    account: Account,
    index: AccountIndex,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            account: crate::store::Account(tidings_proto::random_bytes()),
            index: crate::store::AccountIndex(tidings_proto::random_bytes()),
        }
    }

    fn msg(&self, data: &[u8]) -> NewMessage {
        NewMessage {
            account: self.account,
            account_index: self.index,
            namespace: NS,
            hash: tidings_proto::hash::message_hash(&self.account, NS, data),
            data: data.to_vec(),
            created_ms: T0,
            expires_ms: T0 + DAY,
        }
    }

    fn sub(&self) -> Subscription {
        Subscription {
            account_index: self.index,
            device_id: tidings_proto::random_bytes(),
            namespaces: vec![NS],
            want_data: false,
            sealed: b"sealed".to_vec(),
            expires_ms: T0 + DAY,
        }
    }
}

/// Two stores on one schema: two relay nodes.
async fn two_nodes(test: &str) -> Option<(TestSchema, Arc<PostgresStore>, Arc<PostgresStore>)> {
    let schema = TestSchema::create(test).await?;
    let a = PostgresStore::open(schema.url(), crate::store::linkage::test_keys())
        .await
        .unwrap();
    let b = PostgresStore::open(schema.url(), crate::store::linkage::test_keys())
        .await
        .unwrap();
    Some((schema, Arc::new(a), Arc::new(b)))
}

/// Stores from both nodes into one mailbox get distinct seqs, and a reader following
/// the mailbox by `after_seq` meanwhile misses none: seqs become visible in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_store_into_one_mailbox_in_order() {
    const TASKS: usize = 16;
    const PER_TASK: usize = 10;
    let Some((_schema, a, b)) = two_nodes("two_nodes_store_into_one_mailbox_in_order").await else {
        return;
    };
    with_timeout(async {
        let f = Arc::new(Fixture::new());
        let mut writers = Vec::new();
        for task in 0..TASKS {
            let store: Arc<dyn Store> = if task % 2 == 0 { a.clone() } else { b.clone() };
            let f = Arc::clone(&f);
            writers.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..PER_TASK {
                    let out = store
                        .put_message(f.msg(format!("{task}/{i}").as_bytes()))
                        .await
                        .unwrap();
                    seqs.push(out.seq);
                }
                seqs
            }));
        }
        let reader = {
            let (b, f) = (b.clone(), Arc::clone(&f));
            tokio::spawn(async move {
                let (mut seen, mut after) = (Vec::new(), 0);
                let mut progress = std::time::Instant::now();
                while seen.len() < TASKS * PER_TASK {
                    let page = b.get_messages(&f.account, NS, after, 7, T0).await.unwrap();
                    if !page.messages.is_empty() {
                        progress = std::time::Instant::now();
                    } else if progress.elapsed() > Duration::from_secs(20) {
                        // Stalled: a seq below `after` that shows up only now was skipped
                        // (it became visible after a higher one). Stop, so the assertion
                        // below names it instead of the test timing out.
                        break;
                    }
                    for m in page.messages {
                        assert!(m.seq > after);
                        after = m.seq;
                        seen.push(m.seq);
                    }
                    tokio::task::yield_now().await;
                }
                seen
            })
        };
        let mut all = HashSet::new();
        for w in writers {
            let seqs = w.await.unwrap();
            assert!(seqs.windows(2).all(|w| w[0] < w[1]));
            all.extend(seqs);
        }
        assert_eq!(all.len(), TASKS * PER_TASK, "seqs must be distinct across nodes");
        let seen: HashSet<u64> = reader.await.unwrap().into_iter().collect();
        let mut missed: Vec<_> = all.difference(&seen).collect();
        missed.sort();
        assert!(
            missed.is_empty(),
            "the reader, following by after_seq, skipped seqs {missed:?}"
        );
        assert_eq!(seen, all);
    })
    .await;
}

/// The same message stored through both nodes at once is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_storing_the_same_message_store_it_once() {
    let Some((_schema, a, b)) = two_nodes("two_nodes_storing_the_same_message_store_it_once").await else {
        return;
    };
    with_timeout(async {
        let f = Fixture::new();
        a.upsert_subscription(f.sub()).await.unwrap();
        for round in 0..20u8 {
            let m = f.msg(&[round]);
            let (x, y) = tokio::join!(a.put_message(m.clone()), b.put_message(m));
            let (x, y) = (x.unwrap(), y.unwrap());
            assert_eq!(x.seq, y.seq);
            assert!(x.duplicate != y.duplicate, "exactly one of them stored it");
            assert_eq!(x.jobs_enqueued + y.jobs_enqueued, 1);
        }
        assert_eq!(a.outbox_stats().await.unwrap().depth, 20);
    })
    .await;
}

/// A job leased by node A is invisible to node B until A's lease ends; then B takes
/// it over. Claims racing from both nodes never hand out a job twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_hides_a_job_from_the_other_node_until_it_ends() {
    let Some((_schema, a, b)) = two_nodes("lease_hides_a_job_from_the_other_node_until_it_ends").await else {
        return;
    };
    with_timeout(async {
        let f = Fixture::new();
        a.upsert_subscription(f.sub()).await.unwrap();
        a.put_message(f.msg(b"one")).await.unwrap();
        let held = a.claim_jobs("node-a", T0, 30_000, 10).await.unwrap();
        assert_eq!(held.len(), 1);
        assert!(
            b.claim_jobs("node-b", T0 + 29_999, 30_000, 10)
                .await
                .unwrap()
                .is_empty()
        );
        let taken = b.claim_jobs("node-b", T0 + 30_000, 30_000, 10).await.unwrap();
        assert_eq!(taken.iter().map(|j| j.id).collect::<Vec<_>>(), vec![held[0].id]);
        b.finish_job(&taken[0], JobOutcome::Delivered).await.unwrap();

        for i in 0..60u8 {
            a.put_message(f.msg(&[b'x', i])).await.unwrap();
        }
        let claim_all = |store: Arc<PostgresStore>, node: &'static str| async move {
            let mut ids = Vec::new();
            loop {
                let jobs = store.claim_jobs(node, T0 + 60_000, 60_000, 3).await.unwrap();
                if jobs.is_empty() {
                    return ids;
                }
                ids.extend(jobs.iter().map(|j| j.id));
            }
        };
        let (x, y) = tokio::join!(
            tokio::spawn(claim_all(a.clone(), "node-a")),
            tokio::spawn(claim_all(b.clone(), "node-b"))
        );
        let (x, y) = (x.unwrap(), y.unwrap());
        let all: HashSet<u64> = x.iter().chain(&y).copied().collect();
        assert_eq!(all.len(), x.len() + y.len(), "a job was claimed by both nodes");
        assert_eq!(all.len(), 60);
    })
    .await;
}

/// A Store on node A reaches node B's (and A's own) arrivals; a duplicate Store does
/// not notify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrivals_from_one_node_reach_the_other() {
    let Some((_schema, a, b)) = two_nodes("arrivals_from_one_node_reach_the_other").await else {
        return;
    };
    with_timeout(async {
        let f = Fixture::new();
        let mut on_b = b.arrivals().unwrap();
        let mut on_a = a.arrivals().unwrap();
        // The listeners connect in the background; store until B hears one.
        let mut n = 0u32;
        let heard = loop {
            n += 1;
            a.put_message(f.msg(&n.to_be_bytes())).await.unwrap();
            match tokio::time::timeout(Duration::from_millis(500), next_for(&mut on_b, &f.account)).await {
                Ok(arrival) => break arrival,
                Err(_) => continue,
            }
        };
        assert_eq!(heard, (f.account, NS));
        assert_eq!(next_for(&mut on_a, &f.account).await, (f.account, NS));

        let other = Fixture::new();
        b.put_message(other.msg(b"from b")).await.unwrap();
        assert_eq!(next_for(&mut on_a, &other.account).await, (other.account, NS));
    })
    .await;
}

/// The next arrival for `account` (other tests' schemas share the channel).
async fn next_for(rx: &mut broadcast::Receiver<(Account, u32)>, account: &Account) -> (Account, u32) {
    loop {
        match rx.recv().await {
            Ok(arrival) if arrival.0 == *account => return arrival,
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(e) => panic!("arrivals closed: {e}"),
        }
    }
}

/// Migrations run by several nodes at once apply once; running them again does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_idempotent_and_safe_concurrently() {
    let Some(schema) = TestSchema::create("migrations_are_idempotent_and_safe_concurrently").await else {
        return;
    };
    with_timeout(async {
        let runs: Vec<_> = (0..4)
            .map(|_| tokio::spawn(migrate_owned(schema.url().to_owned())))
            .collect();
        let mut applied = Vec::new();
        for r in runs {
            let report = r.await.unwrap().unwrap();
            assert_eq!(report.version, 2);
            applied.extend(report.applied);
        }
        assert_eq!(applied, vec![1, 2], "exactly one run applies the migrations");
        let again = migrate(schema.url()).await.unwrap();
        assert!(again.applied.is_empty());
        // Stores open on the migrated schema and migrate nothing more.
        let store = PostgresStore::open(schema.url(), crate::store::linkage::test_keys())
            .await
            .unwrap();
        store.check_writable().await.unwrap();
        store.close().await.unwrap();
    })
    .await;
}

async fn migrate_owned(url: String) -> Result<MigrationReport, StoreError> {
    migrate(&url).await
}

/// A database whose recorded migration differs from this binary's is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_migration_is_refused() {
    let Some((schema, store)) = fresh("an_edited_migration_is_refused").await else {
        return;
    };
    with_timeout(async {
        store.close().await.unwrap();
        let (client, conn) = parse_url(schema.url()).unwrap().connect(NoTls).await.unwrap();
        tokio::spawn(conn);
        client
            .batch_execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
            .await
            .unwrap();
        let e = PostgresStore::open(schema.url(), crate::store::linkage::test_keys())
            .await
            .unwrap_err();
        assert!(
            matches!(&e, StoreError::Corrupt { reason: m, .. } if m.contains("differs")),
            "{e}"
        );
    })
    .await;
}

/// A read-only database (a standby, a full disk put in read-only mode) opens, and every
/// write fails as unavailable, naming the cause; reads keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_database_is_unavailable_for_writes() {
    let Some((schema, store)) = fresh("read_only_database_is_unavailable_for_writes").await else {
        return;
    };
    with_timeout(async {
        let f = Fixture::new();
        store.put_message(f.msg(b"before")).await.unwrap();
        let ro = PostgresStore::open(
            &schema.url_with_options("-c default_transaction_read_only=on"),
            crate::store::linkage::test_keys(),
        )
        .await
        .unwrap();
        let unavailable = |r: Result<(), StoreError>| {
            assert!(
                matches!(&r, Err(StoreError::Unavailable { reason: m, .. }) if m.contains("read-only")),
                "{r:?}"
            );
            // The SQLSTATE is kept underneath; the driver's error (with DETAIL) is not.
            let sql = r
                .as_ref()
                .err()
                .and_then(|e| e.cause_as::<crate::store::postgres::SqlError>());
            assert_eq!(sql.map(|s| s.code.as_str()), Some("25006"), "{r:?}");
        };
        unavailable(ro.check_writable().await);
        unavailable(ro.put_message(f.msg(b"after")).await.map(drop));
        unavailable(ro.sweep_expired(T0, 10).await.map(drop));
        assert_eq!(
            ro.get_messages(&f.account, NS, 0, 10, T0)
                .await
                .unwrap()
                .messages
                .len(),
            1
        );
    })
    .await;
}

/// No server at the address: opening fails as unavailable with the cause, no panic.
#[tokio::test]
async fn unreachable_database_is_unavailable() {
    let options = PostgresOptions {
        connect_timeout: Duration::from_secs(2),
        ..PostgresOptions::default()
    };
    // Port 1 on loopback: nothing listens there, so the connection is refused.
    let config = parse_url("postgres://postgres@127.0.0.1:1/postgres").unwrap();
    let e = with_timeout(PostgresStore::open_with(
        config,
        options,
        crate::store::linkage::test_keys(),
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(&e, StoreError::Unavailable { reason: m, .. } if m.contains("connect")),
        "{e}"
    );
    assert!(e.cause_as::<tokio_postgres::Error>().is_some(), "{e:?}");
    let e = with_timeout(migrate("postgres://postgres@127.0.0.1:1/postgres"))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Unavailable { .. }), "{e}");
    let e = parse_url("postgres://u:hunter2@h:notaport/db").unwrap_err();
    assert!(!e.to_string().contains("hunter2"), "{e}");
}

/// Sweeps from two nodes at once remove each expired entry once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sweeps_remove_each_entry_once() {
    let Some((_schema, a, b)) = two_nodes("concurrent_sweeps_remove_each_entry_once").await else {
        return;
    };
    with_timeout(async {
        let f = Fixture::new();
        for i in 0..200u16 {
            let mut m = f.msg(&i.to_be_bytes());
            m.expires_ms = T0 + 10;
            a.put_message(m).await.unwrap();
        }
        let sweep = |s: Arc<PostgresStore>| async move {
            let mut total = 0;
            loop {
                let n = s.sweep_expired(T0 + 100, 7).await.unwrap();
                if n == 0 {
                    return total;
                }
                total += n;
            }
        };
        let (x, y) = tokio::join!(tokio::spawn(sweep(a.clone())), tokio::spawn(sweep(b.clone())));
        assert_eq!(x.unwrap() + y.unwrap(), 200);
    })
    .await;
}

/// `sslmode=require` means a verified server: the test server's certificate (self-signed,
/// or none at all) is refused as unavailable, naming TLS.
#[tokio::test]
async fn required_tls_refuses_an_unverified_server() {
    let Some(schema) = TestSchema::create("required_tls_refuses_an_unverified_server").await else {
        return;
    };
    let url = schema.url_with_options("");
    let url = if url.contains("://") {
        format!("{url}&sslmode=require")
    } else {
        format!("{url} sslmode=require")
    };
    let e = with_timeout(PostgresStore::open(&url, crate::store::linkage::test_keys()))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, StoreError::Unavailable { reason: m, .. } if m.contains("TLS")),
        "{e}"
    );
}

/// When the database drops the store's connections (a restart, a failover), calls fail
/// as unavailable at worst and then succeed on new connections, and the arrivals
/// listener reconnects by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_and_listener_recover_from_dropped_connections() {
    let Some(schema) = TestSchema::create("store_and_listener_recover_from_dropped_connections").await else {
        return;
    };
    with_timeout(async {
        let app = schema.name().to_owned();
        let url = format!("{}&application_name={app}", schema.url());
        let store = PostgresStore::open(&url, crate::store::linkage::test_keys())
            .await
            .unwrap();
        let mut arrivals = store.arrivals().unwrap();
        let f = Fixture::new();
        heard_after_put(&store, &f, &mut arrivals).await;

        let (admin, conn) = parse_url(schema.url()).unwrap().connect(NoTls).await.unwrap();
        tokio::spawn(conn);
        let killed: i64 = admin
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
                &[&app],
            )
            .await
            .unwrap()
            .get(0);
        assert!(killed >= 2, "the pool's connection and the listener's");

        let mut failures = 0;
        loop {
            match store.put_message(f.msg(b"after the drop")).await {
                Ok(_) => break,
                Err(StoreError::Unavailable { .. }) if failures < 16 => failures += 1,
                Err(e) => panic!("{e}"),
            }
        }
        heard_after_put(&store, &f, &mut arrivals).await;
    })
    .await;
}

/// Stores until the store's own listener hears one of them (it may be reconnecting).
async fn heard_after_put(store: &PostgresStore, f: &Fixture, rx: &mut broadcast::Receiver<(Account, u32)>) {
    let mut n = 0u32;
    loop {
        n += 1;
        if store.put_message(f.msg(&n.to_le_bytes())).await.is_err() {
            continue;
        }
        if tokio::time::timeout(Duration::from_millis(500), next_for(rx, &f.account))
            .await
            .is_ok()
        {
            return;
        }
    }
}

/// Two nodes storing into one mailbox at once, each with enough concurrent writers that
/// their batches carry several Stores of the mailbox (and of one message stored through
/// both nodes at once): no two messages get one seq, a message stored through both is
/// stored once, and readers following the mailbox by `after_seq` on either node while it
/// fills see every stored message, in increasing order: no seq becomes visible before a
/// smaller one (which such a reader would skip for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_batching_nodes_store_into_one_mailbox_without_collision_or_gap() {
    const TASKS: usize = 32;
    const PER_TASK: usize = 20;
    const SHARED_EVERY: usize = 5;
    let Some((_schema, a, b)) =
        two_nodes("two_batching_nodes_store_into_one_mailbox_without_collision_or_gap").await
    else {
        return;
    };
    tokio::time::timeout(Duration::from_secs(120), async {
        let f = Arc::new(Fixture::new());
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = |store: Arc<PostgresStore>| {
            let (f, done) = (Arc::clone(&f), Arc::clone(&done));
            tokio::spawn(async move {
                let (mut seen, mut after) = (Vec::new(), 0);
                loop {
                    let finished = done.load(std::sync::atomic::Ordering::Acquire);
                    let page = store.get_messages(&f.account, NS, after, 5, T0).await.unwrap();
                    if page.messages.is_empty() && finished {
                        return seen;
                    }
                    for m in page.messages {
                        assert!(m.seq > after, "pages ascend");
                        after = m.seq;
                        seen.push(m.seq);
                    }
                    tokio::task::yield_now().await;
                }
            })
        };
        let readers = [reader(a.clone()), reader(b.clone())];
        let mut writers = Vec::new();
        for task in 0..TASKS {
            let (a, b, f) = (a.clone(), b.clone(), Arc::clone(&f));
            writers.push(tokio::spawn(async move {
                let mine: Arc<PostgresStore> = if task % 2 == 0 { a.clone() } else { b.clone() };
                let (mut own, mut shared) = (Vec::new(), Vec::new());
                for i in 0..PER_TASK {
                    let out = mine
                        .put_message(f.msg(format!("{task}/{i}").as_bytes()))
                        .await
                        .unwrap();
                    assert!(!out.duplicate);
                    own.push(out.seq);
                    if i % SHARED_EVERY == 0 {
                        let m = f.msg(format!("shared/{i}").as_bytes());
                        let (x, y) = tokio::join!(a.put_message(m.clone()), b.put_message(m));
                        let (x, y) = (x.unwrap(), y.unwrap());
                        assert_eq!(x.seq, y.seq, "one message, one seq");
                        shared.push((i, x.seq, u8::from(!x.duplicate) + u8::from(!y.duplicate)));
                    }
                }
                (own, shared)
            }));
        }
        let mut own_seqs = HashSet::new();
        let mut shared_seqs: std::collections::HashMap<usize, u64> = std::collections::HashMap::new();
        let mut shared_stored = 0;
        for w in writers {
            let (own, shared) = w.await.unwrap();
            assert!(own.windows(2).all(|w| w[0] < w[1]), "one task's Stores ascend");
            for s in own {
                assert!(own_seqs.insert(s), "seq {s} handed out twice");
            }
            for (i, seq, stored) in shared {
                assert_eq!(
                    *shared_seqs.entry(i).or_insert(seq),
                    seq,
                    "shared/{i} has one seq"
                );
                shared_stored += usize::from(stored);
            }
        }
        assert_eq!(
            shared_stored,
            shared_seqs.len(),
            "each shared message stored exactly once, by one of its many Stores"
        );
        let mut all = own_seqs.clone();
        for s in shared_seqs.values() {
            assert!(
                all.insert(*s),
                "a shared message's seq {s} collides with another message"
            );
        }
        assert_eq!(all.len(), TASKS * PER_TASK + PER_TASK.div_ceil(SHARED_EVERY));
        done.store(true, std::sync::atomic::Ordering::Release);
        for r in readers {
            let seen = r.await.unwrap();
            assert_eq!(
                seen.len(),
                all.len(),
                "a reader skipped a message, or saw one twice"
            );
            assert_eq!(seen.into_iter().collect::<HashSet<_>>(), all);
        }
        let listed: Vec<u64> = a
            .get_messages(&f.account, NS, 0, 10_000, T0)
            .await
            .unwrap()
            .messages
            .iter()
            .map(|m| m.seq)
            .collect();
        assert_eq!(listed.len(), all.len());
    })
    .await
    .expect("test timed out");
}

/// Writes sent at the same moment share transactions, and each caller still gets its own
/// answer (seqs distinct, increasing in a mailbox, subscriptions added).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_transactions() {
    let Some(schema) = TestSchema::create("concurrent_writes_share_transactions").await else {
        return;
    };
    with_timeout(async {
        let store = PostgresStore::open(schema.url(), crate::store::linkage::test_keys())
            .await
            .unwrap();
        let f = Fixture::new();
        let subs: Vec<_> = (0..50).map(|_| f.sub()).collect();
        let added =
            futures_util::future::join_all(subs.iter().map(|s| store.upsert_subscription(s.clone()))).await;
        assert!(added.into_iter().all(|r| r.unwrap()));
        let puts =
            futures_util::future::join_all((0..200u32).map(|i| store.put_message(f.msg(&i.to_be_bytes()))))
                .await;
        let mut seqs = HashSet::new();
        for out in puts {
            let out = out.unwrap();
            assert!(!out.duplicate);
            assert_eq!(out.jobs_enqueued, 50);
            assert!(seqs.insert(out.seq));
        }
        assert_eq!(
            seqs,
            (1..=200).collect::<HashSet<u64>>(),
            "no seq skipped or reused"
        );
        assert_eq!(store.outbox_stats().await.unwrap().depth, 200 * 50);
        // 250 writes were queued within moments of each other while at most two batches
        // were in flight, so batches carried several.
        let (batches, writes, _, split) = store.writer_stats();
        assert_eq!(writes, 250);
        assert!(batches < writes, "{batches} transactions for {writes} writes");
        assert_eq!(split, 0);
        store.close().await.unwrap();
    })
    .await;
}

/// A batch with a write that cannot be done (here: a mailbox whose counter is exhausted)
/// fails that write alone: the batch runs its writes one by one, and the others succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_write_fails_alone_in_its_batch() {
    let Some((schema, store)) = open_concrete("a_failing_write_fails_alone_in_its_batch").await else {
        return;
    };
    with_timeout(async {
        let (full, ok) = (Fixture::new(), Fixture::new());
        let (admin, conn) = parse_url(schema.url()).unwrap().connect(NoTls).await.unwrap();
        tokio::spawn(conn);
        admin
            .execute(
                "INSERT INTO mailbox_counters (account, namespace, last_seq) VALUES ($1, $2, 9223372036854775807)",
                &[&&full.account[..], &i64::from(NS)],
            )
            .await
            .unwrap();
        store.upsert_subscription(ok.sub()).await.unwrap();
        let sub = ok.sub();
        let (r1, a1) = tokio::sync::oneshot::channel();
        let (r2, a2) = tokio::sync::oneshot::channel();
        let (r3, a3) = tokio::sync::oneshot::channel();
        let (r4, a4) = tokio::sync::oneshot::channel();
        store
            .writer
            .commit_together(vec![
                writer::Request::Subscribe(sub.clone(), r1),
                writer::Request::Put(ok.msg(b"before"), r2),
                writer::Request::Put(full.msg(b"no seq left"), r3),
                writer::Request::Put(ok.msg(b"after"), r4),
            ])
            .await;
        assert!(a1.await.unwrap().unwrap(), "the subscription is added");
        let before = a2.await.unwrap().unwrap();
        assert!(
            matches!(a3.await.unwrap(), Err(StoreError::Unavailable { .. })),
            "the exhausted mailbox's Store fails"
        );
        let after = a4.await.unwrap().unwrap();
        // The new subscription may or may not have been committed before them.
        assert!(before.jobs_enqueued >= 1 && after.jobs_enqueued >= 1);
        assert!(before.seq != after.seq && !before.duplicate && !after.duplicate);
        assert_eq!(store.writer_stats().3, 1, "the batch was split into single writes");
        assert_eq!(store.get_messages(&ok.account, NS, 0, 10, T0).await.unwrap().messages.len(), 2);
        assert!(store.get_messages(&full.account, NS, 0, 10, T0).await.unwrap().messages.is_empty());
        assert!(store.get_subscription(&ok.index, &sub.device_id).await.unwrap().is_some());
    })
    .await;
}

/// In one batch, a repeated message is a duplicate whose seq goes back to the counter (the
/// batch's new messages follow the last seq without a hole), and a message whose
/// original expired is stored anew with a new seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_repeats_and_replaces_exactly_like_single_stores() {
    let Some((_schema, store)) =
        open_concrete("a_batch_repeats_and_replaces_exactly_like_single_stores").await
    else {
        return;
    };
    with_timeout(async {
        let f = Fixture::new();
        store.upsert_subscription(f.sub()).await.unwrap();
        let first = store.put_message(f.msg(b"first")).await.unwrap();
        let mut short = f.msg(b"short");
        short.expires_ms = T0 + 10;
        let short_out = store.put_message(short.clone()).await.unwrap();
        let mut again_short = short.clone();
        again_short.created_ms = T0 + 100;
        again_short.expires_ms = T0 + DAY;
        let mut later_first = f.msg(b"first");
        later_first.created_ms = T0 + 100;
        let mut replies = Vec::new();
        let mut requests = Vec::new();
        for m in [later_first, f.msg(b"new one"), again_short, f.msg(b"new two")] {
            let (r, a) = tokio::sync::oneshot::channel();
            requests.push(writer::Request::Put(m, r));
            replies.push(a);
        }
        store.writer.commit_together(requests).await;
        let mut out = Vec::new();
        for a in replies {
            out.push(a.await.unwrap().unwrap());
        }
        assert!(out[0].duplicate);
        assert_eq!(
            (out[0].seq, out[0].expires_ms, out[0].jobs_enqueued),
            (first.seq, T0 + DAY, 0)
        );
        assert!(!out[1].duplicate && !out[2].duplicate && !out[3].duplicate);
        assert_eq!(
            (out[1].seq, out[2].seq, out[3].seq),
            (short_out.seq + 1, short_out.seq + 2, short_out.seq + 3),
            "new messages follow the last seq in queue order, the duplicate's seq given back"
        );
        assert_eq!(
            out[2].jobs_enqueued, 0,
            "the replaced message's device was pushed it already"
        );
        assert_eq!(out[1].jobs_enqueued, 1);
        let next = store.put_message(f.msg(b"next")).await.unwrap();
        assert_eq!(next.seq, short_out.seq + 4);
        let page = store.get_messages(&f.account, NS, 0, 10, T0 + 100).await.unwrap();
        let seqs: Vec<u64> = page.messages.iter().map(|m| m.seq).collect();
        assert_eq!(
            seqs,
            vec![first.seq, out[1].seq, out[2].seq, out[3].seq, next.seq],
            "the expired original is gone, its replacement listed"
        );
    })
    .await;
}

/// A store on a fresh schema as its concrete type (its writer reachable).
async fn open_concrete(test: &str) -> Option<(TestSchema, PostgresStore)> {
    let schema = TestSchema::create(test).await?;
    let store = PostgresStore::open(schema.url(), crate::store::linkage::test_keys())
        .await
        .unwrap();
    Some((schema, store))
}

/// Every pooled session plans a prepared statement once (see `session_setup`): the
/// writers', the readers' and the one-off connections alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_sessions_use_generic_plans() {
    let Some(schema) = TestSchema::create("pooled_sessions_use_generic_plans").await else {
        return;
    };
    let store = PostgresStore::open(schema.url(), crate::store::linkage::test_keys())
        .await
        .unwrap();
    with_timeout(async {
        let client = store.client().await.unwrap();
        let row = client.query_one("SHOW plan_cache_mode", &[]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), "force_generic_plan");
    })
    .await;
    store.close().await.unwrap();
}
