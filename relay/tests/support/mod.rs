//! Harness shared by the relay's integration tests: timeouts, clocks, starting the built
//! `tidings-relay` binary and reading the addresses it announces, a throwaway PostgreSQL
//! schema, and the requests the tests send (Store, Retrieve, Subscribe, admin HTTP).
//!
//! Each test file includes this with `mod support;`; living in `support/mod.rs`, it is not
//! compiled as a test of its own.

// Each test binary uses only a subset of these helpers; the rest would warn as dead code
// in every binary that does not use them.
#![allow(dead_code)]

use std::{future::Future, net::SocketAddr, path::Path, process::Stdio, time::Duration};

use ed25519_dalek::SigningKey;
use tidings_proto::{
    seal::seal_registration,
    sign,
    v1::{
        DeviceRegistration, GetRelayInfoRequest, PushService, RetrieveRequest, StoreRequest,
        SubscribeRequest, relay_client::RelayClient,
    },
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};
use tokio_postgres::NoTls;
use tonic::transport::Channel;

/// The relay binary Cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_tidings-relay");
/// How long any one step of a test may take before it fails.
pub const STEP: Duration = Duration::from_secs(60);
/// The app the push tests configure and register devices for.
pub const APP_ID: &str = "com.example.messenger";
/// The APNs key id of the push tests' generated key.
pub const KEY_ID: &str = "ABC123DEFG";
/// The APNs team of the push tests' generated key.
pub const TEAM_ID: &str = "TEAM123456";

/// Awaits `fut`, failing the test with "timed out: `what`" after [`STEP`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Unix time in seconds, as signed requests carry it.
pub fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Unix time in milliseconds, as the push outbox stores lease ends.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A command running the relay binary with `args`, killed when dropped, logging at
/// `rust_log`, and with none of the `TIDINGS_*` settings of the environment the tests
/// run in (they would override the test's config).
pub fn relay_command(args: &[&str], rust_log: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).kill_on_drop(true).env("RUST_LOG", rust_log);
    for key in ["LISTEN", "ADMIN_LISTEN", "DATA_DIR", "TLS_CERT", "TLS_KEY"] {
        cmd.env_remove(format!("TIDINGS_{key}"));
    }
    cmd
}

/// The addresses a serving relay announces on its first line of stdout.
pub struct Announced {
    /// The gRPC listener.
    pub grpc: SocketAddr,
    /// The admin listener, as announced (parsed by the tests that use it).
    pub admin: String,
}

/// Starts `cmd` (a `serve`) with stdout piped and stderr into `log_file` (the file at
/// `log`, shown if the relay dies before announcing), and reads the line
/// `tidings-relay listening on grpc=ADDR admin=ADDR`.
pub async fn spawn_announced(cmd: &mut Command, log_file: std::fs::File, log: &Path) -> (Child, Announced) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .expect("the binary starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = within("the relay announces its addresses", lines.next_line())
        .await
        .unwrap()
        .unwrap_or_else(|| {
            panic!(
                "no announcement; log: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        });
    let rest = line
        .strip_prefix("tidings-relay listening on grpc=")
        .unwrap_or_else(|| panic!("bad line {line:?}"));
    let (grpc, admin) = rest
        .split_once(" admin=")
        .unwrap_or_else(|| panic!("bad line {line:?}"));
    let announced = Announced {
        grpc: grpc.parse().unwrap(),
        admin: admin.to_owned(),
    };
    (child, announced)
}

/// Starts `serve --config CONFIG` logging at `rust_log` into a new file `log`, and reads
/// the announced addresses.
pub async fn serve(config: &Path, log: &Path, rust_log: &str) -> (Child, Announced) {
    let log_file = std::fs::File::create(log).unwrap();
    let mut cmd = relay_command(&["serve", "--config"], rust_log);
    cmd.arg(config);
    spawn_announced(&mut cmd, log_file, log).await
}

/// Sends `signal` to the still running `child`.
#[allow(unsafe_code)] // the one FFI call of the workspace outside mobile-glue
pub fn signal(child: &Child, signal: libc::c_int) {
    let pid = child.id().expect("still running") as libc::pid_t;
    // SAFETY: kill(2) only sends a signal to our own child process; no memory is shared.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
}

/// A plaintext gRPC channel to `addr`, connected.
pub async fn channel(addr: SocketAddr) -> Channel {
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap();
    within("connect", channel.connect()).await.unwrap()
}

/// The status code of `GET path` on the admin listener at `addr`.
pub async fn http_status(addr: SocketAddr, path: &str) -> u16 {
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

/// A public deposit of `data` into namespace 0 of `key`'s mailbox.
pub fn deposit(key: &SigningKey, data: Vec<u8>) -> StoreRequest {
    StoreRequest {
        account: key.verifying_key().to_bytes().to_vec(),
        namespace: 0,
        data,
        ..Default::default()
    }
}

/// A signed Retrieve of namespace 0 of `key`'s mailbox after `after_seq`, waiting up to
/// `wait_ms` for something to arrive.
pub fn retrieve(key: &SigningKey, after_seq: u64, wait_ms: u32) -> RetrieveRequest {
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

/// Connects to the PostgreSQL server at `url`, giving up after three seconds.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config: tokio_postgres::Config = url.parse()?;
    config.connect_timeout(Duration::from_secs(3));
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// The throwaway schemas are the relay's own test helper, shared with `tidings-tests`.
#[allow(unused_imports, reason = "each test binary uses a part of the support module")]
pub use tidings_relay::store::postgres::testing::TestSchema as Schema;

/// The `[[apps]]` section of a relay config for [`APP_ID`]: APNs with the key in
/// `key_file` ([`KEY_ID`], [`TEAM_ID`]) at `apns` (production and sandbox alike), FCM with
/// the service account in `sa_file` at `fcm`.
pub fn apps_toml(key_file: &Path, sa_file: &Path, apns: &str, fcm: &str) -> String {
    format!(
        r#"[[apps]]
id = "{APP_ID}"
  [apps.apns]
  key_file = {key_file:?}
  key_id = "{KEY_ID}"
  team_id = "{TEAM_ID}"
  topic = "{APP_ID}"
  endpoint = "{apns}"
  sandbox_endpoint = "{apns}"
  [apps.fcm]
  service_account_file = {sa_file:?}
  endpoint = "{fcm}"
"#
    )
}

/// One install of the app: push service, token, push key, device id.
pub struct Device {
    pub service: PushService,
    pub token: String,
    pub push_key: [u8; 32],
    pub device_id: [u8; 16],
}

impl Device {
    /// A new install with a random token of the service's form and random keys.
    pub fn new(service: PushService) -> Device {
        let token = match service {
            PushService::Fcm => format!("fcm:{}", hex::encode(tidings_proto::random_bytes::<40>())),
            _ => hex::encode(tidings_proto::random_bytes::<32>()),
        };
        Device {
            service,
            token,
            push_key: tidings_proto::random_bytes(),
            device_id: tidings_proto::random_bytes(),
        }
    }
}

/// Subscribes `device` (for [`APP_ID`]) to namespace 0 of `owner`'s mailbox through the
/// relay at the other end of `channel`, and asserts the subscription is new.
pub async fn subscribe(channel: Channel, owner: &SigningKey, device: &Device) {
    let mut relay = RelayClient::new(channel);
    let info = within("relay info", relay.get_relay_info(GetRelayInfoRequest {}))
        .await
        .unwrap()
        .into_inner();
    let relay_pub: [u8; 32] = info.x25519_public_key.try_into().unwrap();
    let account = owner.verifying_key().to_bytes();
    let reg = DeviceRegistration {
        service: device.service as i32,
        token: device.token.clone(),
        app_id: APP_ID.into(),
        push_key: device.push_key.to_vec(),
        device_id: device.device_id.to_vec(),
        ..Default::default()
    };
    let sealed = seal_registration(&relay_pub, &account, &reg);
    let ts = now_s();
    let signed = sign::subscribe_bytes(&account, ts, false, &[0], &sealed);
    let req = SubscribeRequest {
        account: account.to_vec(),
        namespaces: vec![0],
        want_data: false,
        ts,
        sealed,
        signature: sign::sign(owner, &signed).to_vec(),
    };
    let reply = within("subscribe", relay.subscribe(req))
        .await
        .unwrap()
        .into_inner();
    assert!(reply.added);
}
