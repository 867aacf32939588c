//! Three `tidings-relay` processes on one PostgreSQL schema: clients spread over them
//! store into a few mailboxes and long-poll them; every message is retrieved once and in
//! order per mailbox, and after `kill -9` of one node the other two keep serving.
//! Skips visibly without PostgreSQL.

// Test code: a failed unwrap is a failed test with its line.
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    collections::HashSet,
    net::SocketAddr,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use ed25519_dalek::SigningKey;
use support::{Schema, channel, deposit, http_status, retrieve, serve, within};
use tidings_proto::v1::mailbox_client::MailboxClient;
use tokio::process::Child;
use tonic::transport::Channel;

const NODES: usize = 3;
const MAILBOXES: u8 = 4;
const PER_MAILBOX: usize = 60;
/// The node killed mid-load; the others keep serving.
const VICTIM: usize = 2;

/// One relay process serving `dir/relay.toml`.
struct Node {
    child: Child,
    grpc: SocketAddr,
    admin: SocketAddr,
}

async fn spawn_node(dir: &Path, postgres_url: &str) -> Node {
    let config = dir.join("relay.toml");
    let text = format!(
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n\
         [storage]\nbackend = \"postgres\"\npostgres_url = \"{postgres_url}\"\n",
        dir.join("data")
    );
    std::fs::write(&config, text).unwrap();
    let (child, announced) = serve(&config, &dir.join("relay.log"), "info").await;
    Node {
        child,
        grpc: announced.grpc,
        admin: announced.admin.parse().unwrap(),
    }
}

async fn client(addr: SocketAddr) -> MailboxClient<Channel> {
    MailboxClient::new(channel(addr).await)
}

fn message(i: usize) -> Vec<u8> {
    format!("message {i:03}").into_bytes()
}

/// Stores the mailbox's messages one after another, each on the next live node; a
/// failed Store is retried on another node (Store is idempotent, so an answer lost with
/// a killed node does not duplicate the message).
async fn write_mailbox(
    key: SigningKey,
    clients: Vec<MailboxClient<Channel>>,
    dead: Arc<[AtomicBool; NODES]>,
    stored: Arc<AtomicUsize>,
    first: usize,
) {
    let mut node = first;
    for i in 0..PER_MAILBOX {
        let mut tries = 0;
        loop {
            node = (node + 1) % NODES;
            if dead[node].load(Ordering::SeqCst) {
                continue;
            }
            let mut client = clients[node].clone();
            let call = tokio::time::timeout(Duration::from_secs(10), client.store(deposit(&key, message(i))));
            if let Ok(Ok(_)) = call.await {
                break;
            }
            tries += 1;
            assert!(tries < 20, "message {i} could not be stored");
        }
        stored.fetch_add(1, Ordering::SeqCst);
    }
}

/// Long-polls the mailbox on one node until every message has arrived.
async fn read_mailbox(key: SigningKey, mut client: MailboxClient<Channel>) -> Vec<(u64, Vec<u8>)> {
    let mut got: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut after = 0;
    while got.len() < PER_MAILBOX {
        let page = within("long-poll", client.retrieve(retrieve(&key, after, 2_000)))
            .await
            .expect("a surviving node answers")
            .into_inner();
        after = page.messages.last().map_or(after, |m| m.seq);
        got.extend(page.messages.into_iter().map(|m| (m.seq, m.data)));
    }
    got
}

fn assert_once_in_order(got: &[(u64, Vec<u8>)]) {
    let data: Vec<_> = got.iter().map(|(_, d)| d.clone()).collect();
    let expected: Vec<_> = (0..PER_MAILBOX).map(message).collect();
    assert_eq!(data, expected, "every message once, in order");
    assert!(got.windows(2).all(|w| w[0].0 < w[1].0), "seq strictly increases");
    let seqs: HashSet<_> = got.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs.len(), got.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_serve_one_database_and_survive_kill_9() {
    let Some(schema) = Schema::create("multi_process").await else {
        return;
    };
    let url = schema.url().to_owned();
    let dirs: Vec<_> = (0..NODES).map(|_| tempfile::tempdir().unwrap()).collect();
    // The first node applies the migrations and writes the relay key; the others share
    // that key, as nodes of one deployment must.
    let mut nodes = vec![spawn_node(dirs[0].path(), &url).await];
    let key = dirs[0].path().join("data").join("relay.key");
    for dir in &dirs[1..] {
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        std::fs::copy(&key, dir.path().join("data").join("relay.key")).unwrap();
        nodes.push(spawn_node(dir.path(), &url).await);
    }
    let mut clients = Vec::new();
    for node in &nodes {
        clients.push(client(node.grpc).await);
    }

    let dead = Arc::new([const { AtomicBool::new(false) }; NODES]);
    let stored = Arc::new(AtomicUsize::new(0));
    let accounts: Vec<_> = (0..MAILBOXES)
        .map(|m| SigningKey::from_bytes(&[m + 10; 32]))
        .collect();
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for (m, key) in accounts.iter().enumerate() {
        // Readers stay on the nodes that survive; writers use all three.
        let reader_node = m % 2;
        readers.push(tokio::spawn(read_mailbox(
            key.clone(),
            clients[reader_node].clone(),
        )));
        writers.push(tokio::spawn(write_mailbox(
            key.clone(),
            clients.clone(),
            dead.clone(),
            stored.clone(),
            m,
        )));
    }

    let total = usize::from(MAILBOXES) * PER_MAILBOX;
    within("half the load", async {
        while stored.load(Ordering::SeqCst) < total / 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    support::signal(&nodes[VICTIM].child, libc::SIGKILL);
    dead[VICTIM].store(true, Ordering::SeqCst);
    within("the victim dies", nodes[VICTIM].child.wait())
        .await
        .unwrap();

    for writer in writers {
        within("writers finish", writer).await.unwrap();
    }
    for (m, reader) in readers.into_iter().enumerate() {
        let got = within("readers finish", reader).await.unwrap();
        assert_once_in_order(&got);
        // Both survivors agree on the mailbox.
        let other = clients[1 - m % 2].clone();
        let again = read_mailbox(accounts[m].clone(), other).await;
        assert_eq!(again, got);
    }
    for node in &nodes[..VICTIM] {
        assert_eq!(http_status(node.admin, "/healthz").await, 200);
        assert_eq!(http_status(node.admin, "/readyz").await, 200);
    }
    drop(clients);
    drop(nodes);
    drop(schema);
}
