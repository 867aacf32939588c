//! End-to-end test harness for tidings.
//!
//! - [`TestRelay`]: a real relay in-process on 127.0.0.1 port 0, with its data in a temp
//!   dir and the embedded store, plus a connected [`MailboxClient`].
//! - [`Account`]: an Ed25519 account key that builds correctly signed requests (and
//!   lets a test break exactly one thing about them).
//! - [`raw_grpc`]: one hand-made HTTP/2 gRPC call, for garbage on the wire.
//! - [`within`]: bounds every await of a test in time.
//! - [`require_backend!`]: with `TIDINGS_TEST_BACKEND=postgres`, relays store into a fresh
//!   PostgreSQL schema each (dropped afterwards) and tests skip visibly without PostgreSQL.

use std::{
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use ed25519_dalek::SigningKey;
use tidings_proto::{
    sign,
    v1::{
        DeleteRequest, RetrieveRequest, StoreRequest, StoredMessage, mailbox_client::MailboxClient,
        relay_client::RelayClient,
    },
};
use tidings_relay::{
    clock::Clock,
    config::{Backend, Config},
    server::{self, RunningRelay},
    store::{Store, postgres::testing::TestSchema},
};
use tonic::transport::Channel;

pub use tidings_relay;

pub mod log_capture;
pub mod ohttp;
pub mod push;

/// How long a single awaited step of a test may take before the test fails.
pub const STEP: Duration = Duration::from_secs(20);

/// Awaits `fut`, failing the test (with `what`) if it takes longer than `limit`.
pub async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// Unix seconds by the system clock (what a client puts in `ts`).
pub fn now_s() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the system clock is after 1970");
    i64::try_from(since.as_secs()).expect("seconds fit i64")
}

/// The environment variable choosing the storage backend of [`TestRelay`]s.
pub const BACKEND_ENV: &str = "TIDINGS_TEST_BACKEND";

/// Whether [`BACKEND_ENV`] asks for PostgreSQL (`postgres`); otherwise the embedded store.
pub fn postgres_requested() -> bool {
    std::env::var(BACKEND_ENV).is_ok_and(|v| v.eq_ignore_ascii_case("postgres"))
}

/// Whether the requested backend can be used; when PostgreSQL is requested but not
/// reachable, prints a `SKIPPED:` line for `test` and returns false. See [`require_backend!`].
pub async fn backend_ready(test: &str) -> bool {
    !postgres_requested() || TestSchema::create(test).await.is_some()
}

/// Returns from the calling test (after a visible `SKIPPED:` line) when the backend that
/// [`BACKEND_ENV`] asks for is unreachable. Put it first in every end-to-end test.
#[macro_export]
macro_rules! require_backend {
    () => {
        if !$crate::backend_ready(concat!(module_path!(), ":", line!())).await {
            return;
        }
    };
}

/// Where a [`TestRelay`] keeps its messages beyond its data dir: a PostgreSQL schema when
/// [`BACKEND_ENV`] asks for it. Clone it from one relay to start a later one on the same
/// data ([`TestRelayBuilder::storage`]); the schema is dropped with the last clone.
#[derive(Clone, Debug, Default)]
pub struct SharedStorage(Option<Arc<TestSchema>>);

impl SharedStorage {
    /// The PostgreSQL URL of the schema, when the relays run on PostgreSQL (tests that
    /// inspect the tables directly).
    pub fn postgres_url(&self) -> Option<&str> {
        self.0.as_deref().map(TestSchema::url)
    }
}

/// A relay running in this process for one test.
pub struct TestRelay {
    /// The gRPC address.
    pub addr: SocketAddr,
    /// A client connected to it (clone it freely: clones share the connection).
    pub mailbox: MailboxClient<Channel>,
    relay: RunningRelay,
    data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    // Last: the schema is dropped after the relay has let go of it.
    storage: SharedStorage,
}

/// Options of a [`TestRelay`] before it starts.
pub struct TestRelayBuilder {
    config: Config,
    clock: Option<Arc<dyn Clock>>,
    data_dir: Option<PathBuf>,
    storage: Option<SharedStorage>,
}

impl TestRelay {
    /// Starts a relay with default limits on 127.0.0.1:0 and a fresh temp dir.
    pub async fn start() -> TestRelay {
        Self::builder().start().await
    }

    /// Options: limits, clock, data dir.
    pub fn builder() -> TestRelayBuilder {
        let config = Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..Config::default()
        };
        TestRelayBuilder {
            config,
            clock: None,
            data_dir: None,
            storage: None,
        }
    }

    /// The storage this relay uses, to start a later relay on the same data.
    pub fn storage(&self) -> SharedStorage {
        self.storage.clone()
    }

    /// The gRPC endpoint URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The admin HTTP address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.relay.admin_addr()
    }

    /// A new client on its own connection.
    pub async fn connect(&self) -> MailboxClient<Channel> {
        connect_mailbox(self.addr).await
    }

    /// A Relay-service client.
    pub async fn relay_client(&self) -> RelayClient<Channel> {
        let channel = within(
            STEP,
            "connect",
            Channel::from_shared(self.endpoint())
                .expect("valid URL")
                .connect(),
        )
        .await
        .expect("the relay accepts connections");
        RelayClient::new(channel)
    }

    /// A plain gRPC channel (health, reflection).
    pub async fn channel(&self) -> Channel {
        within(
            STEP,
            "connect",
            Channel::from_shared(self.endpoint())
                .expect("valid URL")
                .connect(),
        )
        .await
        .expect("the relay accepts connections")
    }

    /// The running relay (store, keys, waiters, sweeper).
    pub fn relay(&self) -> &RunningRelay {
        &self.relay
    }

    /// The relay's store, to check what was (not) stored behind the API.
    pub fn store(&self) -> Arc<dyn Store> {
        self.relay.store()
    }

    /// Where the relay keeps its data.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Shuts the relay down (drain, flush, close) within [`STEP`].
    pub async fn shutdown(self) {
        within(STEP, "relay shutdown", self.relay.shutdown())
            .await
            .expect("clean shutdown");
    }

    /// Every unexpired message of a mailbox, following the cursor page by page.
    pub async fn retrieve_all(&self, account: &Account, namespace: i32) -> Vec<StoredMessage> {
        retrieve_all(&mut self.mailbox.clone(), account, namespace).await
    }

    /// Whether the mailbox holds no unexpired message, asked of the store directly.
    pub async fn stored_count(&self, account: &Account, namespace: i32) -> usize {
        let now_ms = self.relay.clock().now_ms();
        let page = self
            .store()
            .get_messages(
                &tidings_relay::store::Account(account.id()),
                namespace as u32,
                0,
                100_000,
                now_ms,
            )
            .await
            .expect("store answers");
        page.messages.len()
    }
}

impl TestRelayBuilder {
    /// Changes the configuration (limits, sweep interval, apps …).
    pub fn configure(mut self, change: impl FnOnce(&mut Config)) -> Self {
        change(&mut self.config);
        self
    }

    /// Uses this clock instead of the system clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Keeps the data in `dir` (owned by the caller, so a later relay can reopen it).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Reuses the storage of an earlier relay (with the same [`TestRelayBuilder::data_dir`]).
    pub fn storage(mut self, storage: SharedStorage) -> Self {
        self.storage = Some(storage);
        self
    }

    /// Starts the relay and connects a client.
    pub async fn start(mut self) -> TestRelay {
        let storage = match self.storage.take() {
            Some(storage) => storage,
            None => fresh_storage().await,
        };
        if let SharedStorage(Some(schema)) = &storage {
            self.config.storage.backend = Backend::Postgres;
            self.config.storage.postgres_url = Some(schema.url().to_owned());
        }
        let (temp, data_dir) = match self.data_dir.take() {
            Some(dir) => (None, dir),
            None => {
                let temp = tempfile::tempdir().expect("a temp dir");
                let dir = temp.path().join("data");
                (Some(temp), dir)
            }
        };
        self.config.data_dir = data_dir.clone();
        let clock = self
            .clock
            .unwrap_or_else(|| Arc::new(tidings_relay::clock::SystemClock));
        let relay = within(STEP, "relay start", server::start_with_clock(self.config, clock))
            .await
            .expect("the relay starts");
        let addr = relay.grpc_addr();
        let mailbox = connect_mailbox(addr).await;
        TestRelay {
            addr,
            mailbox,
            relay,
            data_dir,
            _temp: temp,
            storage,
        }
    }
}

/// A new schema when [`BACKEND_ENV`] asks for PostgreSQL, else nothing (embedded store).
async fn fresh_storage() -> SharedStorage {
    if !postgres_requested() {
        return SharedStorage(None);
    }
    let schema = TestSchema::create("TestRelay")
        .await
        .expect("PostgreSQL was requested but is unreachable: start the test with require_backend!()");
    SharedStorage(Some(Arc::new(schema)))
}

/// A Mailbox client on a new connection to `addr`.
pub async fn connect_mailbox(addr: SocketAddr) -> MailboxClient<Channel> {
    let url = format!("http://{addr}");
    let channel = within(
        STEP,
        "connect",
        Channel::from_shared(url).expect("valid URL").connect(),
    )
    .await
    .expect("the relay accepts connections");
    MailboxClient::new(channel)
}

/// Every unexpired message of a mailbox, following the cursor page by page.
pub async fn retrieve_all(
    client: &mut MailboxClient<Channel>,
    account: &Account,
    namespace: i32,
) -> Vec<StoredMessage> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = within(
            STEP,
            "retrieve page",
            client.retrieve(account.retrieve(namespace, after, 0, 0)),
        )
        .await
        .expect("retrieve succeeds")
        .into_inner();
        if let Some(last) = page.messages.last() {
            after = last.seq;
        }
        all.extend(page.messages);
        if !page.more {
            return all;
        }
    }
}

/// A mailbox owner: an Ed25519 key that signs requests.
#[derive(Clone)]
pub struct Account {
    key: SigningKey,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Account({:02x?}…)", &self.id()[..4])
    }
}

impl Account {
    /// A fresh random account.
    pub fn random() -> Self {
        Self::from_seed(tidings_proto::random_bytes::<32>())
    }

    /// The account with this Ed25519 seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// The account key (the Ed25519 public key).
    pub fn id(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// The signing key.
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// An unsigned Store (what anyone sends to a public namespace 0..=9).
    pub fn deposit(&self, namespace: i32, data: &[u8], ttl_ms: i64) -> StoreRequest {
        StoreRequest {
            account: self.id().to_vec(),
            namespace,
            data: data.to_vec(),
            ttl_ms,
            ts: 0,
            signature: Vec::new(),
        }
    }

    /// An owner-signed Store (needed for namespaces 10..=32767), `ts` = now.
    pub fn store(&self, namespace: i32, data: &[u8], ttl_ms: i64) -> StoreRequest {
        self.store_at(namespace, data, ttl_ms, now_s())
    }

    /// An owner-signed Store with a chosen `ts`.
    pub fn store_at(&self, namespace: i32, data: &[u8], ttl_ms: i64, ts: i64) -> StoreRequest {
        let bytes = sign::store_bytes(&self.id(), namespace as u32, ts, ttl_ms, data);
        StoreRequest {
            ts,
            signature: sign::sign(&self.key, &bytes).to_vec(),
            ..self.deposit(namespace, data, ttl_ms)
        }
    }

    /// A signed Retrieve, `ts` = now.
    pub fn retrieve(&self, namespace: i32, after_seq: u64, limit: u32, wait_ms: u32) -> RetrieveRequest {
        self.retrieve_at(namespace, after_seq, limit, wait_ms, now_s())
    }

    /// A signed Retrieve with a chosen `ts`.
    pub fn retrieve_at(
        &self,
        namespace: i32,
        after_seq: u64,
        limit: u32,
        wait_ms: u32,
        ts: i64,
    ) -> RetrieveRequest {
        let bytes = sign::retrieve_bytes(&self.id(), namespace as u32, ts);
        RetrieveRequest {
            account: self.id().to_vec(),
            namespace,
            after_seq,
            limit,
            wait_ms,
            ts,
            signature: sign::sign(&self.key, &bytes).to_vec(),
        }
    }

    /// A signed Delete, `ts` = now.
    pub fn delete(&self, namespace: i32, hashes: &[Vec<u8>]) -> DeleteRequest {
        self.delete_at(namespace, hashes, now_s())
    }

    /// A signed Delete with a chosen `ts`.
    pub fn delete_at(&self, namespace: i32, hashes: &[Vec<u8>], ts: i64) -> DeleteRequest {
        let bytes = sign::delete_bytes(&self.id(), namespace as u32, ts, hashes);
        DeleteRequest {
            account: self.id().to_vec(),
            namespace,
            hashes: hashes.to_vec(),
            ts,
            signature: sign::sign(&self.key, &bytes).to_vec(),
        }
    }
}

/// What the relay answered to a [`raw_grpc`] call.
#[derive(Debug, Clone)]
pub struct RawReply {
    /// The HTTP status.
    pub http_status: u16,
    /// `grpc-status`, from the headers (trailers-only answer) or the trailers.
    pub grpc_status: Option<i32>,
    /// `grpc-message`, percent-decoded only for spaces.
    pub grpc_message: Option<String>,
    /// The response body (length-prefixed gRPC frames).
    pub body: Vec<u8>,
}

/// Frames `payload` as one uncompressed gRPC message: flag 0, be32 length, bytes.
pub fn grpc_frame(payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(0);
    out.extend_from_slice(
        &u32::try_from(payload.len())
            .expect("test payloads are small")
            .to_be_bytes(),
    );
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// Sends `body` verbatim as the request body of one HTTP/2 gRPC call to `path`
/// (e.g. `/tidings.v1.Mailbox/Store`) on a fresh connection.
pub async fn raw_grpc(
    addr: SocketAddr,
    path: &str,
    body: Bytes,
) -> Result<RawReply, Box<dyn std::error::Error + Send + Sync>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let (client, connection) = h2::client::handshake(tcp).await?;
    let driver = tokio::spawn(connection);
    let mut client = client.ready().await?;
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())?;
    let (response, mut send) = client.send_request(request, false)?;
    // The relay may answer and close the stream from the headers alone (an unknown method
    // is UNIMPLEMENTED at once); sending the body then fails with "inactive stream", and
    // the answer still stands. Any other failure shows in the response.
    let _ = send.send_data(body, true);
    let response = response.await?;
    let http_status = response.status().as_u16();
    let (parts, mut recv) = response.into_parts();
    let mut data = Vec::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk?;
        let _ = recv.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = recv.trailers().await?.unwrap_or_default();
    let header = |name: &str| {
        trailers
            .get(name)
            .or_else(|| parts.headers.get(name))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let reply = RawReply {
        http_status,
        grpc_status: header("grpc-status").and_then(|s| s.parse().ok()),
        grpc_message: header("grpc-message").map(|m| m.replace("%20", " ")),
        body: data,
    };
    driver.abort();
    Ok(reply)
}

/// `GET path` over HTTP/1.1 on a fresh connection; returns (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
