//! Web Push and Huawei Push Kit pushes survive `kill -9` of the built `tidings-relay`:
//! with pushes queued and in flight at hanging mocks, the relay is killed; after the
//! restart every acknowledged Store reaches both devices, and none twice.
//!
//! The mocks (from `tidings-mock-push`) speak cleartext on 127.0.0.1, which the relay's
//! config allows for Web Push (`[webpush] allow_http`, `allow_networks`).

// Test code: a failed unwrap is a failed test with its line.
#![allow(clippy::unwrap_used)]

mod support;

use std::{collections::HashMap, net::SocketAddr, path::Path, time::Duration};

use ed25519_dalek::SigningKey;
use support::{APP_ID, channel, now_s, serve, within};
use tidings_mock_push::{
    HmsMockConfig, MockHms, MockWebPush, Transport, VapidKeyPair, WebPushMockConfig, WebPushSubscription,
};
use tidings_proto::{
    push::decrypt_push,
    seal::seal_registration,
    sign,
    v1::{
        DeviceRegistration, GetRelayInfoRequest, PushService, StoreRequest, SubscribeRequest,
        WebPushSubscription as Wire, mailbox_client::MailboxClient, relay_client::RelayClient,
    },
};
use tokio::process::Child;
use tonic::transport::Channel;

const HMS_APP: &str = "104123456";
const MESSAGES: usize = 15;

fn write_config(dir: &Path, vapid: &VapidKeyPair, hms: &MockHms) -> std::path::PathBuf {
    let vapid_file = vapid.write_pem(dir).unwrap();
    let secret_file = dir.join("hms-secret");
    std::fs::write(&secret_file, hms.client_secret()).unwrap();
    let text = format!(
        r#"listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
data_dir = "data"

[push]
timeout_ms = 500
lease_ms = 1000
poll_interval_ms = 50
breaker_failures = 1000000

[webpush]
allow_http = true
allow_networks = ["127.0.0.1/32"]

[[apps]]
id = "{APP_ID}"
services = ["webpush", "hms"]
  [apps.webpush]
  vapid_key_file = {vapid_file:?}
  subject = "mailto:ops@example.com"
  [apps.hms]
  app_id = "{HMS_APP}"
  client_secret_file = {secret_file:?}
  endpoint = "{endpoint}"
  token_endpoint = "{token}"
"#,
        endpoint = hms.endpoint(),
        token = hms.token_endpoint(),
    );
    let config = dir.join("relay.toml");
    std::fs::write(&config, text).unwrap();
    config
}

struct Phone {
    service: PushService,
    token: String,
    push_key: [u8; 32],
    web_push: Option<WebPushSubscription>,
}

impl Phone {
    fn registration(&self) -> DeviceRegistration {
        DeviceRegistration {
            service: self.service as i32,
            token: self.token.clone(),
            app_id: APP_ID.into(),
            push_key: self.push_key.to_vec(),
            device_id: tidings_proto::random_bytes::<16>().to_vec(),
            web_push: self.web_push.as_ref().map(|w| Wire {
                endpoint: w.endpoint.clone(),
                p256dh: w.subscriber.p256dh.to_vec(),
                auth: w.subscriber.auth.to_vec(),
            }),
        }
    }
}

async fn subscribe(channel: Channel, owner: &SigningKey, phone: &Phone) {
    let mut relay = RelayClient::new(channel);
    let info = within("relay info", relay.get_relay_info(GetRelayInfoRequest {}))
        .await
        .unwrap()
        .into_inner();
    let relay_pub: [u8; 32] = info.x25519_public_key.try_into().unwrap();
    let account = owner.verifying_key().to_bytes();
    let sealed = seal_registration(&relay_pub, &account, &phone.registration());
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
    assert!(
        within("subscribe", relay.subscribe(req))
            .await
            .unwrap()
            .into_inner()
            .added
    );
}

async fn kill_9(child: &mut Child) {
    child.start_kill().unwrap();
    let status = within("the relay dies", child.wait()).await.unwrap();
    assert_eq!(status.code(), None, "killed by a signal");
}

fn assert_each_once(counts: &HashMap<Vec<u8>, usize>, hashes: &[Vec<u8>], what: &str) {
    for h in hashes {
        assert_eq!(
            counts.get(h),
            Some(&1),
            "{what}: message {} pushed {:?} times",
            hex::encode(h),
            counts.get(h)
        );
    }
    assert_eq!(counts.len(), hashes.len(), "{what}: nothing else was pushed");
}

const ANY_PORT: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_push_and_hms_pushes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut webpush_config = WebPushMockConfig::new(Transport::H2c);
    webpush_config.bind = ANY_PORT;
    let webpush = MockWebPush::start(webpush_config).await.unwrap();
    let hms = MockHms::start(HmsMockConfig::new(HMS_APP, Transport::H2c))
        .await
        .unwrap();
    let vapid = VapidKeyPair::generate();
    let config = write_config(dir.path(), &vapid, &hms);

    let log = dir.path().join("relay-1.log");
    let (mut relay, announced) = serve(&config, &log, "info,tidings_relay=debug").await;
    let owner = SigningKey::from_bytes(&[43; 32]);
    let browser = Phone {
        service: PushService::Webpush,
        token: String::new(),
        push_key: tidings_proto::random_bytes(),
        web_push: Some(webpush.subscribe(Some(vapid.public_key))),
    };
    let huawei = Phone {
        service: PushService::Hms,
        token: format!("IQAAAACy{}", hex::encode(tidings_proto::random_bytes::<24>())),
        push_key: tidings_proto::random_bytes(),
        web_push: None,
    };
    subscribe(channel(announced.grpc).await, &owner, &browser).await;
    subscribe(channel(announced.grpc).await, &owner, &huawei).await;
    // Web Push hangs longer than the test (what is sent before the kill is never
    // answered); Push Kit answers 503 (flow control), so its jobs wait for their retry.
    webpush.set_delay(Some(Duration::from_secs(600)));
    hms.set_outage(Some(tidings_mock_push::HmsFailure::flow_control()));

    let mut mailbox = MailboxClient::new(channel(announced.grpc).await);
    let mut hashes = Vec::new();
    for i in 0..MESSAGES {
        let req = StoreRequest {
            account: owner.verifying_key().to_bytes().to_vec(),
            namespace: 0,
            data: format!("queued {i}").into_bytes(),
            ..Default::default()
        };
        hashes.push(
            within("store", mailbox.store(req))
                .await
                .unwrap()
                .into_inner()
                .hash,
        );
    }
    // Both providers were tried for every message: jobs are leased, timed out, waiting for
    // their retry when the relay dies.
    within("the relay tries both providers", async {
        while webpush.requests() < MESSAGES as u64
            || (hms.requests() - hms.token_requests()) < MESSAGES as u64
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    kill_9(&mut relay).await;
    assert!(webpush.delivered().is_empty() && hms.delivered().is_empty());

    webpush.set_delay(None);
    hms.set_outage(None);
    let log = dir.path().join("relay-2.log");
    let (_relay, _) = serve(&config, &log, "info,tidings_relay=debug").await;
    within("every push after the restart", async {
        while webpush.delivered().len() < MESSAGES || hms.delivered().len() < MESSAGES {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // Longer than a lease plus a poll: a job still in the outbox would be sent by now.
    tokio::time::sleep(Duration::from_millis(2_500)).await;

    let subscriber = &browser.web_push.as_ref().unwrap().subscriber;
    let mut web_counts = HashMap::new();
    for r in webpush.delivered() {
        let enc = subscriber.decrypt(&r.body).expect("the subscriber decrypts");
        let note = decrypt_push(&browser.push_key, std::str::from_utf8(&enc).unwrap()).unwrap();
        *web_counts.entry(note.hash).or_insert(0) += 1;
    }
    let mut hms_counts = HashMap::new();
    for r in hms.delivered() {
        let note = decrypt_push(&huawei.push_key, &r.data["enc"]).unwrap();
        *hms_counts.entry(note.hash).or_insert(0) += 1;
    }
    let logs = std::fs::read_to_string(&log).unwrap_or_default();
    assert_each_once(&web_counts, &hashes, &format!("Web Push; log:\n{logs}"));
    assert_each_once(&hms_counts, &hashes, &format!("HMS; log:\n{logs}"));
}
