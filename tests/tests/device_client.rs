//! device-link's `RelayClient` against a real relay: Store, Retrieve (with long-poll),
//! Delete, GetRelayInfo, errors, retries, and QR linking through a one-time mailbox.

// Test code: a failed unwrap is a failed test with its line.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tidings_device_link::{
    client::{ClientOptions, RelayClient, RetryPolicy},
    identity::Identity,
    link::{self, LinkOffer, LinkResponder},
};
use tidings_proto::hash::message_hash;
use tidings_tests::{STEP, TestRelay, within};
use tonic::Code;

const TTL: i64 = 60_000;

async fn client_for(relay: &TestRelay) -> RelayClient {
    within(STEP, "connect", RelayClient::connect(&relay.endpoint()))
        .await
        .expect("the client connects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_retrieve_delete_through_the_client() {
    let relay = TestRelay::start().await;
    let client = client_for(&relay).await;
    let me = Identity::create();

    // Anyone deposits into a public namespace, unsigned.
    let sent = within(STEP, "store", client.store(&me.account(), 0, b"hello", TTL))
        .await
        .unwrap();
    assert_eq!(sent.hash, message_hash(&me.account(), 0, b"hello"));
    assert!(!sent.duplicate);
    let again = within(STEP, "store", client.store(&me.account(), 0, b"hello", TTL))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.seq, sent.seq);

    // The owner stores into an owner-only namespace, signed.
    let own = within(STEP, "store_owned", client.store_owned(&me, 12, b"config", TTL))
        .await
        .unwrap();
    assert_eq!(own.hash, message_hash(&me.account(), 12, b"config"));

    let page = within(STEP, "retrieve", client.retrieve(&me, 0, 0, 0, 0))
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 1);
    assert_eq!(page.messages[0].data, b"hello");
    let page = within(STEP, "retrieve", client.retrieve(&me, 12, 0, 0, 0))
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 1);
    assert_eq!(page.messages[0].data, b"config");

    let deleted = within(
        STEP,
        "delete",
        client.delete(&me, 0, std::slice::from_ref(&sent.hash)),
    )
    .await
    .unwrap();
    assert_eq!(deleted, 1);
    let page = within(STEP, "retrieve", client.retrieve(&me, 0, 0, 0, 0))
        .await
        .unwrap();
    assert!(page.messages.is_empty());
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_wakes_when_a_message_arrives() {
    let relay = TestRelay::start().await;
    let client = client_for(&relay).await;
    let me = Identity::create();
    let account = me.account();

    let poller = {
        let client = client.clone();
        tokio::spawn(async move { client.retrieve(&me, 3, 0, 0, 30_000).await })
    };
    // Whether the store lands before or after the poll starts waiting, the poll returns it.
    within(STEP, "store", client.store(&account, 3, b"ping", TTL))
        .await
        .unwrap();
    let page = within(STEP, "long-poll", poller).await.unwrap().unwrap();
    assert_eq!(page.messages.len(), 1);
    assert_eq!(page.messages[0].data, b"ping");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_with_nothing_new_ends_empty() {
    let relay = TestRelay::start().await;
    let client = client_for(&relay).await;
    let me = Identity::create();
    within(STEP, "store", client.store(&me.account(), 0, b"old", TTL))
        .await
        .unwrap();
    let first = within(STEP, "retrieve", client.retrieve(&me, 0, 0, 0, 0))
        .await
        .unwrap();
    let cursor = first.messages[0].seq;
    let page = within(STEP, "long-poll", client.retrieve(&me, 0, cursor, 0, 300))
        .await
        .unwrap();
    assert!(page.messages.is_empty());
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_errors_keep_their_code_and_message() {
    let relay = TestRelay::start().await;
    let client = client_for(&relay).await;
    let me = Identity::create();
    // Below the relay's minimum TTL of 10 s.
    let err = within(STEP, "store", client.store(&me.account(), 0, b"x", 5))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");
    assert!(err.to_string().contains("ttl"), "{err}");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_info_gives_the_sealing_key() {
    let relay = TestRelay::start().await;
    let client = client_for(&relay).await;
    let info = within(STEP, "relay info", client.relay_info()).await.unwrap();
    assert_eq!(
        info.x25519_public_key,
        relay.relay().keys().x25519_public().to_vec()
    );
    assert_eq!(info.max_message_bytes, 64 * 1024);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_retries_until_the_relay_is_up() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let options = ClientOptions {
        retry: RetryPolicy {
            max_attempts: 100,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
        },
        ..ClientOptions::default()
    };
    let client = RelayClient::connect_lazy(&format!("127.0.0.1:{port}"), options).unwrap();
    let me = Identity::create();
    let account = me.account();
    let pending = tokio::spawn({
        let client = client.clone();
        async move { client.store(&account, 0, b"eventually", TTL).await }
    });
    let relay = TestRelay::builder()
        .configure(|c| c.listen = std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .start()
        .await;
    let stored = within(STEP, "retried store", pending).await.unwrap().unwrap();
    assert_eq!(stored.hash, message_hash(&account, 0, b"eventually"));
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_links_by_qr_code_through_a_one_time_mailbox() {
    let relay = TestRelay::start().await;
    let account = Identity::create();

    // The new device shows a QR code.
    let new_client = client_for(&relay).await;
    let offer = LinkOffer::new(&relay.endpoint(), "new phone").unwrap();
    let qr = offer.qr_payload();

    // The linked device scans it, dials the relay it names, and sends only a hello.
    let responder = LinkResponder::scan(&qr).unwrap();
    let linked_client = within(
        STEP,
        "connect",
        RelayClient::connect(&responder.offer().relay_addr),
    )
    .await
    .unwrap();
    within(STEP, "hello", responder.send_hello(&linked_client))
        .await
        .unwrap();
    let pending = within(STEP, "wait for hello", offer.wait_for_hello(&new_client, STEP))
        .await
        .unwrap();
    assert_eq!(pending.sas(), responder.sas());

    // Approved: the root sealed under the hello's handshake arrives.
    within(STEP, "approve", responder.approve(&linked_client, &account))
        .await
        .unwrap();
    let linked = within(STEP, "wait for root", pending.wait_for_root(&new_client, STEP))
        .await
        .unwrap();
    assert_eq!(linked.account(), account.account());
    assert_eq!(linked.phrase(), account.phrase());
    within(STEP, "finish", pending.finish(&new_client)).await;

    // The one-time mailbox is empty afterwards.
    let left = within(
        STEP,
        "retrieve one-time mailbox",
        new_client.retrieve(offer.mailbox_key(), link::LINK_NAMESPACE, 0, 0, 0),
    )
    .await
    .unwrap();
    assert!(left.messages.is_empty());
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_a_hello_skips_junk_and_times_out_cleanly() {
    let relay = TestRelay::start().await;
    let client = client_for(&relay).await;
    let offer = LinkOffer::new(&relay.endpoint(), "new phone").unwrap();
    within(
        STEP,
        "junk",
        client.store(
            &offer.payload().mailbox,
            link::LINK_NAMESPACE,
            b"not a hello at all, not at all",
            TTL,
        ),
    )
    .await
    .unwrap();
    let err = within(
        STEP,
        "wait",
        offer.wait_for_hello(&client, Duration::from_millis(500)),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, link::LinkError::Timeout(_)), "{err:?}");
    relay.shutdown().await;
}
