//! Issue 7, limits: rate limits per IP and per account, the mailbox, long-poll and
//! connection caps, and the per-(app, provider) circuit breaker of the notifier.
//!
//! Every refusal must be RESOURCE_EXHAUSTED with a retry hint (RetryInfo and the
//! `retry-after-ms` metadata) and must leave nothing stored or changed.

// Test code: a failed unwrap is a failed test with its line.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tidings_mock_push::ApnsFailure;
use tidings_tests::{
    Account, STEP, TestRelay,
    push::{Device, PUSH_WAIT, PushRig, subscribe_request},
    tidings_relay::config::Config,
    within,
};
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

/// Asserts a refusal for a limit: the code, the message, and both retry hints.
fn assert_exhausted(status: &Status, says: &str) {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains(says),
        "{:?} should say {says:?}",
        status.message()
    );
    assert!(status.message().contains("retry in "), "{:?}", status.message());
    let hint = status
        .get_error_details()
        .retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo in the details");
    assert!(hint > Duration::ZERO);
    let ms: u64 = status
        .metadata()
        .get("retry-after-ms")
        .expect("retry-after-ms metadata")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(u128::from(ms), hint.as_millis());
}

async fn relay_with(change: impl FnOnce(&mut Config)) -> TestRelay {
    TestRelay::builder().configure(change).start().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deposits_are_limited_per_target_mailbox_apart_from_the_owner() {
    tidings_tests::require_backend!();
    let relay = relay_with(|c| {
        c.rate_limits.store_per_account_per_s = 1;
        c.rate_limits.store_per_account_burst = 3;
    })
    .await;
    let (alice, bob) = (Account::random(), Account::random());
    let mut client = relay.mailbox.clone();
    for i in 0..3u8 {
        within(STEP, "deposit", client.store(alice.deposit(0, &[i], 0)))
            .await
            .expect("within the burst");
    }
    let refused = within(STEP, "deposit", client.store(alice.deposit(0, b"spam", 0)))
        .await
        .unwrap_err();
    assert_exhausted(
        &refused,
        "Store: too many deposits into this mailbox (1/s, bursts of 3)",
    );
    assert_eq!(
        relay.stored_count(&alice, 0).await,
        3,
        "the refused one is not stored"
    );
    // The owner's own Stores and other mailboxes have their own budgets.
    within(STEP, "owner store", client.store(alice.store(20, b"config", 0)))
        .await
        .expect("the owner is not held up by deposit spam");
    within(STEP, "deposit", client.store(bob.deposit(0, b"hi", 0)))
        .await
        .expect("another mailbox");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_are_limited_per_client_ip() {
    tidings_tests::require_backend!();
    let relay = relay_with(|c| {
        c.rate_limits.exempt_loopback = false;
        c.rate_limits.store_per_ip_per_s = 1;
        c.rate_limits.store_per_ip_burst = 2;
    })
    .await;
    let mut client = relay.mailbox.clone();
    let accounts: Vec<Account> = (0..3).map(|_| Account::random()).collect();
    for a in &accounts[..2] {
        within(STEP, "store", client.store(a.deposit(0, b"x", 0)))
            .await
            .expect("within the burst");
    }
    let refused = within(STEP, "store", client.store(accounts[2].deposit(0, b"x", 0)))
        .await
        .unwrap_err();
    assert_exhausted(
        &refused,
        "Store: too many calls from your IP address (1/s, bursts of 2)",
    );
    assert_eq!(relay.stored_count(&accounts[2], 0).await, 0);
    // Retrieve has a budget of its own.
    within(
        STEP,
        "retrieve",
        client.retrieve(accounts[0].retrieve(0, 0, 0, 0)),
    )
    .await
    .expect("another call's budget");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_names_the_client_and_others_cannot() {
    tidings_tests::require_backend!();
    let relay = relay_with(|c| {
        c.rate_limits.exempt_loopback = false;
        c.rate_limits.trusted_proxies = vec!["127.0.0.0/8".into()];
        c.rate_limits.retrieve_per_ip_per_s = 1;
        c.rate_limits.retrieve_per_ip_burst = 1;
    })
    .await;
    let alice = Account::random();
    let mut client = relay.mailbox.clone();
    let from = |ip: &str| {
        let mut r = Request::new(alice.retrieve(0, 0, 0, 0));
        r.metadata_mut().insert("x-forwarded-for", ip.parse().unwrap());
        r
    };
    within(STEP, "retrieve", client.retrieve(from("203.0.113.7")))
        .await
        .expect("first from this client");
    let refused = within(STEP, "retrieve", client.retrieve(from("203.0.113.7")))
        .await
        .unwrap_err();
    assert_exhausted(&refused, "Retrieve: too many calls from your IP address");
    within(
        STEP,
        "retrieve",
        client.retrieve(from("198.51.100.1, 203.0.113.9")),
    )
    .await
    .expect("another client behind the proxy (the last entry counts)");
    relay.shutdown().await;

    // Without trusting the peer, the header is ignored: all calls are the peer's.
    let relay = relay_with(|c| {
        c.rate_limits.exempt_loopback = false;
        c.rate_limits.retrieve_per_ip_per_s = 1;
        c.rate_limits.retrieve_per_ip_burst = 1;
    })
    .await;
    let mut client = relay.mailbox.clone();
    within(STEP, "retrieve", client.retrieve(from("203.0.113.1")))
        .await
        .expect("first");
    let refused = within(STEP, "retrieve", client.retrieve(from("203.0.113.2")))
        .await
        .unwrap_err();
    assert_exhausted(&refused, "from your IP address");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrieves_are_limited_per_account_after_the_signature() {
    tidings_tests::require_backend!();
    let relay = relay_with(|c| {
        c.rate_limits.retrieve_per_account_per_s = 1;
        c.rate_limits.retrieve_per_account_burst = 2;
    })
    .await;
    let (alice, mallory) = (Account::random(), Account::random());
    let mut client = relay.mailbox.clone();
    // Forged Retrieves naming alice are refused for their signature and spend nothing.
    for _ in 0..5 {
        let mut forged = mallory.retrieve(0, 0, 0, 0);
        forged.account = alice.id().to_vec();
        let e = within(STEP, "forged", client.retrieve(forged)).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
    }
    for _ in 0..2 {
        within(STEP, "retrieve", client.retrieve(alice.retrieve(0, 0, 0, 0)))
            .await
            .expect("alice's own budget is whole");
    }
    let refused = within(STEP, "retrieve", client.retrieve(alice.retrieve(0, 0, 0, 0)))
        .await
        .unwrap_err();
    assert_exhausted(
        &refused,
        "Retrieve: too many calls for this account (1/s, bursts of 2)",
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribes_are_limited_per_account() {
    tidings_tests::require_backend!();
    let rig = PushRig::builder()
        .configure(|c| {
            c.rate_limits.subscribe_per_account_per_s = 1;
            c.rate_limits.subscribe_per_account_burst = 1;
        })
        .start()
        .await;
    let alice = Account::random();
    let (phone, tablet) = (Device::apns(), Device::apns());
    rig.subscribe(&alice, &phone, &[0], false).await;
    let req = subscribe_request(&alice, &rig.relay_pub(), &[0], false, &tablet.registration());
    let refused = rig.try_subscribe(req).await.unwrap_err();
    assert_exhausted(
        &refused,
        "Subscribe: too many calls for this account (1/s, bursts of 1)",
    );
    assert!(
        rig.subscription(&alice, &tablet.device_id).await.is_none(),
        "nothing stored"
    );
    assert!(rig.subscription(&alice, &phone.device_id).await.is_some());
    // Another account is not affected.
    rig.subscribe(&Account::random(), &tablet, &[0], false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_mailbox_refuses_new_messages_until_one_is_deleted() {
    tidings_tests::require_backend!();
    let relay = relay_with(|c| c.limits.max_messages_per_mailbox = 3).await;
    let alice = Account::random();
    let mut client = relay.mailbox.clone();
    let mut hashes = Vec::new();
    for i in 0..3u8 {
        let r = within(STEP, "store", client.store(alice.deposit(0, &[i], 0)))
            .await
            .unwrap()
            .into_inner();
        hashes.push(r.hash);
    }
    let refused = within(STEP, "store", client.store(alice.deposit(0, b"fourth", 0)))
        .await
        .unwrap_err();
    assert_exhausted(&refused, "Store: mailbox is full (3 messages");
    assert_eq!(relay.stored_count(&alice, 0).await, 3);
    // A repeat of a stored message is still the duplicate it is.
    let again = within(STEP, "store", client.store(alice.deposit(0, &[1], 0)))
        .await
        .expect("a repeat changes nothing")
        .into_inner();
    assert!(again.duplicate);
    // Other namespaces are other mailboxes.
    within(STEP, "store", client.store(alice.deposit(1, b"elsewhere", 0)))
        .await
        .unwrap();
    within(STEP, "delete", client.delete(alice.delete(0, &hashes[..1])))
        .await
        .unwrap();
    within(STEP, "store", client.store(alice.deposit(0, b"fourth", 0)))
        .await
        .expect("room again");
    assert_eq!(relay.stored_count(&alice, 0).await, 3);
    // The owner's own namespaces are not capped: compaction must always find room.
    for i in 0..4u8 {
        within(STEP, "owner store", client.store(alice.store(10, &[i], 0)))
            .await
            .expect("the owner's namespace takes more than the deposit cap");
    }
    assert_eq!(relay.stored_count(&alice, 10).await, 4);
    relay.shutdown().await;
}

/// Waits (bounded) until `n` long-polls are parked.
async fn parked(relay: &TestRelay, n: usize) {
    within(STEP, "long-polls park", async {
        while relay.relay().waiters().parked() < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polls_are_capped_per_account_and_per_node() {
    tidings_tests::require_backend!();
    let relay = relay_with(|c| {
        c.limits.max_long_polls = 2;
        c.limits.max_long_polls_per_account = 1;
    })
    .await;
    let (alice, bob, carol) = (Account::random(), Account::random(), Account::random());
    let mut client = relay.mailbox.clone();
    let first = {
        let (mut c, a) = (client.clone(), alice.clone());
        tokio::spawn(async move { c.retrieve(a.retrieve(0, 0, 0, 30_000)).await })
    };
    parked(&relay, 1).await;
    let refused = within(STEP, "second", client.retrieve(alice.retrieve(1, 0, 0, 30_000)))
        .await
        .unwrap_err();
    assert_exhausted(&refused, "this account already has 1 long-polls waiting");
    // A Retrieve that need not wait, or that finds messages, is answered as usual.
    within(STEP, "plain", client.retrieve(alice.retrieve(1, 0, 0, 0)))
        .await
        .expect("no wait, no slot");
    within(STEP, "store", client.store(alice.deposit(1, b"there", 0)))
        .await
        .unwrap();
    let page = within(STEP, "found", client.retrieve(alice.retrieve(1, 0, 0, 30_000)))
        .await
        .expect("something to answer at once")
        .into_inner();
    assert_eq!(page.messages.len(), 1);

    let second = {
        let (mut c, b) = (client.clone(), bob.clone());
        tokio::spawn(async move { c.retrieve(b.retrieve(0, 0, 0, 30_000)).await })
    };
    parked(&relay, 2).await;
    let refused = within(STEP, "third", client.retrieve(carol.retrieve(0, 0, 0, 30_000)))
        .await
        .unwrap_err();
    assert_exhausted(&refused, "the relay has 2 long-polls waiting");

    // A Store wakes alice's long-poll and frees its slot.
    within(STEP, "store", client.store(alice.deposit(0, b"wake", 0)))
        .await
        .unwrap();
    let woken = within(STEP, "woken", first).await.unwrap().unwrap().into_inner();
    assert_eq!(woken.messages.len(), 1);
    let third = {
        let (mut c, k) = (client.clone(), carol.clone());
        tokio::spawn(async move { c.retrieve(k.retrieve(0, 0, 0, 30_000)).await })
    };
    parked(&relay, 2).await;
    for (who, task) in [(&bob, second), (&carol, third)] {
        within(STEP, "store", client.store(who.deposit(0, b"wake", 0)))
            .await
            .unwrap();
        within(STEP, "woken", task).await.unwrap().unwrap();
    }
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_wait_until_one_closes() {
    tidings_tests::require_backend!();
    let relay = relay_with(|c| c.limits.max_connections = 2).await;
    // The harness's own client holds one connection; this one takes the other.
    let alice = Account::random();
    let mut second = relay.connect().await;
    within(STEP, "second", second.retrieve(alice.retrieve(0, 0, 0, 0)))
        .await
        .unwrap();
    let addr = relay.addr;
    let third = tokio::spawn(async move {
        let mut c = tidings_tests::connect_mailbox(addr).await;
        c.retrieve(alice.retrieve(0, 0, 0, 0)).await
    });
    // Not taken while both slots are held (a bounded look, not a timing claim: it
    // cannot finish before a slot is free).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!third.is_finished(), "a third connection is held back");
    drop(second);
    within(STEP, "third", third)
        .await
        .unwrap()
        .expect("served once a slot is free");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_stops_calling_a_failing_provider_while_others_flow() {
    tidings_tests::require_backend!();
    let rig = PushRig::builder()
        .configure(|c| {
            c.push.concurrency = 4;
            c.push.breaker_failures = 3;
            // Longer than the test: once open, it stays open while we look.
            c.push.breaker_cooldown_ms = 600_000;
        })
        .start()
        .await;
    let (alice, _, _) = rig.account_with_phone_and_droid(false).await;
    rig.apns.set_outage(Some(ApnsFailure::unavailable()));
    for i in 0..10 {
        rig.deposit(&alice, 0, format!("m{i}").as_bytes()).await;
    }
    let got = rig.fcm.wait_for(10, PUSH_WAIT).await.unwrap();
    assert_eq!(got.len(), 10, "FCM pushes all flow");
    // Give the deferred APNs jobs their first retries.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let calls = rig.apns.requests();
    // At most the three failures that open it plus the two the in-flight share (half of
    // concurrency) had out at once; without the breaker, each of the 10 jobs calls.
    assert!((3..=5).contains(&calls), "APNs called {calls} times");
    assert!(rig.apns.delivered().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_app_provider_does_not_hold_up_others_and_recovers() {
    tidings_tests::require_backend!();
    let rig = PushRig::builder()
        .configure(|c| {
            c.push.timeout_ms = 500;
            c.push.concurrency = 2;
            c.push.breaker_failures = 2;
            c.push.breaker_cooldown_ms = 300;
        })
        .start()
        .await;
    let alice = Account::random();
    let (phone, droid, dev_build) = (Device::apns(), Device::fcm(), Device::apns_sandbox());
    for d in [&phone, &droid, &dev_build] {
        rig.subscribe(&alice, d, &[0], false).await;
    }
    // Longer than the test: a hung request is never answered while we look.
    rig.apns.set_delay(Some(Duration::from_secs(600)));
    let mut hashes = Vec::new();
    for i in 0..8 {
        hashes.push(rig.deposit(&alice, 0, format!("m{i}").as_bytes()).await.hash);
    }
    // With two delivery slots and the hanging APNs holding at most one of them, FCM and
    // the APNs sandbox (another endpoint) get everything.
    rig.fcm.wait_for(8, PUSH_WAIT).await.unwrap();
    rig.sandbox.wait_for(8, PUSH_WAIT).await.unwrap();
    assert!(rig.apns.delivered().is_empty());

    // Apple recovers: a probe closes the breaker and every message arrives once.
    rig.apns.set_delay(None);
    rig.apns.wait_for(8, PUSH_WAIT).await.unwrap();
    rig.settle().await;
    let mut pushed: Vec<Vec<u8>> = rig
        .apns
        .delivered()
        .iter()
        .map(|p| phone.decrypt(p.body["enc"].as_str().expect("enc")).hash)
        .collect();
    pushed.sort();
    hashes.sort();
    assert_eq!(pushed, hashes);
}
