//! Fast Mode over Web Push (UnifiedPush distributors, browsers) and Huawei Push Kit, end to
//! end: a relay in-process pushing through the mock Web Push service and the mock Push Kit
//! of `tidings-mock-push`.
//!
//! Every address a test uses is on the loopback interface. The SSRF cases check that the
//! relay refuses the endpoint (at Subscribe, or before connecting) and that the mock saw
//! nothing: the private and link-local addresses are refused before any connection is
//! attempted, which is exactly what is tested.

// Test code: a failed unwrap is a failed test with its line.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tidings_mock_push::{
    HmsFailure, HmsRequest, MockWebPush, WebPushFailure, WebPushMockConfig, WebPushRequest,
};
use tidings_proto::v1::{GetRelayInfoRequest, PushNotification, PushService};
use tidings_tests::{
    Account, STEP,
    push::{APP_ID, Device, PUSH_WAIT, PushRig, subscribe_request},
    within,
};
use tonic::Code;

/// The owner-only config namespace (pushes there are not urgent).
const CONFIG_NS: i32 = 12;

/// The notification inside a Web Push message: the mock decrypted the RFC 8291 layer, the
/// device's push key opens the `enc` string.
fn open_web_push(device: &Device, r: &WebPushRequest) -> PushNotification {
    let enc = r
        .plaintext
        .as_deref()
        .expect("the subscriber decrypted the message");
    device.decrypt(std::str::from_utf8(enc).expect("the Web Push payload is the enc string"))
}

fn open_hms(device: &Device, r: &HmsRequest) -> PushNotification {
    device.decrypt(&r.data["enc"])
}

/// Decrypts a Web Push body with Mozilla's Python `http_ece` (an implementation
/// independent of both the relay's and the mock's), or `None` when it is not installed.
fn http_ece_decrypt(device: &Device, body: &[u8]) -> Option<Vec<u8>> {
    const DECRYPT: &str = r#"
import base64, sys
import http_ece
from cryptography.hazmat.primitives.asymmetric import ec
def unb64(s): return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
key = ec.derive_private_key(int.from_bytes(unb64(sys.argv[1]), "big"), ec.SECP256R1())
out = http_ece.decrypt(unb64(sys.argv[3]), private_key=key, auth_secret=unb64(sys.argv[2]), version="aes128gcm")
print(base64.urlsafe_b64encode(out).decode().rstrip("="))
"#;
    let sub = &device.web_push.as_ref()?.subscriber;
    let out = Command::new("python3")
        .args([
            "-c",
            DECRYPT,
            &URL_SAFE_NO_PAD.encode(sub.private_key()),
            &URL_SAFE_NO_PAD.encode(sub.auth),
            &URL_SAFE_NO_PAD.encode(body),
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("No module named"), "http_ece failed: {err}");
        eprintln!("SKIPPED (independent check): Python's http_ece is not installed (pip install http-ece)");
        return None;
    }
    URL_SAFE_NO_PAD
        .decode(String::from_utf8(out.stdout).ok()?.trim())
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_info_publishes_each_apps_services_and_vapid_key() {
    tidings_tests::require_backend!();
    let rig = PushRig::start().await;
    let mut client = rig.relay().relay_client().await;
    let info = within(STEP, "relay info", client.get_relay_info(GetRelayInfoRequest {}))
        .await
        .unwrap()
        .into_inner();
    let app = info
        .apps
        .iter()
        .find(|a| a.app_id == APP_ID)
        .expect("the app is listed");
    let services = [
        PushService::Apns,
        PushService::Fcm,
        PushService::Webpush,
        PushService::Hms,
    ]
    .map(|s| s as i32);
    assert_eq!(app.services, services);
    assert_eq!(app.vapid_public_key, rig.vapid.public_key.to_vec());
    let ios_only = info.apps.iter().find(|a| a.app_id != APP_ID).unwrap();
    assert_eq!(ios_only.services, [PushService::Apns as i32]);
    assert!(ios_only.vapid_public_key.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_push_device_gets_one_push_and_both_layers_decrypt() {
    tidings_tests::require_backend!();
    let rig = PushRig::start().await;
    let account = Account::random();
    let device = Device::webpush(&rig);
    assert!(
        rig.subscribe(&account, &device, &[0, CONFIG_NS], true)
            .await
            .added
    );
    let stored = rig.deposit(&account, 0, b"hello over UnifiedPush").await;
    rig.webpush
        .wait_for(1, PUSH_WAIT)
        .await
        .expect("the push arrives");
    rig.settle().await;
    let attempts = rig.webpush.attempts();
    assert_eq!(attempts.len(), 1, "exactly one push: {attempts:?}");
    let r = &attempts[0];
    let note = open_web_push(&device, r);
    assert_eq!(note.account, account.id().to_vec());
    assert_eq!(
        (note.namespace, note.hash.clone(), note.seq),
        (0, stored.hash.clone(), stored.seq)
    );
    assert_eq!(
        (note.data.as_slice(), note.data_omitted),
        (&b"hello over UnifiedPush"[..], false)
    );
    assert_eq!(r.urgency.as_deref(), Some("high"));
    assert!(r.ttl.is_some_and(|t| t > 0), "{:?}", r.ttl);
    assert!(r.topic.as_ref().is_some_and(|t| t.len() == 32));
    assert_eq!(
        r.vapid_subject.as_deref(),
        Some(tidings_tests::push::VAPID_SUBJECT)
    );
    if let Some(plain) = http_ece_decrypt(&device, &r.body) {
        assert_eq!(
            Some(plain),
            r.plaintext,
            "http_ece reads what the relay encrypted"
        );
    }

    // A config change is pushed too, but not urgently.
    rig.store_signed(&account, CONFIG_NS, b"config").await;
    rig.webpush
        .wait_for(2, PUSH_WAIT)
        .await
        .expect("the config push arrives");
    let r = &rig.webpush.delivered()[1];
    assert_eq!(r.urgency.as_deref(), Some("normal"));
    assert_eq!(open_web_push(&device, r).namespace, CONFIG_NS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hms_device_gets_one_push_and_it_decrypts() {
    tidings_tests::require_backend!();
    let rig = PushRig::start().await;
    let account = Account::random();
    let device = Device::hms();
    rig.subscribe(&account, &device, &[0, CONFIG_NS], true).await;
    let stored = rig.deposit(&account, 0, b"hello over Push Kit").await;
    rig.hms.wait_for(1, PUSH_WAIT).await.expect("the push arrives");
    rig.settle().await;
    let attempts = rig.hms.attempts();
    assert_eq!(attempts.len(), 1, "exactly one push");
    let r = &attempts[0];
    assert_eq!(r.token, device.token);
    let note = open_hms(&device, r);
    assert_eq!(note.account, account.id().to_vec());
    assert_eq!(
        (note.namespace, note.hash.clone(), note.seq),
        (0, stored.hash.clone(), stored.seq)
    );
    assert_eq!(note.data, b"hello over Push Kit");
    assert_eq!(r.body["message"]["android"]["urgency"], "HIGH");
    rig.store_signed(&account, CONFIG_NS, b"config").await;
    rig.hms
        .wait_for(2, PUSH_WAIT)
        .await
        .expect("the config push arrives");
    assert_eq!(
        rig.hms.delivered()[1].body["message"]["android"]["urgency"],
        "NORMAL"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gone_web_push_subscription_or_dead_hms_token_is_pruned() {
    tidings_tests::require_backend!();
    let rig = PushRig::start().await;
    let account = Account::random();
    let (gone_404, gone_410, huawei) = (Device::webpush(&rig), Device::webpush(&rig), Device::hms());
    for d in [&gone_404, &gone_410, &huawei] {
        rig.subscribe(&account, d, &[0], false).await;
    }
    rig.webpush
        .mark_gone(&gone_404.web_push.as_ref().unwrap().id, 404);
    rig.webpush
        .mark_gone(&gone_410.web_push.as_ref().unwrap().id, 410);
    rig.hms.mark_dead(&huawei.token);
    rig.deposit(&account, 0, b"to nobody").await;
    rig.settle().await;
    for d in [&gone_404, &gone_410, &huawei] {
        assert!(
            rig.subscription(&account, &d.device_id).await.is_none(),
            "{:?} pruned",
            d.service
        );
    }
    let statuses: Vec<u16> = rig.webpush.attempts().iter().map(|a| a.status).collect();
    assert_eq!(statuses.len(), 2);
    assert!(statuses.contains(&404) && statuses.contains(&410));
    assert_eq!(rig.hms.attempts()[0].code, "80300007");
    // Nothing more is sent to them.
    rig.deposit(&account, 0, b"again").await;
    rig.settle().await;
    assert_eq!((rig.webpush.attempts().len(), rig.hms.attempts().len()), (2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_too_large_answer_is_followed_by_the_push_without_its_data() {
    tidings_tests::require_backend!();
    let rig = PushRig::start().await;
    let account = Account::random();
    let (web, huawei) = (Device::webpush(&rig), Device::hms());
    rig.subscribe(&account, &web, &[0], true).await;
    rig.subscribe(&account, &huawei, &[0], true).await;
    rig.webpush.fail_next(1, WebPushFailure::too_large());
    rig.hms.fail_next(1, HmsFailure::too_large());
    let stored = rig.deposit(&account, 0, b"too big, they say").await;
    rig.settle().await;
    let web_attempts = rig.webpush.attempts();
    assert_eq!(
        web_attempts.iter().map(|a| a.status).collect::<Vec<_>>(),
        [413, 201]
    );
    let note = open_web_push(&web, &web_attempts[1]);
    assert_eq!((note.data_omitted, note.data.len(), note.data_len), (true, 0, 17));
    assert_eq!(note.hash, stored.hash);
    // The mock refused the first try before reading it; the subscriber can still open it.
    let subscriber = &web.web_push.as_ref().unwrap().subscriber;
    let first = subscriber.decrypt(&web_attempts[0].body).unwrap();
    let first = web.decrypt(std::str::from_utf8(&first).unwrap());
    assert!(!first.data_omitted, "the first try carried the data");
    let hms_attempts = rig.hms.attempts();
    assert_eq!(
        hms_attempts.iter().map(|a| a.code.as_str()).collect::<Vec<_>>(),
        ["80300008", "80000000"]
    );
    let note = open_hms(&huawei, &hms_attempts[1]);
    assert_eq!((note.data_omitted, note.data.len()), (true, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_503_storm_every_message_arrives_once() {
    tidings_tests::require_backend!();
    const MESSAGES: usize = 6;
    // The outbox's retries are under test, not the breaker's cool-down (limits.rs has it).
    let rig = PushRig::builder()
        .configure(|c| c.push.breaker_cooldown_ms = 100)
        .start()
        .await;
    let account = Account::random();
    let (web, huawei) = (Device::webpush(&rig), Device::hms());
    rig.subscribe(&account, &web, &[0], false).await;
    rig.subscribe(&account, &huawei, &[0], false).await;
    rig.webpush.set_outage(Some(WebPushFailure::unavailable()));
    rig.hms.set_outage(Some(HmsFailure::flow_control()));
    let mut hashes = Vec::new();
    for i in 0..MESSAGES {
        hashes.push(
            rig.deposit(&account, 0, format!("storm {i}").as_bytes())
                .await
                .hash,
        );
    }
    within(PUSH_WAIT, "every message is refused at least once", async {
        while rig.webpush.attempts().len() < MESSAGES || rig.hms.attempts().len() < MESSAGES {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    rig.webpush.set_outage(None);
    rig.hms.set_outage(None);
    rig.webpush
        .wait_for(MESSAGES, PUSH_WAIT)
        .await
        .expect("Web Push recovers");
    rig.hms.wait_for(MESSAGES, PUSH_WAIT).await.expect("HMS recovers");
    rig.settle().await;
    let mut web_counts: HashMap<Vec<u8>, usize> = HashMap::new();
    for r in rig.webpush.delivered() {
        *web_counts.entry(open_web_push(&web, &r).hash).or_default() += 1;
    }
    let mut hms_counts: HashMap<Vec<u8>, usize> = HashMap::new();
    for r in rig.hms.delivered() {
        *hms_counts.entry(open_hms(&huawei, &r).hash).or_default() += 1;
    }
    for h in &hashes {
        assert_eq!(web_counts.get(h), Some(&1), "Web Push: each message once");
        assert_eq!(hms_counts.get(h), Some(&1), "HMS: each message once");
    }
    assert_eq!((web_counts.len(), hms_counts.len()), (MESSAGES, MESSAGES));
}

/// A Web Push device whose endpoint is `endpoint` (keys from a mock subscription).
fn at_endpoint(rig: &PushRig, endpoint: String) -> Device {
    let mut d = Device::webpush(rig);
    d.web_push.as_mut().unwrap().endpoint = endpoint;
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_in_private_ranges_are_refused_and_never_contacted() {
    tidings_tests::require_backend!();
    // No allow-list: the relay's defaults.
    let rig = PushRig::builder()
        .configure(|c| c.webpush.allow_networks.clear())
        .start()
        .await;
    let port = rig.webpush.addr().port();
    let account = Account::random();
    let cases = [
        (
            format!("https://127.0.0.1:{port}/push/x"),
            "sealed.web_push.endpoint: host is a loopback address (127.0.0.1); this relay does not push to loopback",
        ),
        (
            "https://10.0.0.1/push/x".to_owned(),
            "sealed.web_push.endpoint: host is a private address (10.0.0.1)",
        ),
        (
            format!("https://[::1]:{port}/push/x"),
            "sealed.web_push.endpoint: host is a loopback address (::1)",
        ),
        (
            "https://169.254.169.254/latest/meta-data/".to_owned(),
            "sealed.web_push.endpoint: host is a link-local address (169.254.169.254)",
        ),
        (
            format!("https://[::ffff:127.0.0.1]:{port}/push/x"),
            "sealed.web_push.endpoint: host is a loopback address (::ffff:127.0.0.1)",
        ),
        (
            format!("http://push.example.com:{port}/push/x"),
            "sealed.web_push.endpoint: must be an https:// URL (got http://); this relay does not allow http",
        ),
        (
            format!("https://push.example.com/{}", "x".repeat(1000)),
            "sealed.web_push.endpoint: must be at most 1000 bytes (got 1025)",
        ),
    ];
    for (endpoint, says) in cases {
        let device = at_endpoint(&rig, endpoint.clone());
        let req = subscribe_request(&account, &rig.relay_pub(), &[0], false, &device.registration());
        let err = rig.try_subscribe(req).await.expect_err(&endpoint);
        assert_eq!(err.code(), Code::InvalidArgument, "{endpoint}: {err:?}");
        assert!(err.message().starts_with(says), "{endpoint}: {}", err.message());
        assert!(rig.subscription(&account, &device.device_id).await.is_none());
    }
    // A name is resolved when the push is sent: `localhost` is loopback, so the relay
    // refuses it before connecting and drops the subscription.
    let by_name = at_endpoint(&rig, format!("https://localhost:{port}/push/x"));
    assert!(rig.subscribe(&account, &by_name, &[0], false).await.added);
    rig.deposit(&account, 0, b"to localhost").await;
    rig.settle().await;
    assert!(
        rig.subscription(&account, &by_name.device_id).await.is_none(),
        "the subscription to a loopback name is removed"
    );
    assert_eq!(rig.webpush.requests(), 0, "the mock saw nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_not_followed() {
    tidings_tests::require_backend!();
    let rig = PushRig::start().await;
    let elsewhere = MockWebPush::start(WebPushMockConfig::new(tidings_mock_push::Transport::Tls))
        .await
        .unwrap();
    let target = elsewhere.subscribe(None);
    let account = Account::random();
    let device = Device::webpush(&rig);
    rig.subscribe(&account, &device, &[0], false).await;
    rig.webpush
        .fail_next(1, WebPushFailure::redirect(&target.endpoint));
    let stored = rig.deposit(&account, 0, b"redirected?").await;
    // The 307 is a problem of the endpoint the relay reports and retries; the retry goes to
    // the endpoint itself again, never to where the redirect pointed.
    rig.webpush
        .wait_for(1, PUSH_WAIT)
        .await
        .expect("delivered on the retry");
    rig.settle().await;
    let statuses: Vec<u16> = rig.webpush.attempts().iter().map(|a| a.status).collect();
    assert_eq!(statuses, [307, 201]);
    assert_eq!(
        open_web_push(&device, &rig.webpush.delivered()[0]).hash,
        stored.hash
    );
    assert_eq!(elsewhere.requests(), 0, "the redirect target heard nothing");
    assert!(rig.subscription(&account, &device.device_id).await.is_some());
}

/// An unsigned deposit into namespace 0 of the account with key `to`.
async fn deposit_to(rig: &PushRig, to: [u8; 32], data: &[u8]) {
    let mut mailbox = rig.relay().mailbox.clone();
    let req = tidings_proto::v1::StoreRequest {
        account: to.to_vec(),
        namespace: 0,
        data: data.to_vec(),
        ..Default::default()
    };
    within(STEP, "store", mailbox.store(req))
        .await
        .expect("store accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_link_accounts_take_pushes_over_web_push_and_hms() {
    tidings_tests::require_backend!();
    use tidings_device_link::account::Account as Install;
    const KEY: [u8; 32] = [42; 32];
    let rig = PushRig::start().await;
    let (web_dir, hms_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (web, _) = within(
        STEP,
        "create",
        Install::create(web_dir.path(), &KEY, rig.relay().endpoint()),
    )
    .await
    .unwrap();
    let (huawei, _) = within(
        STEP,
        "create",
        Install::create(hms_dir.path(), &KEY, rig.relay().endpoint()),
    )
    .await
    .unwrap();
    // What a UnifiedPush distributor hands the app: an endpoint and the subscription's keys.
    let sub = rig.webpush.subscribe(Some(rig.vapid.public_key));
    within(
        STEP,
        "subscribe over Web Push",
        web.subscribe_web_push(
            &sub.endpoint,
            &sub.subscriber.p256dh,
            &sub.subscriber.auth,
            APP_ID,
        ),
    )
    .await
    .unwrap();
    let token = tidings_tests::push::random_token(PushService::Hms);
    within(
        STEP,
        "subscribe over HMS",
        huawei.subscribe(PushService::Hms, &token, APP_ID),
    )
    .await
    .unwrap();
    // A key that is not on the curve is refused, naming the field.
    let err = within(
        STEP,
        "bad key",
        web.subscribe_web_push(&sub.endpoint, &[4; 65], &sub.subscriber.auth, APP_ID),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("sealed.web_push.p256dh"), "{err}");

    deposit_to(&rig, web.account_key(), b"for the UnifiedPush phone").await;
    deposit_to(&rig, huawei.account_key(), b"for the Huawei phone").await;
    let web_push = rig.webpush.wait_for(1, PUSH_WAIT).await.unwrap().remove(0);
    let hms_push = rig.hms.wait_for(1, PUSH_WAIT).await.unwrap().remove(0);
    let enc = String::from_utf8(web_push.plaintext.unwrap()).unwrap();
    let got = within(STEP, "handle the Web Push", web.handle_push(&enc))
        .await
        .unwrap();
    assert_eq!(got.messages[0].data, b"for the UnifiedPush phone");
    let got = within(
        STEP,
        "handle the HMS push",
        huawei.handle_push(&hms_push.data["enc"]),
    )
    .await
    .unwrap();
    assert_eq!(got.messages[0].data, b"for the Huawei phone");
}
