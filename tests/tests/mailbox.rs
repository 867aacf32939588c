//! The Mailbox service end to end: a real relay in-process on port 0, real gRPC clients.

// Test code: a failed unwrap is a failed test with its line.
#![allow(clippy::unwrap_used)]

use std::{sync::Arc, time::Duration};

use tidings_proto::{hash::message_hash, v1::StoreRequest};
use tidings_relay::clock::{Clock, ManualClock};
use tidings_tests::{Account, STEP, TestRelay, grpc_frame, raw_grpc, within};
use tonic::{Code, Status};

const DAY_MS: i64 = 86_400_000;

async fn store_ok(relay: &TestRelay, req: StoreRequest) -> tidings_proto::v1::StoreResponse {
    within(STEP, "store", relay.mailbox.clone().store(req))
        .await
        .expect("store accepted")
        .into_inner()
}

/// Sends a Store that must be refused with `code`, and checks nothing reached storage.
async fn refused_store(relay: &TestRelay, req: StoreRequest, code: Code, owner: &Account, ns: i32) -> Status {
    let err = within(STEP, "store", relay.mailbox.clone().store(req))
        .await
        .unwrap_err();
    assert_eq!(err.code(), code, "{err:?}");
    assert_eq!(
        relay.stored_count(owner, ns).await,
        0,
        "a refused Store left a message behind"
    );
    err
}

// ---------------------------------------------------------------- happy paths

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_retrieve_delete_round_trip() {
    tidings_tests::require_backend!();
    let relay = TestRelay::start().await;
    let alice = Account::random();
    let sent = store_ok(&relay, alice.deposit(0, b"hello", 0)).await;
    assert_eq!(sent.hash, message_hash(&alice.id(), 0, b"hello").to_vec());
    assert!(!sent.duplicate);

    let got = relay.retrieve_all(&alice, 0).await;
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].data.as_slice(), got[0].seq, &got[0].hash),
        (&b"hello"[..], sent.seq, &sent.hash)
    );
    assert_eq!(got[0].expires_ms, sent.expires_ms);
    assert_eq!(got[0].expires_ms - got[0].created_ms, 14 * DAY_MS);

    let deleted = relay
        .mailbox
        .clone()
        .delete(alice.delete(0, std::slice::from_ref(&sent.hash)))
        .await
        .unwrap();
    assert_eq!(deleted.into_inner().deleted, 1);
    assert!(relay.retrieve_all(&alice, 0).await.is_empty());
    let again = relay
        .mailbox
        .clone()
        .delete(alice.delete(0, &[sent.hash]))
        .await
        .unwrap();
    assert_eq!(again.into_inner().deleted, 0);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_signed_store_into_owner_only_namespace() {
    tidings_tests::require_backend!();
    let relay = TestRelay::start().await;
    let alice = Account::random();
    let sent = store_ok(&relay, alice.store(12, b"config delta", 60_000)).await;
    assert_eq!(sent.hash, message_hash(&alice.id(), 12, b"config delta").to_vec());
    let got = relay.retrieve_all(&alice, 12).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].expires_ms - got[0].created_ms, 60_000);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_storing_the_same_bytes_is_idempotent() {
    tidings_tests::require_backend!();
    let relay = TestRelay::start().await;
    let alice = Account::random();
    let first = store_ok(&relay, alice.deposit(3, b"same", 0)).await;
    let second = store_ok(&relay, alice.deposit(3, b"same", 50_000)).await;
    assert!(second.duplicate);
    assert_eq!(
        (second.hash, second.seq, second.expires_ms),
        (first.hash, first.seq, first.expires_ms)
    );
    assert_eq!(relay.retrieve_all(&alice, 3).await.len(), 1);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seq_increases_per_mailbox() {
    tidings_tests::require_backend!();
    let relay = TestRelay::start().await;
    let (alice, bob) = (Account::random(), Account::random());
    let mut last = 0;
    for i in 0..20u32 {
        let seq = store_ok(&relay, alice.deposit(0, &i.to_be_bytes(), 0)).await.seq;
        assert!(seq > last, "seq {seq} after {last}");
        last = seq;
        // Other mailboxes do not disturb the order.
        store_ok(&relay, bob.deposit(0, &i.to_be_bytes(), 0)).await;
        store_ok(&relay, alice.deposit(1, &i.to_be_bytes(), 0)).await;
    }
    let got = relay.retrieve_all(&alice, 0).await;
    let datas: Vec<u32> = got
        .iter()
        .map(|m| u32::from_be_bytes(m.data[..4].try_into().unwrap()))
        .collect();
    assert_eq!(datas, (0..20).collect::<Vec<_>>());
    assert!(got.windows(2).all(|w| w[0].seq < w[1].seq));
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_limit_and_more_page_through_a_mailbox() {
    tidings_tests::require_backend!();
    let relay = TestRelay::start().await;
    let alice = Account::random();
    for i in 0..7u8 {
        store_ok(&relay, alice.deposit(0, &[i], 0)).await;
    }
    let mut client = relay.mailbox.clone();
    let mut after = 0;
    let mut pages = Vec::new();
    loop {
        let page = client
            .retrieve(alice.retrieve(0, after, 3, 0))
            .await
            .unwrap()
            .into_inner();
        pages.push(page.messages.iter().map(|m| m.data[0]).collect::<Vec<_>>());
        after = page.messages.last().map_or(after, |m| m.seq);
        if !page.more {
            break;
        }
    }
    assert_eq!(pages, vec![vec![0, 1, 2], vec![3, 4, 5], vec![6]]);
    // Past the end: empty, no more.
    let end = client
        .retrieve(alice.retrieve(0, after, 3, 0))
        .await
        .unwrap()
        .into_inner();
    assert!(end.messages.is_empty() && !end.more);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_pages_are_read_whole_and_big_ones_split_by_bytes() {
    tidings_tests::require_backend!();
    let relay = TestRelay::builder()
        .configure(|c| {
            c.limits.max_message_bytes = 10_000;
            c.limits.max_response_bytes = 30_000;
        })
        .start()
        .await;
    let (alice, bob) = (Account::random(), Account::random());
    for i in 0..150u32 {
        store_ok(&relay, alice.deposit(0, &i.to_be_bytes(), 0)).await;
    }
    let page = relay
        .mailbox
        .clone()
        .retrieve(alice.retrieve(0, 0, 1000, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((page.messages.len(), page.more), (150, false));

    for i in 0..10u8 {
        store_ok(&relay, bob.deposit(0, &[i; 9000], 0)).await;
    }
    let page = relay
        .mailbox
        .clone()
        .retrieve(bob.retrieve(0, 0, 0, 0))
        .await
        .unwrap()
        .into_inner();
    assert!(
        page.more && !page.messages.is_empty() && page.messages.len() < 10,
        "{}",
        page.messages.len()
    );
    let all = relay.retrieve_all(&bob, 0).await;
    assert_eq!(
        all.iter().map(|m| m.data[0]).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_info_health_reflection_and_admin_answer() {
    tidings_tests::require_backend!();
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };

    let relay = TestRelay::start().await;
    let info = relay
        .relay_client()
        .await
        .get_relay_info(tidings_proto::v1::GetRelayInfoRequest {})
        .await;
    let info = info.unwrap().into_inner();
    assert_eq!(
        info.x25519_public_key,
        relay.relay().keys().x25519_public().to_vec()
    );
    assert_eq!((info.max_message_bytes, info.max_ttl_ms), (65_536, 30 * DAY_MS));
    assert!(!info.version.is_empty());
    let sub = relay
        .relay_client()
        .await
        .subscribe(tidings_proto::v1::SubscribeRequest::default())
        .await;
    // Fast Mode is served; an empty request is malformed.
    assert_eq!(sub.unwrap_err().code(), Code::InvalidArgument);

    let mut health = HealthClient::new(relay.channel().await);
    for service in ["", "tidings.v1.Mailbox", "tidings.v1.Relay"] {
        let req = HealthCheckRequest {
            service: service.to_owned(),
        };
        let status = within(STEP, "health", health.check(req))
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "service {service:?}");
    }

    let mut reflection = ServerReflectionClient::new(relay.channel().await);
    let ask = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = within(
        STEP,
        "reflection",
        reflection.server_reflection_info(tokio_stream::iter([ask])),
    )
    .await
    .unwrap()
    .into_inner();
    let answer = within(STEP, "reflection answer", answers.message())
        .await
        .unwrap()
        .unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("unexpected reflection answer {answer:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"tidings.v1.Mailbox".to_owned()), "{names:?}");
    assert!(names.contains(&"tidings.v1.Relay".to_owned()), "{names:?}");

    let (status, body) = within(
        STEP,
        "healthz",
        tidings_tests::http_get(relay.admin_addr(), "/healthz"),
    )
    .await
    .unwrap();
    assert_eq!((status, body.trim()), (200, "ok"));
    let (status, _) = within(
        STEP,
        "readyz",
        tidings_tests::http_get(relay.admin_addr(), "/readyz"),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_and_key_survive_a_restart() {
    tidings_tests::require_backend!();
    let dir = tempfile::tempdir().unwrap();
    let alice = Account::random();
    let relay = TestRelay::builder().data_dir(dir.path()).start().await;
    let key = relay.relay().keys().x25519_public();
    let sent = store_ok(&relay, alice.deposit(0, b"kept", 0)).await;
    let storage = relay.storage();
    relay.shutdown().await;

    let relay = TestRelay::builder()
        .data_dir(dir.path())
        .storage(storage)
        .start()
        .await;
    assert_eq!(relay.relay().keys().x25519_public(), key);
    let got = relay.retrieve_all(&alice, 0).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].seq, sent.seq);
    let next = store_ok(&relay, alice.deposit(0, b"after restart", 0)).await;
    assert!(next.seq > sent.seq);
    relay.shutdown().await;
}

// ---------------------------------------------------------------- bad input
//
// Every rule has its row in `mailbox::validate::tests` (`store_rules`, `retrieve_rules`,
// `delete_rules`); here, one refusal per RPC proves its validator is wired in and the
// refused request changes nothing, plus the limits that live outside the validators.

// ---------------------------------------------------------------- bad input: Store

/// The wiring: the running relay refuses one byte over the limit with the validator's
/// status and stores nothing, while the largest message fits through the transport.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_of_oversize_data_is_resource_exhausted() {
    tidings_tests::require_backend!();
    let relay = TestRelay::start().await;
    let alice = Account::random();
    let exactly = vec![7u8; 65_536];
    store_ok(&relay, alice.deposit(1, &exactly, 0)).await;
    let over = vec![7u8; 65_537];
    let e = refused_store(
        &relay,
        alice.deposit(0, &over, 0),
        Code::ResourceExhausted,
        &alice,
        0,
    )
    .await;
    assert_eq!(e.message(), "data: must be at most 65536 bytes (got 65537)");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_far_over_the_request_limit_is_refused_before_buffering() {
    tidings_tests::require_backend!();
    let relay = TestRelay::start().await;
    let alice = Account::random();
    let huge = vec![7u8; 2 * 1024 * 1024];
    refused_store(
        &relay,
        alice.deposit(0, &huge, 0),
        Code::ResourceExhausted,
        &alice,
        0,
    )
    .await;
    // The connection and the relay keep working.
    store_ok(&relay, alice.deposit(0, b"small", 0)).await;
    relay.shutdown().await;
}

// ---------------------------------------------------------------- bad input: Retrieve

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrieve_by_someone_else_is_unauthenticated() {
    tidings_tests::require_backend!();
    let relay = TestRelay::start().await;
    let (alice, mallory) = (Account::random(), Account::random());
    store_ok(&relay, alice.deposit(0, b"private", 0)).await;
    let mut req = mallory.retrieve(0, 0, 0, 0);
    req.account = alice.id().to_vec();
    let e = within(STEP, "retrieve", relay.mailbox.clone().retrieve(req))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::Unauthenticated,
            "signature: does not verify for this account"
        )
    );
    assert_eq!(relay.stored_count(&alice, 0).await, 1);
    relay.shutdown().await;
}

// ---------------------------------------------------------------- bad input: Delete

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_of_too_many_hashes_is_invalid_argument() {
    tidings_tests::require_backend!();
    let relay = TestRelay::builder()
        .configure(|c| c.limits.max_delete_hashes = 4)
        .start()
        .await;
    let alice = Account::random();
    let sent = store_ok(&relay, alice.deposit(0, b"keep me", 0)).await;
    let hashes = vec![sent.hash.clone(); 5];
    let e = within(
        STEP,
        "delete",
        relay.mailbox.clone().delete(alice.delete(0, &hashes)),
    )
    .await
    .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::InvalidArgument,
            "hashes: must list at most 4 hashes (got 5)"
        )
    );
    assert_eq!(relay.stored_count(&alice, 0).await, 1);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_by_someone_else_is_unauthenticated() {
    tidings_tests::require_backend!();
    let relay = TestRelay::start().await;
    let (alice, mallory) = (Account::random(), Account::random());
    let sent = store_ok(&relay, alice.deposit(0, b"keep me", 0)).await;
    let mut req = mallory.delete(0, std::slice::from_ref(&sent.hash));
    req.account = alice.id().to_vec();
    let e = within(STEP, "delete", relay.mailbox.clone().delete(req))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::Unauthenticated,
            "signature: does not verify for this account"
        )
    );
    assert_eq!(relay.stored_count(&alice, 0).await, 1, "nothing may be deleted");
    relay.shutdown().await;
}

// ---------------------------------------------------------------- garbage on the wire

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_wire_is_refused_and_the_relay_keeps_serving() {
    tidings_tests::require_backend!();
    let relay = TestRelay::start().await;
    let alice = Account::random();
    let store = "/tidings.v1.Mailbox/Store";
    let not_a_store = |what: &str| format!("request: not a tidings.v1.StoreRequest ({what})");
    // A request that does not decode is the client's error, never INTERNAL (which means
    // the server is broken): each case has exactly one right answer.
    let cases: Vec<(&str, bytes::Bytes, Code, String)> = vec![
        // A well-framed message whose protobuf is junk (field 1 claims 200 bytes, has 3).
        (
            "junk protobuf",
            grpc_frame(&[0x0a, 0xc8, 0x01, 1, 2, 3]),
            Code::InvalidArgument,
            not_a_store("field StoreRequest.account: ends too early"),
        ),
        (
            "invalid wire type",
            grpc_frame(&[0xff, 0xff, 0xff, 0xff, 0x0f]),
            Code::InvalidArgument,
            not_a_store("invalid wire type"),
        ),
        // The frame header promises more bytes than the stream carries.
        (
            "truncated frame",
            bytes::Bytes::from_static(&[0, 0, 0, 1, 0, 1, 2]),
            Code::InvalidArgument,
            not_a_store("the body ends inside a message frame"),
        ),
        (
            "bad compression flag",
            bytes::Bytes::from_static(&[7, 0, 0, 0, 1, 0]),
            Code::InvalidArgument,
            not_a_store("invalid compressed-flag in the message frame"),
        ),
        (
            "compressed flag without an encoding",
            bytes::Bytes::from_static(&[1, 0, 0, 0, 1, 0]),
            Code::InvalidArgument,
            not_a_store("compressed-flag set without a grpc-encoding"),
        ),
        (
            "frame over the size limit",
            bytes::Bytes::from_static(&[0, 0x7f, 0xff, 0xff, 0xff, 1, 2]),
            Code::ResourceExhausted,
            format!(
                "request: larger than the relay accepts ({} bytes)",
                relay.relay().config().limits.max_request_bytes()
            ),
        ),
        (
            "no frame at all",
            bytes::Bytes::from_static(b"GET / HTTP/1.1\r\n\r\n"),
            Code::InvalidArgument,
            not_a_store("invalid compressed-flag in the message frame"),
        ),
        (
            "empty body",
            bytes::Bytes::new(),
            Code::InvalidArgument,
            not_a_store("the body holds no message"),
        ),
    ];
    for (what, body, code, message) in cases {
        let reply = within(STEP, what, raw_grpc(relay.addr, store, body))
            .await
            .expect(what);
        assert_eq!(reply.grpc_status, Some(code as i32), "{what}: {reply:?}");
        assert_eq!(reply.grpc_message.as_deref(), Some(message.as_str()), "{what}");
    }
    // An unknown method is UNIMPLEMENTED, not a crash.
    let reply = within(
        STEP,
        "unknown method",
        raw_grpc(relay.addr, "/tidings.v1.Mailbox/Nope", grpc_frame(&[])),
    )
    .await
    .unwrap();
    assert_eq!(reply.grpc_status, Some(Code::Unimplemented as i32));
    // The relay still serves, and nothing was stored for anyone.
    store_ok(&relay, alice.deposit(0, b"still here", 0)).await;
    assert_eq!(relay.retrieve_all(&alice, 0).await.len(), 1);
    relay.shutdown().await;
}

// ---------------------------------------------------------------- long-poll

/// Waits (bounded) until `n` long-polls are parked in the relay.
async fn until_parked(relay: &TestRelay, n: usize) {
    within(STEP, "waiters to park", async {
        while relay.relay().waiters().parked() < n {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_retrieve_is_woken_by_a_store_from_another_client() {
    tidings_tests::require_backend!();
    let relay = TestRelay::start().await;
    let alice = Account::random();
    let mut poller = relay.connect().await;
    let req = alice.retrieve(0, 0, 0, 60_000);
    let poll = tokio::spawn(async move { poller.retrieve(req).await });
    until_parked(&relay, 1).await;

    let mut sender = relay.connect().await;
    let sent = sender
        .store(alice.deposit(0, b"wake up", 0))
        .await
        .unwrap()
        .into_inner();
    // The wait is 60 s; finishing within STEP means the Store woke it.
    let got = within(STEP, "woken retrieve", poll)
        .await
        .unwrap()
        .unwrap()
        .into_inner();
    assert_eq!(got.messages.len(), 1);
    assert_eq!(
        (got.messages[0].seq, got.messages[0].data.as_slice()),
        (sent.seq, &b"wake up"[..])
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_waiters_wake_only_for_their_own_mailbox() {
    tidings_tests::require_backend!();
    let relay = TestRelay::start().await;
    let accounts: Vec<Account> = (0..40).map(|_| Account::random()).collect();
    let mut polls = Vec::new();
    for a in &accounts {
        let mut client = relay.mailbox.clone();
        let req = a.retrieve(0, 0, 0, 60_000);
        polls.push(tokio::spawn(async move { client.retrieve(req).await }));
    }
    // Same account, other namespace: must not wake the namespace-0 waiters either.
    let mut side = relay.mailbox.clone();
    let side_req = accounts[0].retrieve(5, 0, 0, 60_000);
    let side_poll = tokio::spawn(async move { side.retrieve(side_req).await });
    until_parked(&relay, 41).await;

    for a in &accounts[..20] {
        store_ok(&relay, a.deposit(0, b"for you", 0)).await;
    }
    let mut polls = polls.into_iter();
    for _ in 0..20 {
        let got = within(STEP, "woken", polls.next().unwrap())
            .await
            .unwrap()
            .unwrap()
            .into_inner();
        assert_eq!(got.messages.len(), 1);
        assert_eq!(got.messages[0].data, b"for you");
    }
    // The other 20 (and the namespace-5 waiter) are still parked.
    within(STEP, "woken ones to leave", async {
        while relay.relay().waiters().parked() > 21 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    assert_eq!(relay.relay().waiters().parked(), 21);
    let rest: Vec<_> = polls.collect();
    assert!(rest.iter().all(|p| !p.is_finished()));

    // Shutdown releases them promptly with their empty answer.
    let shutdown = tokio::spawn(relay.shutdown());
    for p in rest {
        let got = within(STEP, "released by shutdown", p)
            .await
            .unwrap()
            .unwrap()
            .into_inner();
        assert!(got.messages.is_empty());
    }
    let side = within(STEP, "side released", side_poll)
        .await
        .unwrap()
        .unwrap()
        .into_inner();
    assert!(side.messages.is_empty());
    within(STEP, "shutdown", shutdown).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_ends_empty_at_its_deadline() {
    tidings_tests::require_backend!();
    let relay = TestRelay::start().await;
    let alice = Account::random();
    let got = within(
        STEP,
        "short poll",
        relay.mailbox.clone().retrieve(alice.retrieve(0, 0, 0, 50)),
    )
    .await
    .unwrap()
    .into_inner();
    assert!(got.messages.is_empty() && !got.more);
    assert_eq!(relay.relay().waiters().parked(), 0);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_returns_at_once_when_messages_wait() {
    tidings_tests::require_backend!();
    let relay = TestRelay::start().await;
    let alice = Account::random();
    let first = store_ok(&relay, alice.deposit(0, b"one", 0)).await;
    let got = within(
        STEP,
        "poll",
        relay.mailbox.clone().retrieve(alice.retrieve(0, 0, 0, 60_000)),
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(got.messages.len(), 1);
    // With the cursor past it, the poll parks until the next one.
    let mut client = relay.mailbox.clone();
    let req = alice.retrieve(0, first.seq, 0, 60_000);
    let poll = tokio::spawn(async move { client.retrieve(req).await });
    until_parked(&relay, 1).await;
    store_ok(&relay, alice.deposit(0, b"two", 0)).await;
    let got = within(STEP, "second", poll).await.unwrap().unwrap().into_inner();
    assert_eq!(
        got.messages.iter().map(|m| m.data.clone()).collect::<Vec<_>>(),
        vec![b"two".to_vec()]
    );
    relay.shutdown().await;
}

// ---------------------------------------------------------------- expiry

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_messages_vanish_from_retrieve_and_from_storage() {
    tidings_tests::require_backend!();
    let clock = ManualClock::starting_now();
    let relay = TestRelay::builder()
        .clock(Arc::new(clock.clone()))
        .configure(|c| c.sweep.interval_ms = 3_600_000)
        .start()
        .await;
    let alice = Account::random();
    let short = store_ok(&relay, alice.deposit(0, b"short-lived", 10_000)).await;
    store_ok(&relay, alice.deposit(0, b"long-lived", 0)).await;
    let now_s = || clock.now_s();
    let retrieve = |ts| alice.retrieve_at(0, 0, 0, 0, ts);
    let got = relay
        .mailbox
        .clone()
        .retrieve(retrieve(now_s()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.messages.len(), 2);

    clock.advance_ms(10_001);
    let got = relay
        .mailbox
        .clone()
        .retrieve(retrieve(now_s()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.messages.len(), 1, "the expired message is never returned");
    assert_eq!(got.messages[0].data, b"long-lived");
    assert!(got.messages[0].seq > short.seq);

    // The sweeper removes it from storage.
    let sweeper = relay.relay().sweeper().clone();
    sweeper.sweep_now();
    within(STEP, "sweep", async {
        while sweeper.swept_total() < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(sweeper.swept_total(), 1);
    let left = relay.store().sweep_expired(clock.now_ms(), 100).await.unwrap();
    assert_eq!(left, 0, "nothing expired remains in storage");
    assert_eq!(relay.stored_count(&alice, 0).await, 1);
    relay.shutdown().await;
}
