//! Several relay nodes on one PostgreSQL database, in-process, clients spread over them.
//!
//! Each test works in its own schema and prints a `SKIPPED:` line (and passes) when no
//! PostgreSQL is reachable at `TIDINGS_TEST_POSTGRES_URL` (default the local server).

// Test code: a failed unwrap is a failed test with its line.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use tidings_mock_push::ApnsRequest;
use tidings_proto::v1::{StoreResponse, StoredMessage};
use tidings_relay::config::{Backend, Config};
use tidings_relay::store::postgres::testing::TestSchema;
use tidings_tests::push::{Device, PUSH_WAIT, PushRig};
use tidings_tests::{Account, STEP, TestRelay, within};

/// A public namespace: Stores need no owner signature.
const NS: i32 = 3;

/// Points a relay configuration at the schema.
fn on_postgres(schema: &TestSchema) -> impl FnOnce(&mut Config) + Send + 'static {
    let url = schema.url().to_owned();
    move |c| {
        c.storage.backend = Backend::Postgres;
        c.storage.postgres_url = Some(url);
    }
}

/// Copies a node's relay key into `data_dir`: the nodes of one deployment share it, since
/// clients seal registrations to it and subscriptions are encrypted at rest under it.
fn share_key(from: &TestRelay, data_dir: &Path) {
    std::fs::create_dir_all(data_dir).unwrap();
    let to = Config {
        data_dir: data_dir.to_owned(),
        ..Config::default()
    };
    std::fs::copy(from.relay().config().relay_key_path(), to.relay_key_path()).unwrap();
}

/// `n` relays on the schema, sharing one key.
async fn cluster(schema: &TestSchema, dir: &Path, n: usize) -> Vec<TestRelay> {
    let mut nodes: Vec<TestRelay> = Vec::new();
    for i in 0..n {
        let data_dir = dir.join(format!("node{i}"));
        if let Some(first) = nodes.first() {
            share_key(first, &data_dir);
        }
        let node = TestRelay::builder()
            .data_dir(data_dir)
            .configure(on_postgres(schema))
            .start()
            .await;
        nodes.push(node);
    }
    nodes
}

async fn shutdown_all(nodes: Vec<TestRelay>) {
    for node in nodes {
        node.shutdown().await;
    }
}

async fn deposit(node: &TestRelay, account: &Account, data: &[u8]) -> StoreResponse {
    within(
        STEP,
        "store",
        node.mailbox.clone().store(account.deposit(NS, data, 0)),
    )
    .await
    .expect("store accepted")
    .into_inner()
}

/// A long-poll parked on node A answers when a message is stored through node B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_on_one_node_wakes_on_a_store_via_another() {
    let Some(schema) = TestSchema::create("a_long_poll_on_one_node_wakes_on_a_store_via_another").await
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(&schema, dir.path(), 2).await;
    let alice = Account::random();
    let mut client = nodes[0].mailbox.clone();
    // Far longer than the test waits: only a wake-up can answer it in time.
    let request = alice.retrieve(NS, 0, 0, 60_000);
    let poll = tokio::spawn(async move { client.retrieve(request).await });
    let waiters = nodes[0].relay().waiters();
    within(STEP, "the long-poll parks", async {
        while waiters.parked() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    let stored = deposit(&nodes[1], &alice, b"via node B").await;
    let page = within(STEP, "the long-poll on node A answers", poll)
        .await
        .unwrap()
        .expect("retrieve succeeds")
        .into_inner();
    assert_eq!(page.messages.len(), 1);
    assert_eq!(
        (page.messages[0].seq, page.messages[0].data.as_slice()),
        (stored.seq, &b"via node B"[..])
    );
    shutdown_all(nodes).await;
}

/// Follows a mailbox on one node with long-polls until `count` messages arrived.
async fn follow(node: &TestRelay, account: &Account, count: usize) -> Vec<StoredMessage> {
    let mut client = node.connect().await;
    let (mut seen, mut after) = (Vec::new(), 0);
    while seen.len() < count {
        let page = within(
            STEP,
            "follow",
            client.retrieve(account.retrieve(NS, after, 0, 5_000)),
        )
        .await
        .expect("retrieve succeeds")
        .into_inner();
        for m in page.messages {
            assert!(m.seq > after, "seqs ascend along the cursor");
            after = m.seq;
            seen.push(m);
        }
    }
    seen
}

/// Writers spread over three nodes; a follower per mailbox on yet another node gets
/// every message exactly once, in seq order, and every node lists the same mailbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_stored_across_nodes_are_retrieved_once_in_order() {
    const ACCOUNTS: usize = 3;
    const PER_NODE: usize = 8;
    let Some(schema) = TestSchema::create("messages_stored_across_nodes_are_retrieved_once_in_order").await
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(&schema, dir.path(), 3).await;
    let accounts: Vec<Account> = (0..ACCOUNTS).map(|_| Account::random()).collect();
    let total = nodes.len() * PER_NODE;

    let followed = async {
        let mut all = Vec::new();
        for (i, a) in accounts.iter().enumerate() {
            all.push(follow(&nodes[i % nodes.len()], a, total));
        }
        futures_join_all(all).await
    };
    let written = async {
        let mut writers = Vec::new();
        for (n, node) in nodes.iter().enumerate() {
            for a in &accounts {
                writers.push(async move {
                    for i in 0..PER_NODE {
                        deposit(node, a, format!("node {n} message {i}").as_bytes()).await;
                    }
                });
            }
        }
        futures_join_all(writers).await
    };
    let (followed, _) = tokio::join!(followed, written);

    for (a, seen) in accounts.iter().zip(followed) {
        let data: HashSet<Vec<u8>> = seen.iter().map(|m| m.data.clone()).collect();
        assert_eq!(data.len(), total, "every message exactly once");
        for node in &nodes {
            let listed = node.retrieve_all(a, NS).await;
            assert_eq!(
                listed.iter().map(|m| m.seq).collect::<Vec<_>>(),
                seen.iter().map(|m| m.seq).collect::<Vec<_>>(),
                "every node lists the mailbox as the follower saw it"
            );
        }
    }
    shutdown_all(nodes).await;
}

/// Runs futures concurrently, keeping their order (no `futures` crate here).
async fn futures_join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in set.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter()
        .map(|v| v.expect("every future finished"))
        .collect()
}

fn enc_of_apns(req: &ApnsRequest) -> &str {
    req.body["enc"].as_str().expect("an APNs push carries enc")
}

/// Stores through two nodes, each message twice (once per node): both notifiers
/// compete for the jobs, and the phone gets every message exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_enqueued_on_two_nodes_are_delivered_once() {
    const MESSAGES: usize = 10;
    let Some(schema) = TestSchema::create("pushes_enqueued_on_two_nodes_are_delivered_once").await else {
        return;
    };
    let mut rig = PushRig::builder().configure(on_postgres(&schema)).start().await;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("node1");
    share_key(rig.relay(), &data_dir);
    let config = rig.relay().relay().config().clone();
    let other = TestRelay::builder()
        .data_dir(data_dir)
        .configure(move |c| *c = config)
        .start()
        .await;

    let (alice, phone) = (Account::random(), Device::apns());
    rig.subscribe(&alice, &phone, &[NS], false).await;
    let mut hashes = HashSet::new();
    for i in 0..MESSAGES {
        let data = format!("m{i}");
        let (first, second) = if i % 2 == 0 {
            (rig.relay(), &other)
        } else {
            (&other, rig.relay())
        };
        let stored = deposit(first, &alice, data.as_bytes()).await;
        let again = deposit(second, &alice, data.as_bytes()).await;
        assert!(again.duplicate && again.seq == stored.seq);
        hashes.insert(stored.hash);
    }
    rig.apns.wait_for(MESSAGES, PUSH_WAIT).await.unwrap();
    rig.settle().await;
    let mut counts: HashMap<Vec<u8>, usize> = HashMap::new();
    for p in rig.apns.delivered() {
        *counts.entry(phone.decrypt(enc_of_apns(&p)).hash).or_insert(0) += 1;
    }
    assert_eq!(counts.keys().cloned().collect::<HashSet<_>>(), hashes);
    assert!(
        counts.values().all(|&n| n == 1),
        "a push was delivered twice: {counts:?}"
    );
    other.shutdown().await;
    rig.shutdown_relay().await;
}
