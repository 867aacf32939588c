//! `tidings-testbed`: a relay with Fast Mode wired to the mock APNs, FCM, HMS and Web Push, for tests
//! written in other languages (the Python binding tests of `mobile-glue`).
//!
//! On start it prints one JSON line on stdout:
//!
//! ```json
//! {"relay": "http://127.0.0.1:P", "control": "http://127.0.0.1:Q",
//!  "app_id": "com.example.messenger", "apns_only_app_id": "com.example.ios-only"}
//! ```
//!
//! and runs until its standard input closes. Its relay has no abuse rate limits (the tests
//! move thousands of messages through one mailbox). The control endpoint (HTTP/1.1) serves:
//!
//! - `GET /pushes`: every request the mock providers received, oldest first, as a JSON
//!   list of `{"provider": "apns"|"apns_sandbox"|"fcm"|"hms"|"webpush", "token", "status",
//!   "enc", "kind"}` (`kind` is the APNs push type, `"data"` for FCM, the urgency for HMS
//!   (`"HIGH"` for messages) and Web Push (`"high"` for messages)). For Web Push, `token` is the subscription id and `body` the request
//!   body in base64: the mock is the push service, not the subscriber, so only the SDK
//!   that made the keys can decrypt it (`enc` is null).
//! - `POST /webpush/subscription`: a new push resource at the mock Web Push service for a
//!   subscriber whose keys are elsewhere (a UnifiedPush app): `{"id", "endpoint"}`.
//! - `POST /dead/{provider}/{token}`: the provider answers that token as dead from now on
//!   (APNs 410 `Unregistered`, FCM 404 `UNREGISTERED`, HMS `80300007`, Web Push 410 for the
//!   subscription id), so the relay prunes it.
//! - `POST /settle`: answers once the relay's push outbox is empty.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use axum::{
    Router,
    extract::{Path, State},
    http::StatusCode,
    routing::{get, post},
};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use serde_json::{Value, json};
use tidings_tests::push::{APNS_ONLY_APP_ID, APP_ID, PushRig};
use tokio::io::AsyncReadExt;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    // The binding tests move thousands of messages into one mailbox from one process (the
    // at-least-once test stores 10 000); the per-mailbox deposit rate would pace them at
    // 30/s. The limits themselves are tested in tests/tests/limits.rs.
    let rig = Arc::new(
        PushRig::builder()
            .configure(|c| c.rate_limits.enabled = false)
            .start()
            .await,
    );
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .context("binding the control endpoint")?;
    let control = listener.local_addr()?;
    let app = Router::new()
        .route("/pushes", get(pushes))
        .route("/dead/{provider}/{token}", post(dead))
        .route("/webpush/subscription", post(web_push_subscription))
        .route("/settle", post(settle))
        .with_state(rig.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let hello = json!({
        "relay": rig.relay().endpoint(),
        "control": format!("http://{control}"),
        "app_id": APP_ID,
        "apns_only_app_id": APNS_ONLY_APP_ID,
    });
    println!("{hello}");

    // Runs until whoever started it closes our stdin (or exits, which closes it).
    let mut sink = Vec::new();
    tokio::io::stdin()
        .read_to_end(&mut sink)
        .await
        .context("reading stdin")?;
    server.abort();
    Ok(())
}

async fn pushes(State(rig): State<Arc<PushRig>>) -> String {
    let mut out: Vec<(std::time::SystemTime, Value)> = Vec::new();
    for (provider, mock) in [("apns", &rig.apns), ("apns_sandbox", &rig.sandbox)] {
        for r in mock.attempts() {
            let v = json!({
                "provider": provider,
                "token": r.token,
                "status": r.status,
                "enc": r.body.get("enc").and_then(Value::as_str),
                "kind": r.header("apns-push-type"),
            });
            out.push((r.at, v));
        }
    }
    for r in rig.fcm.attempts() {
        let v = json!({
            "provider": "fcm",
            "token": r.token,
            "status": r.status,
            "enc": r.data.get("enc"),
            "kind": "data",
        });
        out.push((r.at, v));
    }
    for r in rig.hms.attempts() {
        let v = json!({
            "provider": "hms",
            "token": r.token,
            "status": r.status,
            "enc": r.data.get("enc"),
            "kind": r.body["message"]["android"]["urgency"],
        });
        out.push((r.at, v));
    }
    for r in rig.webpush.attempts() {
        let v = json!({
            "provider": "webpush",
            "token": r.subscription,
            "status": r.status,
            "enc": Value::Null,
            "body": STANDARD.encode(&r.body),
            "kind": r.urgency,
        });
        out.push((r.at, v));
    }
    out.sort_by_key(|(at, _)| *at);
    Value::Array(out.into_iter().map(|(_, v)| v).collect()).to_string()
}

async fn dead(
    State(rig): State<Arc<PushRig>>,
    Path((provider, token)): Path<(String, String)>,
) -> StatusCode {
    match provider.as_str() {
        "apns" => rig.apns.mark_dead(&token),
        "apns_sandbox" => rig.sandbox.mark_dead(&token),
        "fcm" => rig.fcm.mark_dead(&token),
        "hms" => rig.hms.mark_dead(&token),
        "webpush" => rig.webpush.mark_gone(&token, 410),
        _ => return StatusCode::NOT_FOUND,
    }
    StatusCode::NO_CONTENT
}

async fn web_push_subscription(State(rig): State<Arc<PushRig>>) -> String {
    let (id, endpoint) = rig.webpush.subscribe_elsewhere(Some(rig.vapid.public_key));
    json!({ "id": id, "endpoint": endpoint }).to_string()
}

async fn settle(State(rig): State<Arc<PushRig>>) -> StatusCode {
    rig.settle().await;
    StatusCode::NO_CONTENT
}
