//! The built `tidings-relay` binary: `serve`, `check-config`, `keygen`, SIGTERM, and
//! durability across `kill -9`.

// Test code: a failed unwrap is a failed test with its line.
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use ed25519_dalek::SigningKey;
use support::{deposit, http_status, now_s, retrieve, spawn_announced, within};
use tidings_proto::v1::{GetRelayInfoRequest, mailbox_client::MailboxClient, relay_client::RelayClient};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

/// A relay process started with `serve --config` on ports chosen by the OS.
struct RelayProcess {
    child: Child,
    grpc: SocketAddr,
    admin: SocketAddr,
    log: PathBuf,
}

fn write_config(dir: &Path) -> PathBuf {
    let config = dir.join("relay.toml");
    let text = "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n";
    std::fs::write(&config, text).unwrap();
    config
}

fn relay_command(args: &[&str]) -> Command {
    support::relay_command(args, "info,tidings_relay=debug")
}

/// Starts `serve --config DIR/relay.toml` and reads the addresses it announces.
async fn spawn_relay(dir: &Path) -> RelayProcess {
    let config = write_config(dir);
    spawn_serving(
        dir,
        relay_command(&["serve", "--config", config.to_str().unwrap()]),
    )
    .await
}

/// Runs `cmd` (a `serve`), logging to a file in `dir`, and reads the announced addresses.
async fn spawn_serving(dir: &Path, mut cmd: Command) -> RelayProcess {
    let log = dir.join(format!("relay-{}.log", now_s()));
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    let (child, announced) = spawn_announced(&mut cmd, log_file, &log).await;
    RelayProcess {
        child,
        grpc: announced.grpc,
        admin: announced.admin.parse().unwrap(),
        log,
    }
}

impl RelayProcess {
    async fn mailbox(&self) -> MailboxClient<Channel> {
        MailboxClient::new(support::channel(self.grpc).await)
    }

    fn signal(&self, signal: libc::c_int) {
        support::signal(&self.child, signal);
    }

    async fn exit_code(&mut self) -> Option<i32> {
        within("the relay exits", self.child.wait()).await.unwrap().code()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn account(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

async fn retrieve_all(client: &mut MailboxClient<Channel>, key: &SigningKey) -> Vec<(u64, Vec<u8>)> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = within("retrieve", client.retrieve(retrieve(key, after, 0)))
            .await
            .unwrap()
            .into_inner();
        after = page.messages.last().map_or(after, |m| m.seq);
        all.extend(page.messages.into_iter().map(|m| (m.seq, m.data)));
        if !page.more {
            return all;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_a_config_announces_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut relay = spawn_relay(dir.path()).await;
    let mut client = relay.mailbox().await;
    let alice = account(1);
    let sent = within("store", client.store(deposit(&alice, b"hi".to_vec())))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        retrieve_all(&mut client, &alice).await,
        vec![(sent.seq, b"hi".to_vec())]
    );
    assert_eq!(http_status(relay.admin, "/healthz").await, 200);
    assert_eq!(http_status(relay.admin, "/readyz").await, 200);
    assert!(
        dir.path().join("data/relay.key").exists(),
        "data_dir is relative to the config file"
    );

    relay.signal(libc::SIGTERM);
    assert_eq!(relay.exit_code().await, Some(0), "log:\n{}", relay.log());
    let log = relay.log();
    assert!(log.contains("storage flushed"), "log:\n{log}");
    assert!(
        !log.contains(&hex(&alice.verifying_key().to_bytes())),
        "the log names an account"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_arguments_uses_the_defaults_and_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = relay_command(&["--log-format", "json", "serve"]);
    cmd.current_dir(dir.path())
        .env("TIDINGS_LISTEN", "127.0.0.1:0")
        .env("TIDINGS_ADMIN_LISTEN", "127.0.0.1:0");
    let mut relay = spawn_serving(dir.path(), cmd).await;
    assert_eq!(http_status(relay.admin, "/healthz").await, 200);
    let mut client = relay.mailbox().await;
    within("store", client.store(deposit(&account(3), b"x".to_vec())))
        .await
        .unwrap();
    assert!(
        dir.path().join("tidings-data/relay.key").exists(),
        "default data dir is ./tidings-data"
    );
    relay.signal(libc::SIGINT);
    assert_eq!(relay.exit_code().await, Some(0), "log:\n{}", relay.log());
    let first = relay.log().lines().next().unwrap_or_default().to_owned();
    assert!(
        first.starts_with('{') && first.contains("\"level\""),
        "not JSON: {first}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_parked_long_polls_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut relay = spawn_relay(dir.path()).await;
    let alice = account(2);
    let mut polls = Vec::new();
    for _ in 0..3 {
        let mut client = relay.mailbox().await;
        let req = retrieve(&alice, 0, 60_000);
        polls.push(tokio::spawn(async move { client.retrieve(req).await }));
    }
    // The relay logs each parked long-poll at debug level.
    within("polls to park", async {
        while relay.log().matches("long-poll parked").count() < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(polls.iter().all(|p| !p.is_finished()));

    relay.signal(libc::SIGTERM);
    for p in polls {
        let answer = within("released long-poll", p)
            .await
            .unwrap()
            .expect("an empty answer, not an error");
        assert!(answer.into_inner().messages.is_empty());
    }
    assert_eq!(relay.exit_code().await, Some(0), "log:\n{}", relay.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_accepts_good_files_and_names_the_first_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_config(dir.path());
    let out = relay_command(&["check-config", good.to_str().unwrap()]).output();
    let out = within("check-config", out).await.unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));

    let cases = [
        (
            "unknown.toml",
            "listen = \"127.0.0.1:0\"\n[limits]\nmax_mesage_bytes = 10\n",
            "`limits.max_mesage_bytes`",
        ),
        (
            "range.toml",
            "[limits]\nmax_wait_ms = 900000\n",
            "`limits.max_wait_ms`",
        ),
        ("type.toml", "listen = 7400\n", "`listen`"),
        (
            "app.toml",
            "[[apps]]\nid = \"a\"\n[apps.fcm]\nservice_account_file = \"nope.json\"\n",
            "`apps[0].fcm.service_account_file`",
        ),
        ("syntax.toml", "listen = \n", "not valid TOML"),
    ];
    for (name, text, expect) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let out = within(
            "check-config",
            relay_command(&["check-config", path.to_str().unwrap()]).output(),
        )
        .await
        .unwrap();
        assert!(!out.status.success(), "{name} passed");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{name}: {err}");
    }
    let missing = dir.path().join("missing.toml");
    let out = within(
        "check-config",
        relay_command(&["check-config", missing.to_str().unwrap()]).output(),
    )
    .await
    .unwrap();
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_writes_a_private_key_once_and_serve_uses_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("data/relay.key");
    let out = within(
        "keygen",
        relay_command(&["keygen", "--out", key.to_str().unwrap()]).output(),
    )
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let meta = std::fs::metadata(&key).unwrap();
    assert_eq!((meta.len(), meta.permissions().mode() & 0o777), (32, 0o600));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let public = stdout
        .lines()
        .find_map(|l| l.strip_prefix("x25519 public key: "))
        .unwrap()
        .to_owned();
    let secret = std::fs::read(&key).unwrap();
    assert!(
        !stdout.contains(&hex(&secret)),
        "keygen must not print the secret"
    );

    let again = within(
        "keygen",
        relay_command(&["keygen", "--out", key.to_str().unwrap()]).output(),
    )
    .await
    .unwrap();
    assert!(!again.status.success(), "keygen overwrote a key");
    assert_eq!(std::fs::read(&key).unwrap(), secret);

    let mut relay = spawn_relay(dir.path()).await;
    let mut info = RelayClient::new(support::channel(relay.grpc).await);
    let info = within("info", info.get_relay_info(GetRelayInfoRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hex(&info.x25519_public_key), public);
    relay.signal(libc::SIGTERM);
    assert_eq!(relay.exit_code().await, Some(0));
}

/// Every acknowledged Store survives `kill -9` right after the last acknowledgement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_stores_survive_kill_9() {
    const TASKS: u8 = 16;
    const PER_TASK: u32 = 200;
    let dir = tempfile::tempdir().unwrap();
    let mut relay = spawn_relay(dir.path()).await;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let mut client = relay.mailbox().await;
        tasks.push(tokio::spawn(async move {
            let key = account(100 + t);
            let mut acked = Vec::new();
            for i in 0..PER_TASK {
                let data = format!("task {t} message {i}").into_bytes();
                let reply = client
                    .store(deposit(&key, data.clone()))
                    .await
                    .expect("store acknowledged");
                acked.push((reply.into_inner().seq, data));
            }
            (key, acked)
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.push(within("stores", t).await.unwrap());
    }
    // Right after the last acknowledgement: SIGKILL, no chance to flush anything.
    relay.signal(libc::SIGKILL);
    assert_eq!(relay.exit_code().await, None, "killed by a signal");

    let mut relay = spawn_relay(dir.path()).await;
    let mut client = relay.mailbox().await;
    for (key, sent) in &acked {
        let stored = retrieve_all(&mut client, key).await;
        assert_eq!(stored.len(), PER_TASK as usize, "log:\n{}", relay.log());
        assert_eq!(&stored, sent, "every acknowledged message, in seq order");
    }
    relay.signal(libc::SIGTERM);
    assert_eq!(relay.exit_code().await, Some(0));
}
