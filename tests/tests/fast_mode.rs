//! Fast Mode end to end: sealed push registration (Subscribe / Unsubscribe) and encrypted
//! delivery through the mock APNs and FCM servers, with a real relay in-process.
//!
//! "No push" is checked by draining the outbox ([`PushRig::settle`]): once it is empty,
//! every provider request the relay made has been recorded by a mock.

// Test code: a failed unwrap is a failed test with its line.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use tidings_mock_push::{ApnsFailure, ApnsRequest, FcmFailure, FcmRequest};
use tidings_proto::{
    seal::seal_registration,
    v1::{PushNotification, PushService, SubscribeRequest},
};
use tidings_tests::{
    Account, STEP, now_s,
    push::{
        APNS_ONLY_APP_ID, APP_ID, Device, PUSH_WAIT, PushRig, TOPIC, signed_subscribe, subscribe_request,
        unsubscribe_request,
    },
    within,
};
use tonic::{Code, Status};

const DAY_MS: i64 = 86_400_000;

fn now_ms() -> i64 {
    now_s() * 1000
}

/// Sends a Subscribe that must be refused with `code` and a message starting with
/// `prefix`, and checks that `who` got no subscription for `device_id`.
async fn refused_subscribe(
    rig: &PushRig,
    req: SubscribeRequest,
    code: Code,
    prefix: &str,
    who: &Account,
    device_id: &[u8; 16],
) -> Status {
    let err = rig
        .try_subscribe(req)
        .await
        .expect_err("the Subscribe must be refused");
    assert_eq!(err.code(), code, "{err:?}");
    assert!(
        err.message().starts_with(prefix),
        "message {:?} should start with {prefix:?}",
        err.message()
    );
    assert!(
        rig.subscription(who, device_id).await.is_none(),
        "a refused Subscribe stored a subscription"
    );
    err
}

/// A valid request for `device` of `account`, to break one thing of.
fn good_request(rig: &PushRig, account: &Account, device: &Device) -> SubscribeRequest {
    subscribe_request(account, &rig.relay_pub(), &[0], false, &device.registration())
}

fn enc_of_apns(req: &ApnsRequest) -> &str {
    req.body["enc"].as_str().expect("an APNs push carries enc")
}

fn enc_of_fcm(req: &FcmRequest) -> &str {
    req.data.get("enc").expect("an FCM push carries data.enc")
}

/// How many delivered pushes each (token, message hash) got.
fn deliveries_by_token_and_hash(pushes: &[(String, PushNotification)]) -> HashMap<(String, Vec<u8>), usize> {
    let mut counts = HashMap::new();
    for (token, note) in pushes {
        *counts.entry((token.clone(), note.hash.clone())).or_insert(0) += 1;
    }
    counts
}

// ======================================================= Subscribe: bad input
//
// Every rule has its row in `relay_service::tests::subscribe_rules`; here, one refusal
// proves the validator is wired in (with the configured apps), plus the signature-reuse attack.

/// Session's push server lets anyone who saw a Subscribe re-use its signature with their
/// own token; here the signature covers H(sealed), so that fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_refuses_a_signature_reused_with_another_sealed_box() {
    tidings_tests::require_backend!();
    let rig = PushRig::start().await;
    let (alice, phone) = (Account::random(), Device::apns());
    let alices = good_request(&rig, &alice, &phone);
    // Mallory seals her own device for Alice's account (both keys are public) and re-uses
    // Alice's signature, ts and namespaces.
    let mallorys_phone = Device::apns();
    let mut attack = alices.clone();
    attack.sealed = seal_registration(&rig.relay_pub(), &alice.id(), &mallorys_phone.registration());
    let prefix = "signature: does not verify for this account";
    refused_subscribe(
        &rig,
        attack,
        Code::Unauthenticated,
        prefix,
        &alice,
        &mallorys_phone.device_id,
    )
    .await;
    // Even with Alice's own device id, Mallory's token does not get in.
    let mut same_id = Device::apns();
    same_id.device_id = phone.device_id;
    let mut attack = alices.clone();
    attack.sealed = seal_registration(&rig.relay_pub(), &alice.id(), &same_id.registration());
    refused_subscribe(
        &rig,
        attack,
        Code::Unauthenticated,
        prefix,
        &alice,
        &phone.device_id,
    )
    .await;

    // Alice's own request still works, and only her token receives her messages.
    assert!(rig.try_subscribe(alices).await.unwrap().added);
    rig.deposit(&alice, 0, b"for alice only").await;
    rig.apns.wait_for(1, PUSH_WAIT).await.unwrap();
    rig.settle().await;
    let tokens: Vec<String> = rig.apns.attempts().into_iter().map(|a| a.token).collect();
    assert_eq!(tokens, vec![phone.token.clone()]);
}

/// The wiring: a registration for an app configured without FCM is refused by the running
/// relay with its code and message, and stores nothing; the same app takes APNs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_refuses_an_app_without_that_service() {
    tidings_tests::require_backend!();
    let rig = PushRig::start().await;
    let (alice, droid) = (Account::random(), Device::fcm());
    let mut reg = droid.registration();
    reg.app_id = APNS_ONLY_APP_ID.into();
    let req = subscribe_request(&alice, &rig.relay_pub(), &[0], false, &reg);
    let prefix = format!("sealed.app_id: this relay serves no app \"{APNS_ONLY_APP_ID}\" with FCM");
    refused_subscribe(
        &rig,
        req,
        Code::InvalidArgument,
        &prefix,
        &alice,
        &droid.device_id,
    )
    .await;
    let mut phone = Device::apns();
    phone.app_id = APNS_ONLY_APP_ID.into();
    assert!(rig.subscribe(&Account::random(), &phone, &[0], false).await.added);
}

// ======================================================= Unsubscribe: bad input

// Every rule has its row in `relay_service::tests::unsubscribe_rules`; here, one refusal
// proves the validator is wired in and removes nothing.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_by_someone_else_is_refused_and_removes_nothing() {
    tidings_tests::require_backend!();
    let rig = PushRig::start().await;
    let (alice, mallory, phone) = (Account::random(), Account::random(), Device::apns());
    rig.subscribe(&alice, &phone, &[0], false).await;
    let mut by_mallory = unsubscribe_request(&alice, &phone.device_id, now_s());
    by_mallory.signature = unsubscribe_request(&mallory, &phone.device_id, now_s()).signature;
    let err = rig.try_unsubscribe(by_mallory).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (
            Code::Unauthenticated,
            "signature: does not verify for this account"
        )
    );
    // Mallory unsubscribing Alice's device id under her own account removes nothing of Alice's.
    let own = rig
        .try_unsubscribe(unsubscribe_request(&mallory, &phone.device_id, now_s()))
        .await
        .unwrap();
    assert!(!own.removed);
    assert!(
        rig.subscription(&alice, &phone.device_id).await.is_some(),
        "still subscribed"
    );
}

// ======================================================= happy paths

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_info_names_the_apps_and_the_sealing_key() {
    tidings_tests::require_backend!();
    let rig = PushRig::start().await;
    let mut client = rig.relay().relay_client().await;
    let info = within(
        STEP,
        "relay info",
        client.get_relay_info(tidings_proto::v1::GetRelayInfoRequest {}),
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(info.x25519_public_key, rig.relay_pub().to_vec());
    assert_eq!(info.app_ids, [APP_ID, APNS_ONLY_APP_ID]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_adds_then_updates_and_lives_30_days() {
    tidings_tests::require_backend!();
    let rig = PushRig::start().await;
    let (alice, phone) = (Account::random(), Device::apns());
    let before = now_ms();
    let first = rig.subscribe(&alice, &phone, &[0], false).await;
    let after = now_ms() + 1000;
    assert!(first.added);
    assert!(
        (before + 30 * DAY_MS..=after + 30 * DAY_MS).contains(&first.expires_ms),
        "expires_ms {} is not now + 30 days",
        first.expires_ms
    );
    let stored = rig.subscription(&alice, &phone.device_id).await.expect("stored");
    assert_eq!(
        (stored.namespaces, stored.want_data, stored.expires_ms),
        (vec![0], false, first.expires_ms)
    );

    // The client library seals and signs the same way; re-subscribing updates.
    let client = within(
        STEP,
        "connect",
        tidings_device_link::client::RelayClient::connect(&rig.relay().endpoint()),
    )
    .await
    .unwrap();
    let again = within(
        STEP,
        "client subscribe",
        client.subscribe(alice.signing_key(), &[12, 0], true, phone.registration()),
    )
    .await
    .unwrap();
    assert!(!again.added);
    assert!(again.expires_ms >= first.expires_ms);
    let stored = rig.subscription(&alice, &phone.device_id).await.expect("stored");
    assert_eq!((stored.namespaces, stored.want_data), (vec![0, 12], true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_replaces_the_old_one() {
    tidings_tests::require_backend!();
    let rig = PushRig::start().await;
    let (alice, phone) = (Account::random(), Device::apns());
    assert!(rig.subscribe(&alice, &phone, &[0], false).await.added);
    let rotated = phone.rotated();
    assert!(
        !rig.subscribe(&alice, &rotated, &[0], false).await.added,
        "same device: updated"
    );
    let sent = rig.deposit(&alice, 0, b"after rotation").await;
    let got = rig.apns.wait_for(1, PUSH_WAIT).await.unwrap();
    rig.settle().await;
    assert_eq!(got[0].token, rotated.token);
    assert_eq!(rotated.decrypt(enc_of_apns(&got[0])).hash, sent.hash);
    let attempts = rig.apns.attempts();
    assert_eq!(attempts.len(), 1, "one push, to the new token only");
    assert!(attempts.iter().all(|a| a.token != phone.token));

    // Moving to another provider is a rotation too.
    let mut android = Device::fcm();
    android.device_id = phone.device_id;
    android.push_key = phone.push_key;
    assert!(!rig.subscribe(&alice, &android, &[0], false).await.added);
    rig.deposit(&alice, 0, b"now on android").await;
    rig.fcm.wait_for(1, PUSH_WAIT).await.unwrap();
    rig.settle().await;
    assert_eq!(rig.apns.attempts().len(), 1, "nothing more through APNs");
    assert_eq!(rig.fcm.attempts()[0].token, android.token);
}

/// Apple may grow device tokens: any length Subscribe accepts must also be pushable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_longest_accepted_apns_token_is_pushed() {
    tidings_tests::require_backend!();
    let rig = PushRig::start().await;
    let alice = Account::random();
    let mut phone = Device::apns();
    phone.token = hex::encode([0xab; 256]);
    rig.subscribe(&alice, &phone, &[0], false).await;
    let sent = rig.deposit(&alice, 0, b"long token").await;
    let got = rig.apns.wait_for(1, PUSH_WAIT).await.unwrap();
    assert_eq!(got[0].token, phone.token);
    assert_eq!(phone.decrypt(enc_of_apns(&got[0])).hash, sent.hash);
    assert!(rig.subscription(&alice, &phone.device_id).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_removes_then_finds_nothing() {
    tidings_tests::require_backend!();
    let rig = PushRig::start().await;
    let (alice, phone) = (Account::random(), Device::apns());
    rig.subscribe(&alice, &phone, &[0], false).await;
    let first = rig
        .try_unsubscribe(unsubscribe_request(&alice, &phone.device_id, now_s()))
        .await
        .unwrap();
    assert!(first.removed);
    assert!(rig.subscription(&alice, &phone.device_id).await.is_none());
    let second = rig
        .try_unsubscribe(unsubscribe_request(&alice, &phone.device_id, now_s()))
        .await
        .unwrap();
    assert!(!second.removed);
    rig.deposit(&alice, 0, b"nobody listens").await;
    rig.settle().await;
    assert!(rig.apns.attempts().is_empty(), "no push after unsubscribing");
}

/// Sign-out queues a signed Unsubscribe and sends it when the relay can be reached, maybe
/// much later: it still removes the registration made before it was signed, but the same
/// kind of old request never removes a registration renewed after it (so a replay cannot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsubscribe_sent_an_hour_late_removes_only_older_registrations() {
    use tidings_device_link::client::{RelayClient, signed_unsubscribe};
    tidings_tests::require_backend!();
    let clock = tidings_relay::clock::ManualClock::starting_now();
    let rig = PushRig::builder()
        .clock(std::sync::Arc::new(clock.clone()))
        .start()
        .await;
    let (alice, phone, droid) = rig.account_with_phone_and_droid(false).await;
    // Both signed now (the relay's clock still reads the system time), sent an hour later.
    let droid_signs_out = signed_unsubscribe(alice.signing_key(), &droid.device_id);
    let before_renewal = signed_unsubscribe(alice.signing_key(), &phone.device_id);
    clock.advance_ms(3_600_000);
    let sealed = seal_registration(&rig.relay_pub(), &alice.id(), &phone.registration());
    let renew = signed_subscribe(&alice, &[0], false, clock_now(&clock) / 1000, sealed);
    assert!(
        !rig.try_subscribe(renew).await.unwrap().added,
        "the phone renewed"
    );

    let client = within(STEP, "connect", RelayClient::connect(&rig.relay().endpoint()))
        .await
        .unwrap();
    let removed = within(STEP, "late unsubscribe", client.send_unsubscribe(droid_signs_out))
        .await
        .unwrap();
    assert!(
        removed,
        "an hour-old Unsubscribe removes the registration made before it"
    );
    assert!(rig.subscription(&alice, &droid.device_id).await.is_none());
    let removed = within(STEP, "older unsubscribe", client.send_unsubscribe(before_renewal))
        .await
        .unwrap();
    assert!(!removed, "a registration renewed after the signature stays");
    assert!(rig.subscription(&alice, &phone.device_id).await.is_some());

    let sent = rig.deposit(&alice, 0, b"after the late unsubscribe").await;
    let got = rig.apns.wait_for(1, PUSH_WAIT).await.unwrap();
    assert_eq!(phone.decrypt(enc_of_apns(&got[0])).hash, sent.hash);
    rig.settle().await;
    assert!(rig.fcm.attempts().is_empty(), "no push to the signed-out device");
}

// ======================================================= delivery

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_reaches_apns_as_an_encrypted_alert() {
    tidings_tests::require_backend!();
    let rig = PushRig::start().await;
    let (alice, phone) = (Account::random(), Device::apns());
    rig.subscribe(&alice, &phone, &[0, 12], false).await;
    let sent = rig.deposit(&alice, 0, b"hello alice").await;
    let got = rig.apns.wait_for(1, PUSH_WAIT).await.unwrap();
    rig.settle().await;
    assert_eq!(rig.apns.attempts().len(), 1, "exactly one push");
    let push = &got[0];
    assert_eq!(push.token, phone.token);
    assert_eq!(push.header("apns-push-type"), Some("alert"));
    assert_eq!(push.header("apns-priority"), Some("10"));
    assert_eq!(push.header("apns-topic"), Some(TOPIC));
    let expiration = (sent.expires_ms / 1000).to_string();
    assert_eq!(push.header("apns-expiration"), Some(expiration.as_str()));
    let collapse = push.header("apns-collapse-id").expect("a collapse id");
    assert!(!collapse.is_empty() && collapse.len() <= 64);
    assert!(
        push.header("authorization")
            .is_some_and(|a| a.starts_with("bearer "))
    );
    assert_eq!(push.body["aps"]["mutable-content"], 1);
    assert!(push.body["aps"]["alert"].is_object(), "{}", push.body);
    assert!(push.body["aps"].get("content-available").is_none());

    let note = phone.decrypt(enc_of_apns(push));
    assert_eq!(note.account, alice.id().to_vec());
    assert_eq!(note.namespace, 0);
    assert_eq!(note.hash, sent.hash);
    assert_eq!(note.seq, sent.seq);
    assert_eq!(note.expires_ms, sent.expires_ms);
    assert!(note.created_ms > 0 && note.created_ms < note.expires_ms);
    assert_eq!(
        (note.data_len, note.data.is_empty(), note.data_omitted),
        (11, true, true)
    );
    // The app's own decryption (device-link) agrees.
    let via_client = tidings_device_link::client::decrypt_push(enc_of_apns(push), &phone.push_key).unwrap();
    assert_eq!(via_client, note);

    // Apple sees neither the account nor the content.
    let raw = push.body.to_string();
    assert!(!raw.contains(&hex::encode(alice.id())) && !raw.contains("hello alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_only_message_arrives_as_a_background_push() {
    tidings_tests::require_backend!();
    let rig = PushRig::start().await;
    let (alice, phone) = (Account::random(), Device::apns());
    rig.subscribe(&alice, &phone, &[0, 12], false).await;
    let sent = rig.store_signed(&alice, 12, b"config delta").await;
    let got = rig.apns.wait_for(1, PUSH_WAIT).await.unwrap();
    let push = &got[0];
    assert_eq!(push.header("apns-push-type"), Some("background"));
    assert_eq!(push.header("apns-priority"), Some("5"));
    assert_eq!(push.header("apns-topic"), Some(TOPIC));
    let expiration = (sent.expires_ms / 1000).to_string();
    assert_eq!(push.header("apns-expiration"), Some(expiration.as_str()));
    assert_eq!(push.body["aps"]["content-available"], 1);
    assert!(push.body["aps"].get("alert").is_none() && push.body["aps"].get("mutable-content").is_none());
    let note = phone.decrypt(enc_of_apns(push));
    assert_eq!((note.namespace, note.hash, note.seq), (12, sent.hash, sent.seq));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_registrations_go_to_the_sandbox_endpoint() {
    tidings_tests::require_backend!();
    let rig = PushRig::start().await;
    let (alice, dev_build) = (Account::random(), Device::apns_sandbox());
    rig.subscribe(&alice, &dev_build, &[0], false).await;
    let sent = rig.deposit(&alice, 0, b"to the sandbox").await;
    let got = rig.sandbox.wait_for(1, PUSH_WAIT).await.unwrap();
    rig.settle().await;
    assert_eq!(got[0].token, dev_build.token);
    assert_eq!(dev_build.decrypt(enc_of_apns(&got[0])).hash, sent.hash);
    assert!(rig.apns.attempts().is_empty(), "nothing went to production");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fcm_gets_data_only_messages_high_for_messages_normal_for_config() {
    tidings_tests::require_backend!();
    let rig = PushRig::start().await;
    let (alice, droid) = (Account::random(), Device::fcm());
    rig.subscribe(&alice, &droid, &[0, 12], false).await;
    let message = rig.deposit(&alice, 0, b"hello android").await;
    let config = rig.store_signed(&alice, 12, b"config").await;
    let got = rig.fcm.wait_for(2, PUSH_WAIT).await.unwrap();
    rig.settle().await;
    assert_eq!(rig.fcm.attempts().len(), 2);
    for push in &got {
        assert_eq!(push.project, tidings_tests::push::PROJECT);
        assert_eq!(push.token, droid.token);
        let msg = push.body["message"].as_object().unwrap();
        let mut keys: Vec<&str> = msg.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["android", "data", "token"],
            "a data-only message: {}",
            push.body
        );
        assert_eq!(push.data.keys().collect::<Vec<_>>(), ["enc"]);
        let auth = push.headers.get("authorization").and_then(|v| v.to_str().ok());
        assert!(
            auth.is_some_and(|a| a.starts_with("Bearer ya29.mock-")),
            "{auth:?}"
        );
        let note = droid.decrypt(enc_of_fcm(push));
        let (sent, priority) = if note.namespace == 0 {
            (&message, "HIGH")
        } else {
            (&config, "NORMAL")
        };
        assert_eq!((note.hash.as_slice(), note.seq), (sent.hash.as_slice(), sent.seq));
        let android = &msg["android"];
        assert_eq!(android["priority"], priority);
        assert!(android["collapse_key"].is_string());
        let ttl: i64 = android["ttl"]
            .as_str()
            .unwrap()
            .strip_suffix('s')
            .unwrap()
            .parse()
            .unwrap();
        let left = (sent.expires_ms - now_ms()) / 1000;
        assert!(
            (left - 120..=left + 120).contains(&ttl),
            "ttl {ttl}s vs {left}s left"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn want_data_includes_data_that_fits_and_omits_the_rest() {
    tidings_tests::require_backend!();
    let rig = PushRig::start().await;
    let (alice, phone, droid) = rig.account_with_phone_and_droid(true).await;
    let small = b"small enough to ride along".to_vec();
    let large: Vec<u8> = (0..3200u32).map(|i| (i % 251) as u8).collect();
    let small_sent = rig.deposit(&alice, 0, &small).await;
    let large_sent = rig.deposit(&alice, 0, &large).await;
    let apns = rig.apns.wait_for(2, PUSH_WAIT).await.unwrap();
    let fcm = rig.fcm.wait_for(2, PUSH_WAIT).await.unwrap();
    rig.settle().await;
    let notes = apns
        .iter()
        .map(|p| {
            assert!(p.body_len <= 4096, "APNs body {} bytes", p.body_len);
            phone.decrypt(enc_of_apns(p))
        })
        .chain(fcm.iter().map(|p| {
            assert!(
                enc_of_fcm(p).len() + 3 <= 4000,
                "FCM data {} bytes",
                enc_of_fcm(p).len()
            );
            droid.decrypt(enc_of_fcm(p))
        }));
    for note in notes {
        if note.hash == small_sent.hash {
            assert_eq!(
                (note.data.as_slice(), note.data_omitted),
                (small.as_slice(), false)
            );
            assert_eq!(note.data_len as usize, small.len());
        } else {
            assert_eq!(note.hash, large_sent.hash);
            assert!(
                note.data.is_empty() && note.data_omitted,
                "3 KB does not fit a push"
            );
            assert_eq!(note.data_len as usize, large.len());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_want_data_no_data_is_sent() {
    tidings_tests::require_backend!();
    let rig = PushRig::start().await;
    let (alice, phone, droid) = rig.account_with_phone_and_droid(false).await;
    rig.deposit(&alice, 0, b"tiny").await;
    let a = rig.apns.wait_for(1, PUSH_WAIT).await.unwrap();
    let f = rig.fcm.wait_for(1, PUSH_WAIT).await.unwrap();
    for note in [
        phone.decrypt(enc_of_apns(&a[0])),
        droid.decrypt(enc_of_fcm(&f[0])),
    ] {
        assert_eq!(
            (note.data.is_empty(), note.data_omitted, note.data_len),
            (true, true, 4)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_the_device_did_not_subscribe_to_is_not_pushed() {
    tidings_tests::require_backend!();
    let rig = PushRig::start().await;
    let (alice, phone) = (Account::random(), Device::apns());
    rig.subscribe(&alice, &phone, &[1, 12], false).await;
    rig.deposit(&alice, 0, b"namespace 0").await;
    rig.store_signed(&alice, 13, b"namespace 13").await;
    // Someone else's mailbox, same namespace: not Alice's device's business either.
    rig.deposit(&Account::random(), 1, b"bob's").await;
    let marker = rig.deposit(&alice, 1, b"namespace 1").await;
    rig.apns.wait_for(1, PUSH_WAIT).await.unwrap();
    rig.settle().await;
    let attempts = rig.apns.attempts();
    assert_eq!(attempts.len(), 1, "only the subscribed namespace");
    assert_eq!(phone.decrypt(enc_of_apns(&attempts[0])).hash, marker.hash);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_pushes_share_one_provider_jwt_and_one_oauth_token() {
    tidings_tests::require_backend!();
    let rig = PushRig::start().await;
    let (alice, _, _) = rig.account_with_phone_and_droid(false).await;
    for i in 0..20 {
        rig.deposit(&alice, 0, format!("message {i}").as_bytes()).await;
    }
    rig.apns.wait_for(20, PUSH_WAIT).await.unwrap();
    rig.fcm.wait_for(20, PUSH_WAIT).await.unwrap();
    rig.settle().await;
    assert_eq!(
        rig.apns.distinct_provider_tokens(),
        1,
        "one APNs JWT, never one per request"
    );
    assert_eq!(
        rig.fcm.token_grants(),
        1,
        "one OAuth access token, fetched at start"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_devices_on_one_account_each_get_their_own_push() {
    tidings_tests::require_backend!();
    let rig = PushRig::start().await;
    let alice = Account::random();
    let devices = [Device::apns(), Device::apns_sandbox(), Device::fcm()];
    for d in &devices {
        rig.subscribe(&alice, d, &[0], false).await;
    }
    let sent = rig.deposit(&alice, 0, b"to every device").await;
    let encs = [
        enc_of_apns(&rig.apns.wait_for(1, PUSH_WAIT).await.unwrap()[0]).to_owned(),
        enc_of_apns(&rig.sandbox.wait_for(1, PUSH_WAIT).await.unwrap()[0]).to_owned(),
        enc_of_fcm(&rig.fcm.wait_for(1, PUSH_WAIT).await.unwrap()[0]).to_owned(),
    ];
    rig.settle().await;
    for (i, device) in devices.iter().enumerate() {
        assert_eq!(device.decrypt(&encs[i]).hash, sent.hash);
        for (j, other) in devices.iter().enumerate() {
            if i != j {
                assert!(
                    tidings_proto::push::decrypt_push(&other.push_key, &encs[i]).is_err(),
                    "each push is under its own device's key"
                );
            }
        }
    }
    assert_eq!(
        rig.apns.attempts().len() + rig.sandbox.attempts().len() + rig.fcm.attempts().len(),
        3
    );
}

// ======================================================= provider answers

/// Subscribes a device, makes the mock answer something, stores a message, and waits
/// until the outbox is empty again.
async fn push_once(rig: &PushRig, alice: &Account, device: &Device) {
    rig.subscribe(alice, device, &[0], false).await;
    rig.deposit(alice, 0, b"first").await;
    rig.settle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_unregistered_removes_the_subscription() {
    tidings_tests::require_backend!();
    let rig = PushRig::start().await;
    let (alice, phone) = (Account::random(), Device::apns());
    rig.apns.mark_dead(&phone.token);
    push_once(&rig, &alice, &phone).await;
    let attempts = rig.apns.attempts();
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        (attempts[0].status, attempts[0].reason.as_deref()),
        (410, Some("Unregistered"))
    );
    assert!(
        rig.subscription(&alice, &phone.device_id).await.is_none(),
        "subscription removed"
    );
    rig.deposit(&alice, 0, b"second").await;
    rig.settle().await;
    assert_eq!(rig.apns.attempts().len(), 1, "no push after the token died");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_bad_device_token_and_token_not_for_topic_remove_the_subscription() {
    tidings_tests::require_backend!();
    let rig = PushRig::start().await;
    let (alice, bob) = (Account::random(), Account::random());
    let (phone, other_apps_phone) = (Device::apns(), Device::apns());
    rig.apns
        .bind_token_topic(&other_apps_phone.token, "com.example.other");
    push_once(&rig, &bob, &other_apps_phone).await;
    assert_eq!(
        rig.apns.attempts()[0].reason.as_deref(),
        Some("DeviceTokenNotForTopic")
    );
    assert!(
        rig.subscription(&bob, &other_apps_phone.device_id)
            .await
            .is_none()
    );

    rig.apns.fail_next(1, ApnsFailure::new(400, "BadDeviceToken"));
    push_once(&rig, &alice, &phone).await;
    assert_eq!(rig.apns.attempts()[1].reason.as_deref(), Some("BadDeviceToken"));
    assert!(rig.subscription(&alice, &phone.device_id).await.is_none());
    assert!(rig.apns.delivered().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fcm_unregistered_removes_the_subscription() {
    tidings_tests::require_backend!();
    let rig = PushRig::start().await;
    let (alice, droid) = (Account::random(), Device::fcm());
    rig.fcm.mark_dead(&droid.token);
    push_once(&rig, &alice, &droid).await;
    let attempts = rig.fcm.attempts();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].status, 404);
    assert!(
        rig.subscription(&alice, &droid.device_id).await.is_none(),
        "subscription removed"
    );
    rig.deposit(&alice, 0, b"second").await;
    rig.settle().await;
    assert_eq!(rig.fcm.attempts().len(), 1, "no push after the token died");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_storm_is_retried_and_delivered_exactly_once() {
    tidings_tests::require_backend!();
    let rig = PushRig::start().await;
    let (alice, phone, droid) = rig.account_with_phone_and_droid(false).await;
    rig.apns.fail_next(3, ApnsFailure::unavailable().retry_after(1));
    rig.fcm.fail_next(3, FcmFailure::unavailable().retry_after(1));
    let sent = rig.deposit(&alice, 0, b"through the storm").await;
    let a = rig.apns.wait_for(1, PUSH_WAIT).await.unwrap();
    let f = rig.fcm.wait_for(1, PUSH_WAIT).await.unwrap();
    rig.settle().await;
    assert_eq!(phone.decrypt(enc_of_apns(&a[0])).hash, sent.hash);
    assert_eq!(droid.decrypt(enc_of_fcm(&f[0])).hash, sent.hash);
    let apns_statuses: Vec<u16> = rig.apns.attempts().iter().map(|a| a.status).collect();
    let fcm_statuses: Vec<u16> = rig.fcm.attempts().iter().map(|a| a.status).collect();
    assert_eq!(apns_statuses, [503, 503, 503, 200]);
    assert_eq!(fcm_statuses, [503, 503, 503, 200]);
    assert!(rig.subscription(&alice, &phone.device_id).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_errors_keep_the_token_and_are_retried() {
    tidings_tests::require_backend!();
    let rig = PushRig::start().await;
    let (alice, phone, droid) = rig.account_with_phone_and_droid(false).await;
    // A topic the key may not push to, and a Firebase sender mismatch: the relay's
    // configuration is wrong, not the device's token.
    rig.apns.fail_next(1, ApnsFailure::new(400, "TopicDisallowed"));
    rig.apns
        .fail_next(1, ApnsFailure::new(403, "InvalidProviderToken"));
    rig.fcm.fail_next(1, FcmFailure::sender_id_mismatch());
    rig.deposit(&alice, 0, b"after the fix").await;
    rig.apns.wait_for(1, PUSH_WAIT).await.unwrap();
    rig.fcm.wait_for(1, PUSH_WAIT).await.unwrap();
    rig.settle().await;
    let reasons: Vec<Option<String>> = rig.apns.attempts().into_iter().map(|a| a.reason).collect();
    assert_eq!(
        reasons,
        [
            Some("TopicDisallowed".to_owned()),
            Some("InvalidProviderToken".to_owned()),
            None
        ]
    );
    let statuses: Vec<u16> = rig.fcm.attempts().iter().map(|a| a.status).collect();
    assert_eq!(statuses, [403, 200]);
    assert!(rig.subscription(&alice, &phone.device_id).await.is_some());
    assert!(rig.subscription(&alice, &droid.device_id).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_refused_for_itself_is_dropped_and_the_token_kept() {
    tidings_tests::require_backend!();
    let rig = PushRig::start().await;
    let (alice, phone) = (Account::random(), Device::apns());
    rig.apns.fail_next(1, ApnsFailure::new(400, "BadPriority"));
    push_once(&rig, &alice, &phone).await;
    assert_eq!(rig.apns.attempts().len(), 1, "not retried");
    assert!(
        rig.subscription(&alice, &phone.device_id).await.is_some(),
        "token kept"
    );
    rig.deposit(&alice, 0, b"next one").await;
    rig.apns.wait_for(1, PUSH_WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_provider_does_not_hold_up_other_devices() {
    tidings_tests::require_backend!();
    let rig = PushRig::builder()
        .configure(|c| {
            c.push.timeout_ms = 500;
            c.push.concurrency = 4;
        })
        .start()
        .await;
    let alice = Account::random();
    let (phone, dev_build, droid) = (Device::apns(), Device::apns_sandbox(), Device::fcm());
    for d in [&phone, &dev_build, &droid] {
        rig.subscribe(&alice, d, &[0], false).await;
    }
    // Longer than the test: a hung request is never answered while we look.
    rig.apns.set_delay(Some(Duration::from_secs(600)));
    let mut hashes = Vec::new();
    for i in 0..6 {
        hashes.push(
            rig.deposit(&alice, 0, format!("message {i}").as_bytes())
                .await
                .hash,
        );
    }
    rig.sandbox.wait_for(6, PUSH_WAIT).await.unwrap();
    rig.fcm.wait_for(6, PUSH_WAIT).await.unwrap();
    assert!(rig.apns.delivered().is_empty());
    assert!(rig.apns.requests() > 0, "APNs production was tried");

    // Apple recovers: the retries deliver every message, once each.
    rig.apns.set_delay(None);
    let got = rig.apns.wait_for(6, PUSH_WAIT).await.unwrap();
    rig.settle().await;
    let mut pushed: Vec<Vec<u8>> = got.iter().map(|p| phone.decrypt(enc_of_apns(p)).hash).collect();
    pushed.sort();
    hashes.sort();
    assert_eq!(pushed, hashes);
    assert_eq!(rig.apns.delivered().len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_retried_past_max_age() {
    tidings_tests::require_backend!();
    let rig = PushRig::builder()
        .configure(|c| c.push.max_age_ms = 1_000)
        .start()
        .await;
    let (alice, phone) = (Account::random(), Device::apns());
    rig.apns.set_outage(Some(ApnsFailure::unavailable()));
    push_once(&rig, &alice, &phone).await;
    assert_eq!(
        rig.apns.attempts().len(),
        1,
        "the first retry would be past max_age: dropped"
    );
    assert!(
        rig.subscription(&alice, &phone.device_id).await.is_some(),
        "the token is not at fault"
    );
    rig.apns.set_outage(None);
    rig.deposit(&alice, 0, b"once Apple is back").await;
    rig.apns.wait_for(1, PUSH_WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_fcm_access_token_is_replaced_once() {
    tidings_tests::require_backend!();
    let rig = PushRig::start().await;
    let (alice, droid) = (Account::random(), Device::fcm());
    rig.subscribe(&alice, &droid, &[0], false).await;
    rig.fcm.revoke_access_tokens();
    rig.deposit(&alice, 0, b"with a fresh token").await;
    rig.fcm.wait_for(1, PUSH_WAIT).await.unwrap();
    rig.settle().await;
    assert_eq!(rig.fcm.token_grants(), 2, "the warm-up token and one replacement");
    assert_eq!(rig.fcm.delivered().len(), 1);
}

/// Starts an APNs outage, stores a message and waits for the first failed attempt.
async fn pending_push(rig: &PushRig, alice: &Account, phone: &Device) -> tidings_proto::v1::StoreResponse {
    rig.subscribe(alice, phone, &[0], false).await;
    rig.apns.set_outage(Some(ApnsFailure::unavailable()));
    let sent = rig.deposit(alice, 0, b"pending").await;
    within(PUSH_WAIT, "a first attempt", async {
        while rig.apns.attempts().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribing_cancels_pending_pushes() {
    tidings_tests::require_backend!();
    let rig = PushRig::start().await;
    let (alice, phone) = (Account::random(), Device::apns());
    pending_push(&rig, &alice, &phone).await;
    let reply = rig
        .try_unsubscribe(unsubscribe_request(&alice, &phone.device_id, now_s()))
        .await
        .unwrap();
    assert!(reply.removed);
    rig.apns.set_outage(None);
    rig.settle().await;
    assert!(rig.apns.delivered().is_empty(), "no push after unsubscribing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_message_is_not_pushed_late() {
    tidings_tests::require_backend!();
    let rig = PushRig::start().await;
    let (alice, phone) = (Account::random(), Device::apns());
    let sent = pending_push(&rig, &alice, &phone).await;
    let mut mailbox = rig.relay().mailbox.clone();
    let deleted = within(
        STEP,
        "delete",
        mailbox.delete(alice.delete(0, std::slice::from_ref(&sent.hash))),
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(deleted.deleted, 1);
    rig.apns.set_outage(None);
    rig.settle().await;
    assert!(rig.apns.delivered().is_empty(), "the app already deleted it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_message_is_not_pushed_late() {
    tidings_tests::require_backend!();
    let clock = tidings_relay::clock::ManualClock::starting_now();
    let rig = PushRig::builder()
        .clock(std::sync::Arc::new(clock.clone()))
        .start()
        .await;
    let (alice, phone) = (Account::random(), Device::apns());
    rig.subscribe(&alice, &phone, &[0], false).await;
    rig.apns.set_outage(Some(ApnsFailure::unavailable()));
    let mut mailbox = rig.relay().mailbox.clone();
    within(
        STEP,
        "store",
        mailbox.store(alice.deposit(0, b"short-lived", 10_000)),
    )
    .await
    .unwrap();
    within(PUSH_WAIT, "a first attempt", async {
        while rig.apns.attempts().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    clock.advance_ms(11_000);
    rig.apns.set_outage(None);
    rig.settle().await;
    assert!(rig.apns.delivered().is_empty(), "expired before Apple came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_subscription_gets_no_push_until_renewed() {
    tidings_tests::require_backend!();
    let clock = tidings_relay::clock::ManualClock::starting_now();
    let rig = PushRig::builder()
        .clock(std::sync::Arc::new(clock.clone()))
        .start()
        .await;
    let (alice, phone) = (Account::random(), Device::apns());
    let first = rig.subscribe(&alice, &phone, &[0], false).await;
    clock.advance_ms(first.expires_ms - clock_now(&clock) + 1);
    rig.deposit(&alice, 0, b"after expiry").await;
    rig.settle().await;
    assert!(
        rig.apns.attempts().is_empty(),
        "an expired subscription gets nothing"
    );
    // Renewing (signed at the relay's time) brings pushes back.
    let sealed = seal_registration(&rig.relay_pub(), &alice.id(), &phone.registration());
    let renew = signed_subscribe(&alice, &[0], false, clock_now(&clock) / 1000, sealed);
    rig.try_subscribe(renew).await.unwrap();
    let sent = rig.deposit(&alice, 0, b"renewed").await;
    let got = rig.apns.wait_for(1, PUSH_WAIT).await.unwrap();
    assert_eq!(phone.decrypt(enc_of_apns(&got[0])).hash, sent.hash);
}

fn clock_now(clock: &tidings_relay::clock::ManualClock) -> i64 {
    use tidings_relay::clock::Clock;
    clock.now_ms()
}

// ======================================================= no duplicates

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storing_the_same_bytes_twice_pushes_once() {
    tidings_tests::require_backend!();
    let rig = PushRig::start().await;
    let (alice, phone) = (Account::random(), Device::apns());
    rig.subscribe(&alice, &phone, &[0], false).await;
    let first = rig.deposit(&alice, 0, b"say it twice").await;
    let second = rig.deposit(&alice, 0, b"say it twice").await;
    assert!(second.duplicate && second.seq == first.seq);
    rig.apns.wait_for(1, PUSH_WAIT).await.unwrap();
    rig.settle().await;
    rig.deposit(&alice, 0, b"say it twice").await;
    // Deleted and stored again: a new seq, but this device already had this hash.
    let mut mailbox = rig.relay().mailbox.clone();
    within(
        STEP,
        "delete",
        mailbox.delete(alice.delete(0, std::slice::from_ref(&first.hash))),
    )
    .await
    .unwrap();
    let again = rig.deposit(&alice, 0, b"say it twice").await;
    assert!(!again.duplicate && again.seq > first.seq);
    let marker = rig.deposit(&alice, 0, b"marker").await;
    rig.apns.wait_for(2, PUSH_WAIT).await.unwrap();
    rig.settle().await;
    let hashes: Vec<Vec<u8>> = rig
        .apns
        .attempts()
        .iter()
        .map(|p| phone.decrypt(enc_of_apns(p)).hash)
        .collect();
    assert_eq!(hashes, [first.hash, marker.hash]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_device_gets_each_message_once_despite_retries() {
    tidings_tests::require_backend!();
    let rig = PushRig::start().await;
    let (alice, phone, droid) = rig.account_with_phone_and_droid(false).await;
    rig.apns.fail_next(3, ApnsFailure::too_many_requests());
    rig.fcm.fail_next(3, FcmFailure::quota_exceeded());
    let mut hashes = Vec::new();
    for i in 0..8 {
        hashes.push(rig.deposit(&alice, 0, format!("m{i}").as_bytes()).await.hash);
        // Stored twice, pushed once.
        rig.deposit(&alice, 0, format!("m{i}").as_bytes()).await;
    }
    rig.apns.wait_for(8, PUSH_WAIT).await.unwrap();
    rig.fcm.wait_for(8, PUSH_WAIT).await.unwrap();
    rig.settle().await;
    let mut pushes: Vec<(String, PushNotification)> = Vec::new();
    pushes.extend(
        rig.apns
            .delivered()
            .iter()
            .map(|p| (p.token.clone(), phone.decrypt(enc_of_apns(p)))),
    );
    pushes.extend(
        rig.fcm
            .delivered()
            .iter()
            .map(|p| (p.token.clone(), droid.decrypt(enc_of_fcm(p)))),
    );
    let counts = deliveries_by_token_and_hash(&pushes);
    assert_eq!(counts.len(), 16, "every (device, message)");
    assert!(counts.values().all(|&n| n == 1), "none twice: {counts:?}");
    for token in [&phone.token, &droid.token] {
        for h in &hashes {
            assert_eq!(counts.get(&(token.clone(), h.clone())), Some(&1));
        }
    }
}

// ======================================================= at rest

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_holds_no_token_push_key_or_subscriber_account() {
    tidings_tests::require_backend!();
    if tidings_tests::postgres_requested() {
        // This reads the embedded store's files, which hold nothing on PostgreSQL.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: at-rest file dump: embedded store only"
        );
        return;
    }
    let mut rig = PushRig::start().await;
    let (alice, bob) = (Account::random(), Account::random());
    let (phone, droid, bobs_phone) = (Device::apns(), Device::fcm(), Device::apns_sandbox());
    rig.subscribe(&alice, &phone, &[0, 12], true).await;
    rig.subscribe(&alice, &droid, &[0], true).await;
    rig.subscribe(&bob, &bobs_phone, &[0, 12], false).await;
    rig.deposit(&alice, 0, b"pushed before the dump").await;
    rig.apns.wait_for(1, PUSH_WAIT).await.unwrap();
    rig.fcm.wait_for(1, PUSH_WAIT).await.unwrap();
    rig.settle().await;
    let keys = rig.relay().relay().keys();
    let (alice_index, bob_index) = (keys.account_index(&alice.id()).0, keys.account_index(&bob.id()).0);
    rig.shutdown_relay().await;

    let mut dump = Vec::new();
    for entry in std::fs::read_dir(rig.data_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|n| n != "relay.key") {
            dump.extend(std::fs::read(&path).unwrap());
        }
    }
    let contains = |needle: &[u8]| dump.windows(needle.len()).any(|w| w == needle);
    // The dump is readable as is: the keyed indexes and Alice's (public) message are there.
    assert!(
        contains(&alice_index) && contains(&bob_index),
        "subscriptions are indexed by keyed hash"
    );
    assert!(contains(b"pushed before the dump"));
    for d in [&phone, &droid, &bobs_phone] {
        assert!(!contains(d.token.as_bytes()), "a {:?} token in clear", d.service);
        assert!(!contains(d.token.to_uppercase().as_bytes()));
        if let Ok(raw) = hex::decode(&d.token) {
            assert!(!contains(&raw), "raw APNs token bytes");
        }
        assert!(!contains(&d.push_key), "a push key in clear");
    }
    assert!(!contains(APP_ID.as_bytes()), "the app id is sealed too");
    // Bob only subscribed: nothing in the file names his account. (Alice's account key is
    // in her mailbox, which Retrieve needs; it is not linked to her tokens.)
    assert!(!contains(&bob.id()), "a subscriber's account key in clear");
    assert!(!contains(hex::encode(bob.id()).as_bytes()));
}

// ======================================================= every field, every service

/// Issue 3's first end-to-end test, once per service: exactly one push, and decrypting
/// `enc` with the device's push key gives back every field of the stored message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_delivers_one_push_that_decrypts_to_every_field() {
    tidings_tests::require_backend!();
    for service in [PushService::Apns, PushService::ApnsSandbox, PushService::Fcm] {
        let rig = PushRig::start().await;
        let (alice, device) = (Account::random(), Device::new(service));
        rig.subscribe(&alice, &device, &[0], true).await;
        let before = now_ms();
        let data = format!("hello over {service:?}").into_bytes();
        let stored = rig.deposit(&alice, 0, &data).await;
        let after = now_ms();
        let enc = match service {
            PushService::Fcm => {
                rig.fcm.wait_for(1, PUSH_WAIT).await.unwrap();
                rig.settle().await;
                let pushes = rig.fcm.attempts();
                assert_eq!(pushes.len(), 1, "{service:?}: exactly one push");
                assert_eq!(pushes[0].token, device.token);
                enc_of_fcm(&pushes[0]).to_owned()
            }
            _ => {
                let (mock, other) = if service == PushService::Apns {
                    (&rig.apns, &rig.sandbox)
                } else {
                    (&rig.sandbox, &rig.apns)
                };
                mock.wait_for(1, PUSH_WAIT).await.unwrap();
                rig.settle().await;
                let pushes = mock.attempts();
                assert_eq!(pushes.len(), 1, "{service:?}: exactly one push");
                assert_eq!(pushes[0].token, device.token);
                assert!(
                    other.attempts().is_empty(),
                    "{service:?}: the other APNs endpoint got none"
                );
                enc_of_apns(&pushes[0]).to_owned()
            }
        };
        if service != PushService::Fcm {
            assert!(rig.fcm.attempts().is_empty(), "{service:?}: FCM got none");
        }
        let note = device.decrypt(&enc);
        assert_eq!(note.account, alice.id().to_vec(), "{service:?}: account");
        assert_eq!(note.namespace, 0, "{service:?}: namespace");
        assert_eq!(note.hash, stored.hash, "{service:?}: hash");
        assert_eq!(note.seq, stored.seq, "{service:?}: seq");
        assert_eq!(note.data, data, "{service:?}: the message bytes");
        assert_eq!(note.data_len as usize, data.len(), "{service:?}: data_len");
        assert!(!note.data_omitted, "{service:?}: nothing omitted");
        assert_eq!(note.expires_ms, stored.expires_ms, "{service:?}: expiry");
        // The relay's clock stamps created_ms between the test's readings around the Store
        // (the clocks are the same; a second of slack covers the seconds-based Store ts).
        assert!(
            note.created_ms >= before - 1_000 && note.created_ms <= after + 1_000,
            "{service:?}: created_ms {} not within [{before}, {after}]",
            note.created_ms
        );
        assert!(
            note.expires_ms > note.created_ms,
            "{service:?}: expires after created"
        );
    }
}

// ======================================================= at rest, with pushes pending

/// `needle` as PostgreSQL prints a bytea (`\x` and lowercase hex, without the prefix).
fn pg_hex(needle: &[u8]) -> String {
    hex::encode(needle)
}

/// Whether `a` and `b` both occur in `hay` within `span` bytes of each other.
fn near(hay: &[u8], a: &[u8], b: &[u8], span: usize) -> bool {
    let starts = |n: &[u8]| -> Vec<usize> {
        hay.windows(n.len())
            .enumerate()
            .filter(|(_, w)| *w == n)
            .map(|(i, _)| i)
            .collect()
    };
    let (xs, ys) = (starts(a), starts(b));
    xs.iter().any(|x| ys.iter().any(|y| x.abs_diff(*y) <= span))
}

/// A dump taken while pushes are queued (the providers answer 503), the embedded store's
/// write-ahead log included, links no account to a subscription: no job or marker holds
/// the account or the message hash, and no index sits next to its account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_with_pushes_pending_links_no_account_to_a_device() {
    tidings_tests::require_backend!();
    let mut rig = PushRig::start().await;
    let (alice, bob) = (Account::random(), Account::random());
    let (phone, droid, bobs_phone) = (Device::apns(), Device::fcm(), Device::apns_sandbox());
    rig.subscribe(&alice, &phone, &[0, 12], true).await;
    rig.subscribe(&alice, &droid, &[0], true).await;
    rig.subscribe(&bob, &bobs_phone, &[0], false).await;
    rig.apns.set_outage(Some(ApnsFailure::unavailable()));
    rig.sandbox.set_outage(Some(ApnsFailure::unavailable()));
    rig.fcm.set_outage(Some(FcmFailure::unavailable()));
    let to_alice = rig.deposit(&alice, 0, b"queued for alice").await;
    let to_bob = rig.deposit(&bob, 0, b"queued for bob").await;
    // Every job was tried once and is now waiting for its retry.
    within(PUSH_WAIT, "a first attempt at every device", async {
        while rig.apns.attempts().is_empty()
            || rig.sandbox.attempts().is_empty()
            || rig.fcm.attempts().is_empty()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let pending = rig.relay().store().outbox_stats().await.unwrap().depth;
    assert_eq!(pending, 3, "the dump is taken with every push pending");
    let keys = rig.relay().relay().keys();
    let (alice_index, bob_index) = (keys.account_index(&alice.id()).0, keys.account_index(&bob.id()).0);
    let secrets = |d: &Device| {
        let mut s = vec![
            d.token.as_bytes().to_vec(),
            d.token.to_uppercase().into_bytes(),
            d.push_key.to_vec(),
        ];
        s.extend(hex::decode(&d.token).ok());
        s
    };
    let linked = [
        (
            alice.id(),
            alice_index,
            to_alice.hash.clone(),
            [phone.device_id, droid.device_id].to_vec(),
        ),
        (
            bob.id(),
            bob_index,
            to_bob.hash.clone(),
            [bobs_phone.device_id].to_vec(),
        ),
    ];

    if let Some(url) = rig.relay().storage().postgres_url() {
        let url = url.to_owned();
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let rows = |table: &'static str| {
            let client = &client;
            async move {
                client
                    .query(&format!("SELECT t::text FROM {table} t"), &[])
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| r.get::<_, String>(0))
                    .collect::<Vec<String>>()
            }
        };
        let (jobs, markers) = (rows("push_jobs").await, rows("pushed").await);
        assert_eq!(jobs.len(), 3, "{jobs:?}");
        assert_eq!(markers.len(), 3, "{markers:?}");
        let mut all = Vec::new();
        for table in [
            "messages",
            "mailbox_counters",
            "subscriptions",
            "pushed",
            "push_jobs",
        ] {
            all.extend(rows(table).await);
        }
        for (account, index, hash, devices) in &linked {
            for row in jobs.iter().chain(&markers) {
                assert!(
                    !row.contains(&pg_hex(account)),
                    "a job or marker names the account: {row}"
                );
                assert!(
                    !row.contains(&pg_hex(hash)),
                    "a job or marker names the message: {row}"
                );
            }
            for row in &markers {
                for d in devices {
                    assert!(!row.contains(&pg_hex(d)), "a marker names the device: {row}");
                }
            }
            for row in &all {
                assert!(
                    !(row.contains(&pg_hex(account)) && row.contains(&pg_hex(index))),
                    "a row holds an account and its index: {row}"
                );
            }
        }
        let everything = all.concat();
        for d in [&phone, &droid, &bobs_phone] {
            for s in secrets(d) {
                assert!(
                    !everything.contains(&pg_hex(&s)),
                    "a {:?} token or push key in clear",
                    d.service
                );
                if let Ok(text) = std::str::from_utf8(&s) {
                    assert!(!everything.contains(text), "a {:?} token in clear", d.service);
                }
            }
        }
        assert!(!everything.contains(APP_ID), "the app id is sealed too");
    } else {
        // The store file and the write-ahead log, as they are on disk right now (a crash
        // would leave the same), and again after a clean shutdown.
        let dump_dir = |dir: &std::path::Path| {
            let mut dump = Vec::new();
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.file_name().is_some_and(|n| n != "relay.key") && path.is_file() {
                    dump.extend(std::fs::read(&path).unwrap());
                }
            }
            dump
        };
        let live = dump_dir(&rig.data_dir());
        let wal = std::fs::read(rig.data_dir().join("tidings.wal")).unwrap_or_default();
        rig.shutdown_relay().await;
        let closed = dump_dir(&rig.data_dir());
        // (Between checkpoints the file may not have the latest commits yet: the log does.)
        let contains = |needle: &[u8]| closed.windows(needle.len()).any(|w| w == needle);
        assert!(
            contains(&alice_index) && contains(&bob_index),
            "subscriptions are in the dump"
        );
        for dump in [&live, &closed] {
            let contains = |needle: &[u8]| dump.windows(needle.len()).any(|w| w == needle);
            for (account, index, hash, devices) in &linked {
                // Jobs and markers of version 1 put these side by side; nothing may now.
                assert!(!near(dump, account, index, 128), "an account next to its index");
                assert!(
                    !near(dump, hash, index, 128),
                    "a message hash next to an account index"
                );
                for d in devices {
                    assert!(!near(dump, hash, d, 128), "a message hash next to a device id");
                    assert!(!near(dump, account, d, 128), "an account next to a device id");
                }
            }
            for d in [&phone, &droid, &bobs_phone] {
                for s in secrets(d) {
                    assert!(!contains(&s), "a {:?} token or push key in clear", d.service);
                }
            }
            assert!(!contains(APP_ID.as_bytes()), "the app id is sealed too");
        }
        // The log is sealed as a whole: not even the messages' accounts are in it.
        for (account, index, hash, _) in &linked {
            for needle in [&account[..], &index[..], &hash[..]] {
                assert!(
                    !wal.windows(needle.len()).any(|w| w == needle),
                    "the write-ahead log in clear"
                );
            }
        }
    }
}
