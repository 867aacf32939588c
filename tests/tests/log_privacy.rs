//! No token, push key, account key (the key derived from the recovery phrase), clear
//! account id or relay secret reaches a log line, at any level up to debug, in text or
//! JSON, through a realistic run: subscriptions on APNs and FCM, deposits and owner
//! Stores, delivered pushes, a dead token, long-polls, refused requests of every kind,
//! an Unsubscribe and a shutdown.
//!
//! The relay runs in-process under a global subscriber that writes into a buffer (this
//! file holds one test, so the global default is this test's alone). The mock providers'
//! own logs are left out: they are Apple and Google here, who do see tokens.

// Test code: a failed unwrap is a failed test with its line.
#![allow(clippy::unwrap_used)]

use base64::Engine;
use tidings_proto::v1::{DeleteRequest, StoreRequest, SubscribeRequest};
use tidings_tests::log_capture::Captured;
use tidings_tests::{
    Account, now_s,
    push::{Device, PushRig, signed_subscribe, subscribe_request, unsubscribe_request},
};
use tracing_subscriber::{EnvFilter, layer::SubscriberExt, util::SubscriberInitExt};

/// The spellings a byte secret could take in a log line: hex (both cases), base64 (all
/// four alphabets/paddings), Rust's `Debug` of the bytes, and every 8-byte window of the
/// hex (a truncated secret is still a leak).
fn spellings(name: &str, bytes: &[u8]) -> Vec<(String, String)> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let hex = hex::encode(bytes);
    let mut out = vec![
        (format!("{name} (hex)"), hex.clone()),
        (format!("{name} (HEX)"), hex.to_uppercase()),
        (format!("{name} (base64)"), STANDARD.encode(bytes)),
        (format!("{name} (base64, no pad)"), STANDARD_NO_PAD.encode(bytes)),
        (format!("{name} (base64url)"), URL_SAFE.encode(bytes)),
        (
            format!("{name} (base64url, no pad)"),
            URL_SAFE_NO_PAD.encode(bytes),
        ),
        (
            format!("{name} (Debug)"),
            format!("{:?}", &bytes[..8]).trim_end_matches(']').to_owned(),
        ),
        // The first 12 bytes in base64: a prefix of every padding variant.
        (
            format!("{name} (base64 prefix)"),
            STANDARD_NO_PAD.encode(&bytes[..12]),
        ),
        (
            format!("{name} (base64url prefix)"),
            URL_SAFE_NO_PAD.encode(&bytes[..12]),
        ),
    ];
    for (i, w) in bytes.windows(8).enumerate() {
        out.push((format!("{name} (hex bytes {i}..{})", i + 8), hex::encode(w)));
    }
    out
}

/// A string secret (a provider token): itself and every 24-character window.
fn string_spellings(name: &str, s: &str) -> Vec<(String, String)> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = vec![(name.to_owned(), s.to_owned())];
    for (i, w) in chars.windows(24).enumerate() {
        out.push((format!("{name} (chars {i}..)"), w.iter().collect()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_a_log_line_up_to_debug() {
    let captured = Captured::default();
    tracing_subscriber::registry()
        .with(EnvFilter::new("debug,tidings_mock_push=off"))
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(captured.clone())
                .with_ansi(false),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(captured.clone()),
        )
        .init();

    let mut rig = PushRig::start().await;
    let alice = Account::random();
    let bob = Account::random();
    let phone = Device::apns();
    let android = Device::fcm();
    rig.subscribe(&alice, &phone, &[0, 10], true).await;
    rig.subscribe(&alice, &android, &[0], false).await;

    // Deposits and an owner Store; pushes delivered to both devices.
    rig.deposit(&alice, 0, b"hello from bob").await;
    rig.store_signed(&alice, 10, b"a config message").await;
    rig.settle().await;
    assert!(!rig.apns.delivered().is_empty() && !rig.fcm.delivered().is_empty());

    // The APNs token dies: the next push prunes the subscription.
    rig.apns.mark_dead(&phone.token);
    rig.deposit(&alice, 0, b"second").await;
    rig.settle().await;

    // Reads, a long-poll that times out, a delete.
    let mut mailbox = rig.relay().mailbox.clone();
    let all = rig.relay().retrieve_all(&alice, 0).await;
    let last = all.iter().map(|m| m.seq).max().unwrap_or_default();
    mailbox.retrieve(alice.retrieve(0, last, 10, 50)).await.unwrap();
    let hashes: Vec<Vec<u8>> = all.iter().map(|m| m.hash.clone()).collect();
    mailbox.delete(alice.delete(0, &hashes)).await.unwrap();

    // Refused requests of every kind.
    let refused = [
        mailbox
            .store(StoreRequest {
                account: alice.id()[..31].to_vec(),
                ..alice.deposit(0, b"x", 0)
            })
            .await
            .err(),
        // An owner-only namespace signed by someone else.
        mailbox
            .store(StoreRequest {
                account: alice.id().to_vec(),
                ..bob.store(10, b"forged", 0)
            })
            .await
            .err(),
        mailbox
            .retrieve({
                let mut r = alice.retrieve(10, 0, 10, 0);
                r.signature = bob.retrieve(10, 0, 10, 0).signature;
                r
            })
            .await
            .err(),
        mailbox
            .delete(DeleteRequest {
                account: alice.id().to_vec(),
                ..bob.delete(0, &hashes)
            })
            .await
            .err(),
    ];
    assert!(refused.iter().all(Option::is_some), "{refused:?}");
    let sub_refused = [
        // Garbage sealed box.
        rig.try_subscribe(signed_subscribe(&alice, &[0], false, now_s(), vec![9; 200]))
            .await
            .err(),
        // A box sealed for Alice, presented by Bob.
        rig.try_subscribe(SubscribeRequest {
            account: bob.id().to_vec(),
            ..subscribe_request(&alice, &rig.relay_pub(), &[0], false, &android.registration())
        })
        .await
        .err(),
        // A registration naming an app the relay does not serve.
        rig.try_subscribe(subscribe_request(
            &alice,
            &rig.relay_pub(),
            &[0],
            false,
            &Device {
                app_id: "com.example.unknown".to_owned(),
                ..Device::fcm()
            }
            .registration(),
        ))
        .await
        .err(),
    ];
    assert!(sub_refused.iter().all(Option::is_some), "{sub_refused:?}");
    rig.try_unsubscribe(unsubscribe_request(&alice, &android.device_id, now_s()))
        .await
        .expect("unsubscribed");

    let keys = rig.relay().relay().keys();
    let at_rest = *keys.at_rest_key();
    let x25519_secret = keys.x25519_secret().to_bytes();
    let x25519_public = hex::encode(keys.x25519_public());
    rig.shutdown_relay().await;

    let mut secrets = Vec::new();
    for (name, account) in [("alice", &alice), ("bob", &bob)] {
        secrets.extend(spellings(&format!("{name}'s account id"), &account.id()));
        secrets.extend(spellings(
            &format!("{name}'s account key"),
            &account.signing_key().to_bytes(),
        ));
    }
    for (name, device) in [("APNs device", &phone), ("FCM device", &android)] {
        secrets.extend(string_spellings(&format!("{name} token"), &device.token));
        secrets.extend(spellings(&format!("{name} push key"), &device.push_key));
    }
    secrets.extend(spellings("relay at-rest key", &at_rest));
    secrets.extend(spellings("relay X25519 secret", &x25519_secret));

    let text = captured.text();
    // The scenario really logged at debug, so the search means something.
    assert!(text.contains("DEBUG"), "nothing logged at debug");
    assert!(
        text.contains("long-poll parked"),
        "the relay's debug lines are missing"
    );
    assert!(
        text.contains("subscription removed"),
        "the dead token was not logged"
    );
    // A positive control: the relay's public key, logged in hex at start, is found the
    // way the secrets are looked for.
    assert!(
        text.lines().any(|l| l.contains(&x25519_public)),
        "the search finds nothing"
    );
    let leaks: Vec<String> = secrets
        .iter()
        .filter_map(|(name, spelling)| {
            let line = text.lines().find(|l| l.contains(spelling.as_str()))?;
            Some(format!("{name} in: {line}"))
        })
        .collect();
    assert!(leaks.is_empty(), "secrets in the logs:\n{}", leaks.join("\n"));
}
