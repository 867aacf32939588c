//! The push outbox of the built `tidings-relay` binary survives `kill -9`: every
//! acknowledged Store is pushed after a restart, and none twice.
//!
//! The providers are the mocks from `tidings-mock-push` over h2c, so a "fresh" mock can be
//! started on the port the relay is configured with.

use std::{
    collections::HashMap,
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use ed25519_dalek::SigningKey;
use tidings_mock_push::{
    ApnsKey, ApnsMockConfig, FcmMockConfig, MockApns, MockFcm, ServiceAccount, Transport,
};
use tidings_proto::{
    push::decrypt_push,
    seal::seal_registration,
    sign,
    v1::{
        DeviceRegistration, GetRelayInfoRequest, PushService, StoreRequest, SubscribeRequest,
        mailbox_client::MailboxClient, relay_client::RelayClient,
    },
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};
use tonic::transport::Channel;

const BIN: &str = env!("CARGO_BIN_EXE_tidings-relay");
const STEP: Duration = Duration::from_secs(60);
const APP_ID: &str = "com.example.messenger";
const KEY_ID: &str = "ABC123DEFG";
const TEAM_ID: &str = "TEAM123456";
const PROJECT: &str = "tidings-durability";
const MESSAGES: usize = 20;

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

/// Where the relay's providers are, and the credentials it uses for them.
struct Providers {
    apns_key: ApnsKey,
    service_account: ServiceAccount,
    apns_endpoint: String,
    fcm_endpoint: String,
}

/// Writes `relay.toml` (short provider timeout and lease, so the test is quick) and the
/// credentials into `dir`.
fn write_config(dir: &Path, p: &Providers) -> PathBuf {
    let key_file = p.apns_key.write_p8(dir).unwrap();
    let sa_file = p.service_account.write_json(dir).unwrap();
    let text = format!(
        r#"listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
data_dir = "data"

[push]
timeout_ms = 500
lease_ms = 1000
poll_interval_ms = 50

[[apps]]
id = "{APP_ID}"
  [apps.apns]
  key_file = "{key}"
  key_id = "{KEY_ID}"
  team_id = "{TEAM_ID}"
  topic = "{APP_ID}"
  endpoint = "{apns}"
  sandbox_endpoint = "{apns}"
  [apps.fcm]
  service_account_file = "{sa}"
  endpoint = "{fcm}"
"#,
        key = key_file.display(),
        sa = sa_file.display(),
        apns = p.apns_endpoint,
        fcm = p.fcm_endpoint,
    );
    let config = dir.join("relay.toml");
    std::fs::write(&config, text).unwrap();
    config
}

/// A relay process started with `serve --config` on ports chosen by the OS.
struct RelayProcess {
    child: Child,
    grpc: SocketAddr,
    log: PathBuf,
}

async fn spawn_relay(dir: &Path, config: &Path, run: u32) -> RelayProcess {
    let log = dir.join(format!("relay-{run}.log"));
    let log_file = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--config", config.to_str().unwrap()])
        .kill_on_drop(true)
        .env("RUST_LOG", "info,tidings_relay=debug")
        .stdout(Stdio::piped())
        .stderr(log_file);
    for key in ["LISTEN", "ADMIN_LISTEN", "DATA_DIR", "TLS_CERT", "TLS_KEY"] {
        cmd.env_remove(format!("TIDINGS_{key}"));
    }
    let mut child = cmd.spawn().expect("the binary starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = within("the relay announces its addresses", lines.next_line())
        .await
        .unwrap()
        .unwrap_or_else(|| {
            panic!(
                "no announcement; log: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
    let rest = line
        .strip_prefix("tidings-relay listening on grpc=")
        .unwrap_or_else(|| panic!("bad line {line:?}"));
    let (grpc, _admin) = rest.split_once(" admin=").unwrap();
    RelayProcess {
        child,
        grpc: grpc.parse().unwrap(),
        log,
    }
}

impl RelayProcess {
    async fn channel(&self) -> Channel {
        let channel = Channel::from_shared(format!("http://{}", self.grpc)).unwrap();
        within("connect", channel.connect()).await.unwrap()
    }

    /// SIGKILL: no chance to finish a push or flush anything.
    async fn kill_9(&mut self) {
        self.child.start_kill().unwrap();
        let status = within("the relay dies", self.child.wait()).await.unwrap();
        assert_eq!(status.code(), None, "killed by a signal");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// One install: token, push key, device id.
struct Device {
    service: PushService,
    token: String,
    push_key: [u8; 32],
    device_id: [u8; 16],
}

impl Device {
    fn new(service: PushService) -> Device {
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

async fn subscribe(channel: Channel, owner: &SigningKey, device: &Device) {
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

/// Stores `MESSAGES` messages, each acknowledged; returns their hashes.
async fn store_messages(channel: Channel, owner: &SigningKey, label: &str) -> Vec<Vec<u8>> {
    let mut mailbox = MailboxClient::new(channel);
    let mut hashes = Vec::new();
    for i in 0..MESSAGES {
        let req = StoreRequest {
            account: owner.verifying_key().to_bytes().to_vec(),
            namespace: 0,
            data: format!("{label} {i}").into_bytes(),
            ..Default::default()
        };
        let reply = within("store", mailbox.store(req))
            .await
            .expect("store acknowledged");
        hashes.push(reply.into_inner().hash);
    }
    hashes
}

/// Decrypts every delivered `enc` of one token and counts the hashes.
fn count_hashes<'a>(encs: impl Iterator<Item = &'a str>, device: &Device) -> HashMap<Vec<u8>, usize> {
    let mut counts = HashMap::new();
    for enc in encs {
        let note = decrypt_push(&device.push_key, enc).expect("decrypts with the device's key");
        *counts.entry(note.hash).or_insert(0) += 1;
    }
    counts
}

/// Every acknowledged hash was delivered to `device` exactly once.
fn assert_each_once(counts: &HashMap<Vec<u8>, usize>, hashes: &[Vec<u8>], log: &str) {
    for h in hashes {
        assert_eq!(
            counts.get(h),
            Some(&1),
            "message {} pushed {:?} times; log:\n{log}",
            hex::encode(h),
            counts.get(h)
        );
    }
    assert_eq!(counts.len(), hashes.len(), "nothing else was pushed");
}

/// Waits until `n` deliveries, then gives stray duplicates a moment to show up.
async fn settle_deliveries(delivered: impl Fn() -> usize, n: usize, what: &str) {
    within(what, async {
        while delivered() < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // Longer than a lease plus a poll: a job still in the outbox would be sent by now.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
}

fn apns_config(key: &ApnsKey, bind: SocketAddr) -> ApnsMockConfig {
    let mut config = ApnsMockConfig::new(key, APP_ID, Transport::H2c);
    config.bind = bind;
    config
}

fn fcm_config(account: &ServiceAccount, bind: SocketAddr) -> FcmMockConfig {
    let mut config = FcmMockConfig::new(account, Transport::H2c);
    config.bind = bind;
    config
}

const ANY_PORT: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// Pushes in flight at a hanging APNs when the relay dies are sent after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_survives_kill_9_while_the_provider_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let apns_key = ApnsKey::generate(KEY_ID, TEAM_ID);
    let apns = MockApns::start(apns_config(&apns_key, ANY_PORT)).await.unwrap();
    let mut service_account = ServiceAccount::generate(PROJECT);
    let fcm = MockFcm::start(fcm_config(&service_account, ANY_PORT))
        .await
        .unwrap();
    service_account.token_uri = fcm.token_uri();
    let config = write_config(
        dir.path(),
        &Providers {
            apns_key: apns_key.clone(),
            service_account,
            apns_endpoint: apns.endpoint(),
            fcm_endpoint: fcm.endpoint(),
        },
    );
    // Longer than the test: requests made before the kill are never answered.
    apns.set_delay(Some(Duration::from_secs(600)));

    let mut relay = spawn_relay(dir.path(), &config, 1).await;
    let owner = SigningKey::from_bytes(&[41; 32]);
    let (phone, tablet) = (Device::new(PushService::Apns), Device::new(PushService::Apns));
    subscribe(relay.channel().await, &owner, &phone).await;
    subscribe(relay.channel().await, &owner, &tablet).await;
    let hashes = store_messages(relay.channel().await, &owner, "hang").await;
    // Every job was tried, timed out, and at least one was tried again: the outbox holds
    // leased jobs and jobs waiting for their retry when the relay dies.
    within("the relay tries and retries", async {
        while apns.requests() <= (2 * MESSAGES) as u64 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    relay.kill_9().await;
    assert!(apns.delivered().is_empty());

    apns.set_delay(None);
    let relay = spawn_relay(dir.path(), &config, 2).await;
    settle_deliveries(
        || apns.delivered().len(),
        2 * MESSAGES,
        "every push after the restart",
    )
    .await;
    let delivered = apns.delivered();
    for device in [&phone, &tablet] {
        let encs = delivered
            .iter()
            .filter(|p| p.token == device.token)
            .map(|p| p.body["enc"].as_str().unwrap());
        assert_each_once(&count_hashes(encs, device), &hashes, &relay.log());
    }
}

/// Stores acknowledged while both providers are down are pushed once they are back, by
/// the restarted relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_survives_kill_9_while_the_providers_are_down() {
    let dir = tempfile::tempdir().unwrap();
    let apns_key = ApnsKey::generate(KEY_ID, TEAM_ID);
    let mut service_account = ServiceAccount::generate(PROJECT);
    // Start each mock once to learn a free port, then take it down.
    let apns = MockApns::start(apns_config(&apns_key, ANY_PORT)).await.unwrap();
    let fcm = MockFcm::start(fcm_config(&service_account, ANY_PORT))
        .await
        .unwrap();
    let (apns_addr, fcm_addr) = (apns.addr(), fcm.addr());
    service_account.token_uri = fcm.token_uri();
    let config = write_config(
        dir.path(),
        &Providers {
            apns_key: apns_key.clone(),
            service_account: service_account.clone(),
            apns_endpoint: apns.endpoint(),
            fcm_endpoint: fcm.endpoint(),
        },
    );
    apns.shutdown().await;
    fcm.shutdown().await;

    let mut relay = spawn_relay(dir.path(), &config, 1).await;
    let owner = SigningKey::from_bytes(&[42; 32]);
    let (phone, droid) = (Device::new(PushService::Apns), Device::new(PushService::Fcm));
    subscribe(relay.channel().await, &owner, &phone).await;
    subscribe(relay.channel().await, &owner, &droid).await;
    let hashes = store_messages(relay.channel().await, &owner, "down").await;
    relay.kill_9().await;

    let apns = MockApns::start(apns_config(&apns_key, apns_addr)).await.unwrap();
    let fcm = MockFcm::start(fcm_config(&service_account, fcm_addr))
        .await
        .unwrap();
    let relay = spawn_relay(dir.path(), &config, 2).await;
    settle_deliveries(
        || apns.delivered().len() + fcm.delivered().len(),
        2 * MESSAGES,
        "every push after the restart",
    )
    .await;
    let apns_encs = apns.delivered();
    let counts = count_hashes(apns_encs.iter().map(|p| p.body["enc"].as_str().unwrap()), &phone);
    assert_each_once(&counts, &hashes, &relay.log());
    let fcm_encs = fcm.delivered();
    let counts = count_hashes(fcm_encs.iter().map(|p| p.data["enc"].as_str()), &droid);
    assert_each_once(&counts, &hashes, &relay.log());
    assert_eq!(fcm.token_grants(), 1, "one OAuth token once Google is back");
}
