//! The push outbox of the built `tidings-relay` binary survives `kill -9`: every
//! acknowledged Store is pushed after a restart, and none twice.
//!
//! The providers are the mocks from `tidings-mock-push` over h2c, so a "fresh" mock can be
//! started on the port the relay is configured with.

// Test code: a failed unwrap is a failed test with its line.
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use ed25519_dalek::SigningKey;
use support::{APP_ID, Device, KEY_ID, TEAM_ID, apps_toml, serve, subscribe, within};
use tidings_mock_push::{
    ApnsKey, ApnsMockConfig, FcmMockConfig, MockApns, MockFcm, ServiceAccount, Transport,
};
use tidings_proto::{
    push::decrypt_push,
    v1::{PushService, StoreRequest, mailbox_client::MailboxClient},
};
use tokio::process::Child;
use tonic::transport::Channel;

const PROJECT: &str = "tidings-durability";
const MESSAGES: usize = 20;

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

# The outbox is under test, not the circuit breaker (tests/tests/limits.rs has that): an
# open breaker would space the retries these tests wait for by its cool-down.
[push]
timeout_ms = 500
lease_ms = 1000
poll_interval_ms = 50
breaker_failures = 1000000

{apps}"#,
        apps = apps_toml(&key_file, &sa_file, &p.apns_endpoint, &p.fcm_endpoint),
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
    let (child, announced) = serve(config, &log, "info,tidings_relay=debug").await;
    RelayProcess {
        child,
        grpc: announced.grpc,
        log,
    }
}

impl RelayProcess {
    async fn channel(&self) -> Channel {
        support::channel(self.grpc).await
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
