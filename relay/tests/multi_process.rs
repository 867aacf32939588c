//! Three `tidings-relay` processes on one PostgreSQL schema: clients spread over them
//! store into a few mailboxes and long-poll them; every message is retrieved once and in
//! order per mailbox, and after `kill -9` of one node the other two keep serving.
//! Skips visibly without PostgreSQL.

use std::{
    collections::HashSet,
    future::Future,
    io::Write,
    net::SocketAddr,
    path::Path,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use ed25519_dalek::SigningKey;
use tidings_proto::{
    sign,
    v1::{RetrieveRequest, StoreRequest, mailbox_client::MailboxClient},
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};
use tokio_postgres::NoTls;
use tonic::transport::Channel;

const BIN: &str = env!("CARGO_BIN_EXE_tidings-relay");
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const STEP: Duration = Duration::from_secs(60);
const NODES: usize = 3;
const MAILBOXES: u8 = 4;
const PER_MAILBOX: usize = 60;
/// The node killed mid-load; the others keep serving.
const VICTIM: usize = 2;

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A throwaway schema, dropped (from a thread with its own runtime) when this is dropped.
struct Schema {
    server_url: String,
    name: String,
}

impl Schema {
    async fn create() -> Option<Schema> {
        let server_url =
            std::env::var("TIDINGS_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
        let client = match connect(&server_url).await {
            Ok(client) => client,
            Err(e) => {
                assert!(
                    std::env::var_os("TIDINGS_TEST_REQUIRE_POSTGRES").is_none(),
                    "PostgreSQL not reachable: {e}"
                );
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED: multi_process: PostgreSQL not reachable ({e}); set TIDINGS_TEST_POSTGRES_URL"
                );
                return None;
            }
        };
        let name = format!("tidings_test_{}", hex::encode(tidings_proto::random_bytes::<8>()));
        client
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .unwrap();
        Some(Schema { server_url, name })
    }

    fn url(&self) -> String {
        let sep = if self.server_url.contains('?') { '&' } else { '?' };
        format!("{}{sep}options=-c%20search_path%3D{}", self.server_url, self.name)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let (url, name) = (self.server_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(client) = connect(&url).await {
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                        .await;
                }
            });
        })
        .join();
    }
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config: tokio_postgres::Config = url.parse()?;
    config.connect_timeout(Duration::from_secs(3));
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

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
    let log = std::fs::File::create(dir.join("relay.log")).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--config"])
        .arg(&config)
        .kill_on_drop(true)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(log);
    for key in ["LISTEN", "ADMIN_LISTEN", "DATA_DIR", "TLS_CERT", "TLS_KEY"] {
        cmd.env_remove(format!("TIDINGS_{key}"));
    }
    let mut child = cmd.spawn().expect("the binary starts");
    let stdout = child.stdout.take().unwrap();
    let line = within(
        "the relay announces its addresses",
        BufReader::new(stdout).lines().next_line(),
    )
    .await
    .unwrap()
    .unwrap_or_else(|| {
        panic!(
            "no announcement; log: {}",
            std::fs::read_to_string(dir.join("relay.log")).unwrap_or_default()
        )
    });
    let rest = line
        .strip_prefix("tidings-relay listening on grpc=")
        .unwrap_or_else(|| panic!("bad line {line:?}"));
    let (grpc, admin) = rest.split_once(" admin=").unwrap();
    Node {
        child,
        grpc: grpc.parse().unwrap(),
        admin: admin.parse().unwrap(),
    }
}

async fn client(addr: SocketAddr) -> MailboxClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap();
    MailboxClient::new(within("connect", channel.connect()).await.unwrap())
}

fn deposit(key: &SigningKey, data: Vec<u8>) -> StoreRequest {
    StoreRequest {
        account: key.verifying_key().to_bytes().to_vec(),
        namespace: 0,
        data,
        ..Default::default()
    }
}

fn retrieve(key: &SigningKey, after_seq: u64, wait_ms: u32) -> RetrieveRequest {
    let account = key.verifying_key().to_bytes();
    let ts = now_s();
    RetrieveRequest {
        account: account.to_vec(),
        namespace: 0,
        after_seq,
        limit: 0,
        wait_ms,
        ts,
        signature: sign::sign(key, &sign::retrieve_bytes(&account, 0, ts)).to_vec(),
    }
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

async fn http_status(addr: SocketAddr, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = within("admin connect", tokio::net::TcpStream::connect(addr))
        .await
        .unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    within("admin answer", tcp.read_to_string(&mut raw))
        .await
        .unwrap();
    raw.split(' ').nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_serve_one_database_and_survive_kill_9() {
    let Some(schema) = Schema::create().await else {
        return;
    };
    let url = schema.url();
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
    let pid = nodes[VICTIM].child.id().expect("still running") as libc::pid_t;
    // SAFETY: kill(2) only sends a signal to our own child process; no memory is shared.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
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
