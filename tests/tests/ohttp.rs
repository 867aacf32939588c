//! Oblivious HTTP end to end (issue 13): a device-link client bound to 127.0.0.3 reaches the
//! relay only through an independent OHTTP relay (the published `ohttp-relay`, its own
//! process, on 127.0.0.2), and every call works as over a direct connection; the relay's
//! logs, metrics and accepted peers never show 127.0.0.3. Key rotation with its grace
//! period, and every bad input with its status.
//!
//! Each test is a process of its own under nextest; the log capture is a global subscriber.

// Test code: a failed unwrap is a failed test with its line.
#![allow(clippy::unwrap_used)]

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    sync::{Arc, OnceLock},
    time::Duration,
};

use bhttp::{Message, Mode};
use tidings_device_link::{
    client::{ClientError, ClientOptions, RelayClient, RetryPolicy},
    identity::Identity,
    ohttp::OhttpSettings,
};
use tidings_relay::{
    clock::ManualClock,
    config::{Config, Ohttp},
};
use tidings_tests::log_capture::Captured;
use tidings_tests::{
    STEP, TestRelay, http_get,
    ohttp::{HttpAnswer, OhttpRelay, fetch_key_config, http_request, tcp_connections},
    push::{Device, PUSH_WAIT, PushRig},
    within,
};
use tonic::Code;
use tracing_subscriber::EnvFilter;

const CLIENT_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
const TTL: i64 = 3_600_000;
const GATEWAY: &str = "/.well-known/ohttp-gateway";

fn relay_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ohttp-relay"))
}

/// The gateway on, on a free port; the OHTTP relay (whose connections to the gateway come
/// from 127.0.0.1) listed for its own budget; loopback not exempt from the per-IP limits,
/// so the budget is the one that applies.
fn with_gateway(c: &mut Config) {
    c.ohttp = Ohttp {
        enabled: true,
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        relays: vec!["127.0.0.1".into()],
        ..Ohttp::default()
    };
    c.rate_limits.exempt_loopback = false;
}

fn options(relay: &OhttpRelay, key_config: Option<Vec<u8>>, local: IpAddr) -> ClientOptions {
    ClientOptions {
        retry: RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
        },
        ohttp: Some(OhttpSettings {
            relay_url: relay.url(),
            key_config,
            local_address: Some(local),
        }),
        ..ClientOptions::default()
    }
}

fn capture_relay_logs() -> Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new("tidings_relay=debug"))
            .with_writer(logs.clone())
            .with_ansi(false)
            .init();
        logs
    })
    .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reaches_the_relay_only_through_an_ohttp_relay() {
    let logs = capture_relay_logs();
    let rig = PushRig::builder().configure(with_gateway).start().await;
    let gateway = rig.relay().relay().ohttp_addr().expect("the gateway is on");
    let ohttp_relay = OhttpRelay::start(relay_binary(), gateway).await;
    // Shipped with the app: fetched here from 127.0.0.1, never by the client.
    let keys = fetch_key_config(gateway).await;
    let endpoint = format!("http://{gateway}");
    let connect =
        |keys: Vec<u8>| RelayClient::connect_with(&endpoint, options(&ohttp_relay, Some(keys), CLIENT_IP));
    let client = within(STEP, "connect", connect(keys.clone())).await.unwrap();
    let sender = within(STEP, "connect", connect(keys.clone())).await.unwrap();
    let alice = Identity::create();

    // Subscribe (sealed to the key GetRelayInfo returned, through OHTTP too).
    let phone = Device::apns();
    let sub = within(
        STEP,
        "subscribe",
        client.subscribe(&alice, &[0], false, phone.registration()),
    )
    .await
    .unwrap();
    assert!(sub.added);

    // A long-poll, held until a message arrives.
    let waiters = rig.relay().relay().waiters();
    let poll = tokio::spawn({
        let client = client.clone();
        let alice = alice.clone();
        async move { client.retrieve(&alice, 0, 0, 10, 20_000).await }
    });
    within(STEP, "the long-poll parks", async {
        while waiters.parked() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(!poll.is_finished(), "held open");
    let stored = within(
        STEP,
        "store",
        sender.store(&alice.account(), 0, b"through ohttp", TTL),
    )
    .await
    .unwrap();
    let page = within(STEP, "long-poll", poll).await.unwrap().unwrap();
    assert_eq!(page.messages.len(), 1);
    assert_eq!(page.messages[0].data, b"through ohttp");
    assert_eq!(page.messages[0].hash, stored.hash);

    // The push the Store queued, encrypted to the device's key.
    let pushed = rig.apns.wait_for(1, PUSH_WAIT).await.unwrap();
    assert_eq!(pushed[0].token, phone.token);
    let note = phone.decrypt(pushed[0].body["enc"].as_str().expect("enc"));
    assert_eq!(note.hash, stored.hash);

    // An owner Store, Delete, Unsubscribe: signed calls through OHTTP.
    within(
        STEP,
        "owner store",
        client.store_owned(&alice, 10, b"config", TTL),
    )
    .await
    .unwrap();
    let deleted = within(
        STEP,
        "delete",
        client.delete(&alice, 0, std::slice::from_ref(&stored.hash)),
    )
    .await
    .unwrap();
    assert_eq!(deleted, 1);
    let empty = within(STEP, "retrieve", client.retrieve(&alice, 0, 0, 10, 0))
        .await
        .unwrap();
    assert!(empty.messages.is_empty());
    let device_id: [u8; 16] = phone.device_id;
    assert!(
        within(STEP, "unsubscribe", client.unsubscribe(&alice, &device_id))
            .await
            .unwrap()
    );

    // A refusal keeps its code and message, as over a direct connection.
    let refused = within(STEP, "refused", client.store(&alice.account(), 0, b"x", 1))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(Code::InvalidArgument), "{refused}");

    // Who the relay saw. Its connections: the client's go to the OHTTP relay, from
    // 127.0.0.3; the relay's own listeners accepted only 127.0.0.1 (the OHTTP relay).
    let relay_ports = [
        rig.relay().relay().grpc_addr().port(),
        rig.relay().admin_addr().port(),
        gateway.port(),
    ];
    let connections = tcp_connections();
    assert!(
        connections
            .iter()
            .any(|(local, remote)| local.ip() == CLIENT_IP && *remote == ohttp_relay.addr()),
        "the client talks to the OHTTP relay from 127.0.0.3: {connections:?}"
    );
    let accepted_on = |port: u16| -> Vec<SocketAddr> {
        connections
            .iter()
            .filter(|(local, _)| local.port() == port && local.ip().is_loopback())
            .map(|(_, remote)| *remote)
            .collect()
    };
    let accepted: Vec<SocketAddr> = relay_ports.iter().flat_map(|p| accepted_on(*p)).collect();
    assert!(
        accepted_on(gateway.port())
            .iter()
            .any(|r| r.ip() == IpAddr::V4(Ipv4Addr::LOCALHOST)),
        "the gateway's peer is the OHTTP relay (its keep-alive connection): {accepted:?}"
    );
    assert!(accepted.iter().all(|r| r.ip() != CLIENT_IP), "{accepted:?}");

    // Its metrics and its logs.
    let (status, metrics) = within(STEP, "scrape", http_get(rig.relay().admin_addr(), "/metrics"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains(r#"tidings_ohttp_requests_total{outcome="answered"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"rpc="/tidings.v1.Mailbox/Store""#),
        "the gRPC layer counted it"
    );
    assert!(!metrics.contains("127.0.0.3"));
    let logs = logs.text();
    assert!(logs.contains("OHTTP gateway: connection accepted"), "{logs}");
    assert!(
        logs.contains("127.0.0.1"),
        "the OHTTP relay's address is what it saw"
    );
    assert!(
        !logs.contains("127.0.0.3"),
        "the client's address reached the relay's log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_key_works_through_its_grace_then_fails_clearly_and_is_replaced() {
    const ROTATION_S: i64 = 3600;
    const GRACE_S: i64 = 600;
    // The start of an epoch (a multiple of the rotation), plus a minute.
    let clock = ManualClock::new((1_900_000_000 / ROTATION_S * ROTATION_S + 60) * 1000);
    let relay = TestRelay::builder()
        .clock(Arc::new(clock.clone()))
        .configure(|c| {
            with_gateway(c);
            c.ohttp.rotation_s = ROTATION_S as u64;
            c.ohttp.grace_s = GRACE_S as u64;
        })
        .start()
        .await;
    let gateway = relay.relay().ohttp_addr().unwrap();
    let ohttp_relay = OhttpRelay::start(relay_binary(), gateway).await;
    let endpoint = format!("http://{gateway}");
    let old_keys = fetch_key_config(gateway).await;
    let local = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4));
    let connect =
        |keys: Option<Vec<u8>>| RelayClient::connect_with(&endpoint, options(&ohttp_relay, keys, local));
    // Active calls through the rotation; a pinned client and a fetching one that sleep through it.
    let active = within(STEP, "connect", connect(Some(old_keys.clone())))
        .await
        .unwrap();
    let pinned = within(STEP, "connect", connect(Some(old_keys.clone())))
        .await
        .unwrap();
    let fetching = within(STEP, "connect", connect(None)).await.unwrap();
    assert_eq!(
        fetching.ohttp_key_config(),
        Some(old_keys.clone()),
        "fetched once at connect"
    );
    // Deposits and GetRelayInfo are unsigned, so the relay's moved clock does not matter.
    let bob = Identity::create().account();
    for client in [&active, &pinned, &fetching] {
        within(STEP, "store", client.store(&bob, 0, b"before", TTL))
            .await
            .unwrap();
    }

    clock.advance_ms(ROTATION_S * 1000);
    let new_keys = fetch_key_config(gateway).await;
    assert_ne!(new_keys, old_keys, "rotated");
    within(STEP, "in grace", active.store(&bob, 0, b"in grace", TTL))
        .await
        .expect("the previous key still works");
    assert_eq!(
        active.ohttp_key_config(),
        Some(new_keys.clone()),
        "moved to the new key"
    );

    clock.advance_ms(GRACE_S * 1000);
    within(STEP, "after grace", active.relay_info())
        .await
        .expect("on the new key");

    let err = within(STEP, "pinned", pinned.store(&bob, 0, b"late", TTL))
        .await
        .unwrap_err();
    let ClientError::Status { code, message } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*code, Code::FailedPrecondition);
    assert!(
        message.contains("no longer accepts this client's key configuration"),
        "{message}"
    );
    assert!(
        message.contains("give the client the gateway's current key configuration"),
        "{message}"
    );
    let again = within(STEP, "pinned", pinned.relay_info()).await.unwrap_err();
    assert_eq!(
        again.code(),
        Some(Code::FailedPrecondition),
        "a pinned key is not replaced behind the app's back"
    );

    let err = within(STEP, "fetching", fetching.store(&bob, 0, b"late", TTL))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::FailedPrecondition));
    assert!(
        err.to_string()
            .contains("the current one was fetched from the gateway: retry"),
        "{err}"
    );
    assert_eq!(fetching.ohttp_key_config(), Some(new_keys));
    within(STEP, "refreshed", fetching.store(&bob, 0, b"late", TTL))
        .await
        .expect("works after the refresh");
    drop(ohttp_relay);
    relay.shutdown().await;
}

/// Encapsulates `inner` to the first key of `keys`.
fn encapsulate(keys: &[u8], inner: &[u8]) -> (Vec<u8>, ohttp::ClientResponse) {
    let mut configs = ohttp::KeyConfig::decode_list(keys).unwrap();
    ohttp::ClientRequest::from_config(&mut configs[0])
        .unwrap()
        .encapsulate(inner)
        .unwrap()
}

fn bhttp_request(method: &str, path: &str, content_type: &str, content: &[u8]) -> Vec<u8> {
    let mut m = Message::request(
        method.as_bytes().to_vec(),
        b"http".to_vec(),
        b"relay".to_vec(),
        path.as_bytes().to_vec(),
    );
    m.put_header("content-type", content_type);
    m.write_content(content);
    let mut out = Vec::new();
    m.write_bhttp(Mode::KnownLength, &mut out).unwrap();
    out
}

/// The status inside an encapsulated answer.
fn inner_status(answer: &HttpAnswer, pending: ohttp::ClientResponse) -> u16 {
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.header("content-type"), Some("message/ohttp-res"));
    let inner = pending.decapsulate(&answer.body).unwrap();
    let m = Message::read_bhttp(&mut std::io::Cursor::new(&inner[..])).unwrap();
    m.control().status().map(u16::from).unwrap()
}

fn assert_key_problem(answer: &HttpAnswer) {
    assert_eq!(answer.status, 400, "{answer:?}");
    assert_eq!(answer.header("content-type"), Some("application/problem+json"));
    let json: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(
        json["type"],
        "https://iana.org/assignments/http-problem-types#ohttp-key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_has_its_status() {
    let relay = TestRelay::builder().configure(with_gateway).start().await;
    let gateway = relay.relay().ohttp_addr().unwrap();
    let keys = fetch_key_config(gateway).await;
    let grpc_frame = [0u8, 0, 0, 0, 0];
    let post = |body: Vec<u8>| async move {
        within(
            STEP,
            "post",
            http_request(gateway, "POST", GATEWAY, Some("message/ohttp-req"), &body),
        )
        .await
        .unwrap()
    };

    // Outside the encapsulation.
    let (good, _) = encapsulate(
        &keys,
        &bhttp_request(
            "POST",
            "/tidings.v1.Relay/GetRelayInfo",
            "application/grpc",
            &grpc_frame,
        ),
    );
    let wrong_media = http_request(gateway, "POST", GATEWAY, Some("application/octet-stream"), &good)
        .await
        .unwrap();
    assert_eq!(wrong_media.status, 415);
    let no_media = http_request(gateway, "POST", GATEWAY, None, &good).await.unwrap();
    assert_eq!(no_media.status, 415);
    assert_eq!(
        http_request(gateway, "POST", "/other", Some("message/ohttp-req"), &good)
            .await
            .unwrap()
            .status,
        404
    );
    let put = http_request(gateway, "PUT", GATEWAY, Some("message/ohttp-req"), &good)
        .await
        .unwrap();
    assert_eq!(put.status, 405);
    assert_eq!(put.header("allow"), Some("GET, HEAD, POST"));
    // One byte over the limit, so the gateway has read all of it when it refuses.
    let huge = vec![0u8; relay.relay().config().limits.max_request_bytes() + 16 * 1024 + 1];
    assert_eq!(post(huge).await.status, 413);
    let short = post(good[..7].to_vec()).await;
    assert_eq!(short.status, 400);
    assert_ne!(short.header("content-type"), Some("application/problem+json"));
    let mut unknown_key = good.clone();
    unknown_key[0] = unknown_key[0].wrapping_add(1);
    assert_key_problem(&post(unknown_key).await);
    let mut tampered = good.clone();
    *tampered.last_mut().unwrap() ^= 0x01;
    assert_key_problem(&post(tampered).await);
    // The well-formed one is answered.
    assert_eq!(post(good).await.status, 200);

    // Inside it.
    let cases: [(Vec<u8>, u16); 5] = [
        (b"\x00\x05POS".to_vec(), 400),
        (
            bhttp_request(
                "POST",
                "/grpc.health.v1.Health/Check",
                "application/grpc",
                &grpc_frame,
            ),
            404,
        ),
        (bhttp_request("POST", "/", "application/grpc", &grpc_frame), 404),
        (
            bhttp_request(
                "GET",
                "/tidings.v1.Relay/GetRelayInfo",
                "application/grpc",
                &grpc_frame,
            ),
            405,
        ),
        (
            bhttp_request(
                "POST",
                "/tidings.v1.Relay/GetRelayInfo",
                "application/json",
                b"{}",
            ),
            415,
        ),
    ];
    for (inner, want) in cases {
        let (enc, pending) = encapsulate(&keys, &inner);
        assert_eq!(inner_status(&post(enc).await, pending), want, "{inner:?}");
    }

    // An RPC's own refusal travels as its gRPC status in the trailers of a 200.
    let (enc, pending) = encapsulate(
        &keys,
        &bhttp_request(
            "POST",
            "/tidings.v1.Mailbox/Store",
            "application/grpc",
            &[0, 0, 0, 0, 2, 0x12, 0x00],
        ),
    );
    let answer = post(enc).await;
    let inner = pending.decapsulate(&answer.body).unwrap();
    let m = Message::read_bhttp(&mut std::io::Cursor::new(&inner[..])).unwrap();
    assert_eq!(m.control().status().map(u16::from), Some(200));
    let status = m.header().get(b"grpc-status").or(m.trailer().get(b"grpc-status"));
    assert_eq!(
        status,
        Some(&b"3"[..]),
        "INVALID_ARGUMENT from the decode layer, as on the gRPC listener"
    );

    // The OHTTP relay passes the gateway's refusals on (here a key problem).
    let ohttp_relay = OhttpRelay::start(relay_binary(), gateway).await;
    let (mut enc, _) = encapsulate(
        &keys,
        &bhttp_request(
            "POST",
            "/tidings.v1.Relay/GetRelayInfo",
            "application/grpc",
            &grpc_frame,
        ),
    );
    enc[0] = enc[0].wrapping_add(1);
    let via = http_request(ohttp_relay.addr(), "POST", "/", Some("message/ohttp-req"), &enc)
        .await
        .unwrap();
    assert_key_problem(&via);
    // And refuses what is not OHTTP itself.
    let not_ohttp = http_request(ohttp_relay.addr(), "POST", "/", Some("text/plain"), b"hi")
        .await
        .unwrap();
    assert_eq!(not_ohttp.status, 415);
    drop(ohttp_relay);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_is_off_unless_configured() {
    let relay = TestRelay::start().await;
    assert_eq!(relay.relay().ohttp_addr(), None);
    relay.shutdown().await;
}
