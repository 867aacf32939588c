//! `/metrics` on the admin listener: after real traffic (Stores, Retrieves, a refused
//! call, subscriptions, a delivered push and a dead token) the counters moved, under the
//! right labels, and no label carries anything a client sent.

// Test code: a failed unwrap is a failed test with its line.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tidings_proto::v1::StoreRequest;
use tidings_tests::{
    Account, STEP, http_get,
    push::{Device, PUSH_WAIT, PushRig},
    within,
};

/// The value of the sample `name{labels}` (exact series), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn scrape(rig: &PushRig) -> String {
    let (status, body) = within(STEP, "scrape", http_get(rig.relay().admin_addr(), "/metrics"))
        .await
        .expect("the admin listener answers");
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_calls_sizes_subscriptions_and_pushes() {
    let rig = PushRig::start().await;
    let alice = Account::random();
    let phone = Device::apns();
    let android = Device::fcm();
    rig.subscribe(&alice, &phone, &[0], false).await;
    rig.subscribe(&alice, &android, &[0], false).await;
    // Renewing the same device is a renewal, not a second subscription.
    rig.subscribe(&alice, &phone, &[0], false).await;

    // Two deposits of known sizes; each wakes both devices.
    rig.deposit(&alice, 0, &[7; 100]).await;
    within(PUSH_WAIT, "two pushes each", async {
        rig.apns.wait_for(1, PUSH_WAIT).await.expect("APNs push");
        rig.fcm.wait_for(1, PUSH_WAIT).await.expect("FCM push");
    })
    .await;
    rig.settle().await;
    // The FCM token dies; the next push prunes the subscription.
    rig.fcm.mark_dead(&android.token);
    rig.deposit(&alice, 0, &[8; 3000]).await;
    rig.settle().await;

    let all = rig.relay().retrieve_all(&alice, 0).await;
    assert_eq!(all.len(), 2);
    // A refused call: an account of the wrong length.
    let mut client = rig.relay().mailbox.clone();
    let refused = client
        .store(StoreRequest {
            account: vec![1; 5],
            ..alice.deposit(0, b"x", 0)
        })
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    let text = scrape(&rig).await;
    // Series that also count what other tests' traffic might add: a lower bound.
    let at_least = [
        (
            r#"tidings_grpc_requests_total{rpc="/tidings.v1.Mailbox/Store",code="OK"}"#,
            2.0,
        ),
        (
            r#"tidings_grpc_requests_total{rpc="/tidings.v1.Mailbox/Store",code="INVALID_ARGUMENT"}"#,
            1.0,
        ),
        (
            r#"tidings_grpc_requests_total{rpc="/tidings.v1.Mailbox/Retrieve",code="OK"}"#,
            1.0,
        ),
        (
            r#"tidings_grpc_requests_total{rpc="/tidings.v1.Relay/Subscribe",code="OK"}"#,
            3.0,
        ),
        (
            r#"tidings_grpc_request_duration_seconds_count{rpc="/tidings.v1.Mailbox/Store"}"#,
            3.0,
        ),
        (r#"tidings_message_bytes_sum{op="retrieve"}"#, 3100.0),
        // The relay fetched its FCM OAuth token at start (the mock's token endpoint).
        (
            r#"tidings_push_token_refreshes_total{provider="fcm",result="ok"}"#,
            1.0,
        ),
    ];
    for (series, min) in at_least {
        let v = sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
        assert!(v >= min, "{series} = {v}, expected at least {min}\n{text}");
    }
    let exactly = [
        (r#"tidings_message_bytes_count{op="store"}"#, 2.0),
        (r#"tidings_message_bytes_sum{op="store"}"#, 3100.0),
        (
            r#"tidings_subscription_changes_total{service="apns",change="added"}"#,
            1.0,
        ),
        (
            r#"tidings_subscription_changes_total{service="apns",change="renewed"}"#,
            1.0,
        ),
        (
            r#"tidings_subscription_changes_total{service="fcm",change="added"}"#,
            1.0,
        ),
        (
            r#"tidings_push_outcomes_total{provider="apns",result="delivered"}"#,
            2.0,
        ),
        (
            r#"tidings_push_outcomes_total{provider="fcm",result="delivered"}"#,
            1.0,
        ),
        (
            r#"tidings_push_outcomes_total{provider="fcm",result="token_dead"}"#,
            1.0,
        ),
        (
            r#"tidings_subscription_changes_total{service="fcm",change="token_dead"}"#,
            1.0,
        ),
        ("tidings_outbox_jobs", 0.0),
        ("tidings_outbox_oldest_job_age_seconds", 0.0),
        ("tidings_open_longpolls", 0.0),
    ];
    for (series, want) in exactly {
        assert_eq!(sample(&text, series), Some(want), "{series}\n{text}");
    }

    // Nothing a client sent is a label value.
    let account_hex = hex::encode(alice.id());
    for secret in [phone.token.as_str(), android.token.as_str(), account_hex.as_str()] {
        assert!(!text.contains(secret), "a client value reached /metrics");
    }

    // A parked long-poll shows while it waits.
    let mut poller = rig.relay().connect().await;
    let last = all.iter().map(|m| m.seq).max().unwrap_or_default();
    let req = alice.retrieve(0, last, 10, 30_000);
    let parked = tokio::spawn(async move { poller.retrieve(req).await });
    within(STEP, "the long-poll is counted", async {
        loop {
            if sample(&scrape(&rig).await, "tidings_open_longpolls") == Some(1.0) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    parked.abort();
}
