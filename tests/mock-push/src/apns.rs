//! A mock of Apple's APNs provider API (`POST /3/device/{token}`), checking what Apple checks.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::jwt::VerifyingKey;
use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::Full;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::fixtures::ApnsKey;
use crate::record::{Attempt, Faults, Recorder, WaitTimeout, lock, uuid_v4};
use crate::server::{Connection, MockRequest, Server, StartError, Transport, json_response};
use crate::tls::TlsIdentity;

/// Apple's limit on a notification body.
pub const APNS_MAX_BODY: usize = 4096;

/// How the mock APNs is set up.
#[derive(Clone, Debug)]
pub struct ApnsMockConfig {
    /// The key id the provider token's `kid` must name.
    pub key_id: String,
    /// The team id the provider token's `iss` must name.
    pub team_id: String,
    /// SPKI PEM of the P-256 key provider tokens must be signed with.
    pub public_key_pem: String,
    /// The only `apns-topic` accepted (the app's bundle id).
    pub topic: String,
    /// TLS or h2c.
    pub transport: Transport,
    /// Where to listen; port 0 picks a free port.
    pub bind: SocketAddr,
    /// The certificate to serve over TLS; `None` generates one.
    pub tls: Option<Arc<TlsIdentity>>,
    /// A connection changing its provider token sooner than this gets 429
    /// `TooManyProviderTokenUpdates` (Apple: 20 minutes).
    pub token_update_min_interval: Duration,
    /// Provider tokens whose `iat` is older than this get 403 `ExpiredProviderToken` (Apple: 1 h).
    pub provider_token_max_age: Duration,
}

impl ApnsMockConfig {
    /// Apple's rules for `key`, accepting `topic`, on 127.0.0.1 port 0.
    pub fn new(key: &ApnsKey, topic: &str, transport: Transport) -> ApnsMockConfig {
        ApnsMockConfig {
            key_id: key.key_id.clone(),
            team_id: key.team_id.clone(),
            public_key_pem: key.public_key_pem.clone(),
            topic: topic.to_owned(),
            transport,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: None,
            token_update_min_interval: Duration::from_secs(20 * 60),
            provider_token_max_age: Duration::from_secs(60 * 60),
        }
    }
}

/// One request to `/3/device/{token}` and what the mock answered.
#[derive(Clone, Debug)]
pub struct ApnsRequest {
    /// The device token from the path.
    pub token: String,
    /// The request headers as received.
    pub headers: HeaderMap,
    /// The parsed JSON body (`Value::Null` if it was not JSON).
    pub body: Value,
    /// The body's size in bytes.
    pub body_len: usize,
    /// When it arrived.
    pub at: SystemTime,
    /// The HTTP status answered.
    pub status: u16,
    /// The error `reason` answered, if any.
    pub reason: Option<String>,
}

impl ApnsRequest {
    /// A header's value as text, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Attempt for ApnsRequest {
    fn delivered(&self) -> bool {
        self.status == 200
    }
}

/// An error the mock is told to answer instead of checking the request further.
#[derive(Clone, Debug)]
pub struct ApnsFailure {
    /// HTTP status.
    pub status: u16,
    /// Apple's `reason` string, e.g. `TooManyRequests`.
    pub reason: String,
    /// `Retry-After` seconds to send along.
    pub retry_after: Option<u64>,
}

impl ApnsFailure {
    /// A failure with `status` and `reason`, no `Retry-After`.
    pub fn new(status: u16, reason: &str) -> ApnsFailure {
        ApnsFailure {
            status,
            reason: reason.to_owned(),
            retry_after: None,
        }
    }

    /// The same failure with `Retry-After: secs`.
    pub fn retry_after(mut self, secs: u64) -> ApnsFailure {
        self.retry_after = Some(secs);
        self
    }

    /// 503 `ServiceUnavailable`.
    pub fn unavailable() -> ApnsFailure {
        ApnsFailure::new(503, "ServiceUnavailable")
    }

    /// 429 `TooManyRequests`.
    pub fn too_many_requests() -> ApnsFailure {
        ApnsFailure::new(429, "TooManyRequests")
    }
}

struct ApnsState {
    config: ApnsMockConfig,
    key: VerifyingKey,
    requests: AtomicU64,
    provider_tokens: std::sync::Mutex<HashSet<String>>,
    /// Signature-checked tokens and their `iat`: Apple verifies a provider token once per
    /// connection, and re-verifying ES256 per request would make the mock the bottleneck
    /// of any load test.
    verified: std::sync::Mutex<HashMap<String, u64>>,
    dead: std::sync::Mutex<HashMap<String, u64>>,
    token_topics: std::sync::Mutex<HashMap<String, String>>,
    recorder: Recorder<ApnsRequest>,
    faults: Faults<ApnsFailure>,
}

/// A running mock APNs server. Dropping it stops it.
pub struct MockApns {
    server: Server,
    state: Arc<ApnsState>,
    tls: Option<Arc<TlsIdentity>>,
}

impl std::fmt::Debug for MockApns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockApns")
            .field("endpoint", &self.endpoint())
            .finish()
    }
}

impl MockApns {
    /// Starts listening.
    pub async fn start(config: ApnsMockConfig) -> Result<MockApns, StartError> {
        let key = VerifyingKey::es256_from_pem(&config.public_key_pem)?;
        let tls = match (config.transport, &config.tls) {
            (Transport::Tls, Some(identity)) => Some(identity.clone()),
            (Transport::Tls, None) => Some(Arc::new(TlsIdentity::generate(&[])?)),
            (Transport::H2c, _) => None,
        };
        let (bind, transport) = (config.bind, config.transport);
        let state = Arc::new(ApnsState {
            config,
            key,
            requests: AtomicU64::new(0),
            provider_tokens: Default::default(),
            verified: Default::default(),
            dead: Default::default(),
            token_topics: Default::default(),
            recorder: Recorder::new(),
            faults: Faults::new(),
        });
        let handler_state = state.clone();
        let handler = move |req: MockRequest| {
            let state = handler_state.clone();
            async move { state.handle(req).await }
        };
        let server = Server::start(bind, transport, tls.as_deref(), true, handler).await?;
        Ok(MockApns { server, state, tls })
    }

    /// The base URL to configure as the APNs endpoint (`https://…` or `http://…`).
    pub fn endpoint(&self) -> String {
        self.server.base_url()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The CA certificate to trust, when serving TLS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.tls.as_deref().map(TlsIdentity::ca_pem)
    }

    /// Every request to `/3/device/…` so far, answered or refused.
    pub fn attempts(&self) -> Vec<ApnsRequest> {
        self.state.recorder.attempts()
    }

    /// The requests answered 200.
    pub fn delivered(&self) -> Vec<ApnsRequest> {
        self.state.recorder.delivered()
    }

    /// Waits until at least `n` requests were answered 200, and returns them.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Result<Vec<ApnsRequest>, WaitTimeout> {
        self.state.recorder.wait_for(n, timeout).await
    }

    /// Forgets what was recorded (counters stay).
    pub fn clear(&self) {
        self.state.recorder.clear();
    }

    /// From now on `token` gets 410 `Unregistered`.
    pub fn mark_dead(&self, token: &str) {
        lock(&self.state.dead).insert(token.to_owned(), unix_ms());
    }

    /// Says `token` belongs to `topic`: pushes to it under another topic get 400
    /// `DeviceTokenNotForTopic`.
    pub fn bind_token_topic(&self, token: &str, topic: &str) {
        lock(&self.state.token_topics).insert(token.to_owned(), topic.to_owned());
    }

    /// The next `n` authenticated requests get `failure`.
    pub fn fail_next(&self, n: usize, failure: ApnsFailure) {
        self.state.faults.fail_next(n, failure);
    }

    /// Every authenticated request gets `failure` until called with `None`.
    pub fn set_outage(&self, failure: Option<ApnsFailure>) {
        self.state.faults.set_outage(failure);
    }

    /// Holds every request this long before answering (`None`: answer at once). A long
    /// delay makes the mock hang.
    pub fn set_delay(&self, delay: Option<Duration>) {
        self.state.faults.set_delay(delay);
    }

    /// Requests received on any path.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// Distinct valid provider tokens (JWTs) seen.
    pub fn distinct_provider_tokens(&self) -> usize {
        lock(&self.state.provider_tokens).len()
    }

    /// Stops the server and closes every connection.
    pub async fn shutdown(mut self) {
        self.server.shutdown().await;
    }
}

/// An error answer: `(status, reason)`.
type Refusal = (StatusCode, &'static str);

impl ApnsState {
    async fn handle(&self, req: MockRequest) -> Response<Full<Bytes>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if let Some(delay) = self.faults.delay() {
            tokio::time::sleep(delay).await;
        }
        let apns_id = req
            .parts
            .headers
            .get("apns-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_else(uuid_v4);
        let Some(token) = req.parts.uri.path().strip_prefix("/3/device/").map(str::to_owned) else {
            return refuse(&apns_id, StatusCode::NOT_FOUND, "BadPath", None);
        };
        let body = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let mut record = ApnsRequest {
            token: token.clone(),
            headers: req.parts.headers.clone(),
            body,
            body_len: req.body.len(),
            at: SystemTime::now(),
            status: 200,
            reason: None,
        };
        let response = match self.check(&req, &token, &record.body) {
            Ok(()) => {
                let mut response = Response::new(Full::new(Bytes::new()));
                response.headers_mut().insert("apns-id", header_value(&apns_id));
                response
            }
            Err(Answer::Refused((status, reason))) => {
                record.status = status.as_u16();
                record.reason = Some(reason.to_owned());
                refuse(&apns_id, status, reason, None)
            }
            Err(Answer::Injected(failure)) => {
                record.status = failure.status;
                record.reason = Some(failure.reason.clone());
                let status =
                    StatusCode::from_u16(failure.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                refuse(&apns_id, status, &failure.reason, failure.retry_after)
            }
            Err(Answer::Dead(since)) => {
                record.status = 410;
                record.reason = Some("Unregistered".to_owned());
                let body = json!({"reason": "Unregistered", "timestamp": since});
                json_response(StatusCode::GONE, &body, &[("apns-id", apns_id)])
            }
        };
        self.recorder.record(record);
        response
    }

    /// Apple's checks, in roughly Apple's order: path and method, provider token,
    /// injected faults, headers, device token, payload, token liveness.
    fn check(&self, req: &MockRequest, token: &str, body: &Value) -> Result<(), Answer> {
        if req.parts.method != Method::POST {
            return Err(Answer::Refused((
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
            )));
        }
        let jwt = self
            .check_provider_token(&req.parts.headers)
            .map_err(Answer::Refused)?;
        self.check_token_rotation(&req.conn, &jwt)
            .map_err(Answer::Refused)?;
        if let Some(failure) = self.faults.take() {
            return Err(Answer::Injected(failure));
        }
        let push_type = self.check_headers(&req.parts.headers).map_err(Answer::Refused)?;
        check_device_token(token).map_err(Answer::Refused)?;
        if let Some(topic) = lock(&self.token_topics).get(token)
            && *topic != self.config.topic
        {
            return Err(Answer::Refused((
                StatusCode::BAD_REQUEST,
                "DeviceTokenNotForTopic",
            )));
        }
        check_payload(&req.body, body, push_type).map_err(Answer::Refused)?;
        if let Some(since) = lock(&self.dead).get(token) {
            return Err(Answer::Dead(*since));
        }
        Ok(())
    }

    fn check_provider_token(&self, headers: &HeaderMap) -> Result<String, Refusal> {
        const INVALID: Refusal = (StatusCode::FORBIDDEN, "InvalidProviderToken");
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return Err((StatusCode::FORBIDDEN, "MissingProviderToken"));
        };
        let value = value.to_str().map_err(|_| INVALID)?;
        let jwt = match value.split_once(' ') {
            Some((scheme, jwt)) if scheme.eq_ignore_ascii_case("bearer") => jwt.trim(),
            _ => return Err(INVALID),
        };
        // Bound first: a guard in the match scrutinee would live through the arms and
        // deadlock with verify_provider_token's insert.
        let cached = lock(&self.verified).get(jwt).copied();
        let iat = match cached {
            Some(iat) => iat,
            None => self.verify_provider_token(jwt)?,
        };
        let now = unix_s();
        if iat > now + 60 {
            return Err(INVALID);
        }
        if now.saturating_sub(iat) > self.config.provider_token_max_age.as_secs() {
            return Err((StatusCode::FORBIDDEN, "ExpiredProviderToken"));
        }
        lock(&self.provider_tokens).insert(jwt.to_owned());
        Ok(jwt.to_owned())
    }

    /// Checks a provider token's header, signature and issuer; returns its `iat`.
    fn verify_provider_token(&self, jwt: &str) -> Result<u64, Refusal> {
        const INVALID: Refusal = (StatusCode::FORBIDDEN, "InvalidProviderToken");
        let header = crate::jwt::decode_header(jwt).ok_or(INVALID)?;
        if header.kid.as_deref() != Some(self.config.key_id.as_str()) {
            return Err(INVALID);
        }
        // Checks the header's alg (ES256) and the signature.
        let claims: ProviderClaims = self.key.verify(jwt).ok_or(INVALID)?;
        if claims.iss != self.config.team_id {
            return Err(INVALID);
        }
        lock(&self.verified).insert(jwt.to_owned(), claims.iat);
        Ok(claims.iat)
    }

    fn check_token_rotation(&self, conn: &Connection, jwt: &str) -> Result<(), Refusal> {
        let mut current = lock(&conn.provider_token);
        match current.as_ref() {
            Some((seen, _)) if seen == jwt => Ok(()),
            Some((_, since)) if since.elapsed() < self.config.token_update_min_interval => {
                Err((StatusCode::TOO_MANY_REQUESTS, "TooManyProviderTokenUpdates"))
            }
            _ => {
                *current = Some((jwt.to_owned(), Instant::now()));
                Ok(())
            }
        }
    }

    fn check_headers(&self, headers: &HeaderMap) -> Result<PushType, Refusal> {
        let text = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"));
        match text("apns-topic") {
            None => return Err((StatusCode::BAD_REQUEST, "MissingTopic")),
            Some(topic) if topic != self.config.topic => {
                return Err((StatusCode::BAD_REQUEST, "TopicDisallowed"));
            }
            Some(_) => {}
        }
        let push_type = match text("apns-push-type") {
            Some("alert") => PushType::Alert,
            Some("background") => PushType::Background,
            _ => return Err((StatusCode::BAD_REQUEST, "InvalidPushType")),
        };
        let priority = match text("apns-priority") {
            None => 10,
            Some(p) => p
                .parse::<u8>()
                .map_err(|_| (StatusCode::BAD_REQUEST, "BadPriority"))?,
        };
        let priority_ok = match push_type {
            PushType::Alert => matches!(priority, 1 | 5 | 10),
            PushType::Background => priority == 5,
        };
        if !priority_ok {
            return Err((StatusCode::BAD_REQUEST, "BadPriority"));
        }
        if let Some(expiration) = text("apns-expiration")
            && expiration.parse::<u64>().is_err()
        {
            return Err((StatusCode::BAD_REQUEST, "BadExpirationDate"));
        }
        if text("apns-collapse-id").is_some_and(|id| id.len() > 64) {
            return Err((StatusCode::BAD_REQUEST, "BadCollapseId"));
        }
        if text("apns-id").is_some_and(|id| !is_uuid(id)) {
            return Err((StatusCode::BAD_REQUEST, "BadMessageId"));
        }
        Ok(push_type)
    }
}

enum Answer {
    Refused(Refusal),
    Injected(ApnsFailure),
    Dead(u64),
}

#[derive(Clone, Copy)]
enum PushType {
    Alert,
    Background,
}

#[derive(Deserialize)]
struct ProviderClaims {
    iss: String,
    iat: u64,
}

fn check_device_token(token: &str) -> Result<(), Refusal> {
    if token.is_empty() {
        return Err((StatusCode::BAD_REQUEST, "MissingDeviceToken"));
    }
    if token.len() < 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err((StatusCode::BAD_REQUEST, "BadDeviceToken"));
    }
    Ok(())
}

/// Size first (Apple refuses big bodies unread), then shape: a JSON object with an `aps`
/// dictionary matching the push type. Apple has no reason string for malformed JSON; the
/// mock says `BadPayload`, stricter than Apple, so sender bugs show.
fn check_payload(raw: &[u8], body: &Value, push_type: PushType) -> Result<(), Refusal> {
    const BAD: Refusal = (StatusCode::BAD_REQUEST, "BadPayload");
    if raw.is_empty() {
        return Err((StatusCode::BAD_REQUEST, "PayloadEmpty"));
    }
    if raw.len() > APNS_MAX_BODY {
        return Err((StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge"));
    }
    let aps = body.get("aps").and_then(Value::as_object).ok_or(BAD)?;
    match push_type {
        PushType::Alert if aps.contains_key("alert") => Ok(()),
        PushType::Background
            if aps.get("content-available") == Some(&json!(1))
                && !["alert", "sound", "badge"].iter().any(|k| aps.contains_key(*k)) =>
        {
            Ok(())
        }
        _ => Err(BAD),
    }
}

fn is_uuid(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn refuse(
    apns_id: &str,
    status: StatusCode,
    reason: &str,
    retry_after: Option<u64>,
) -> Response<Full<Bytes>> {
    let mut headers = vec![("apns-id", apns_id.to_owned())];
    if let Some(secs) = retry_after {
        headers.push(("retry-after", secs.to_string()));
    }
    json_response(status, &json!({ "reason": reason }), &headers)
}

fn header_value(s: &str) -> http::HeaderValue {
    http::HeaderValue::from_str(s).unwrap_or_else(|_| http::HeaderValue::from_static("invalid"))
}

pub(crate) fn unix_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{apns_jwt, client, valid_apns_jwt};

    const TOPIC: &str = "com.example.app";
    const TIMEOUT: Duration = Duration::from_secs(10);

    fn token(n: u8) -> String {
        hex::encode([n; 32])
    }

    async fn mock(transport: Transport) -> (ApnsKey, MockApns, reqwest::Client) {
        let key = ApnsKey::generate("KEY1234567", "TEAM123456");
        let apns = MockApns::start(ApnsMockConfig::new(&key, TOPIC, transport))
            .await
            .unwrap();
        let client = client(apns.ca_pem());
        (key, apns, client)
    }

    fn alert_body() -> Value {
        json!({"aps": {"alert": {"title": "t", "body": "b"}, "mutable-content": 1}, "enc": "AAAA"})
    }

    struct Push<'a> {
        jwt: Option<String>,
        token: String,
        topic: Option<&'a str>,
        push_type: &'a str,
        priority: &'a str,
        body: Vec<u8>,
    }

    impl<'a> Push<'a> {
        fn alert(key: &ApnsKey) -> Push<'a> {
            Push {
                jwt: Some(valid_apns_jwt(key)),
                token: token(1),
                topic: Some(TOPIC),
                push_type: "alert",
                priority: "10",
                body: alert_body().to_string().into_bytes(),
            }
        }

        async fn send(self, apns: &MockApns, client: &reqwest::Client) -> (u16, HeaderMap, Value) {
            let mut req = client
                .post(format!("{}/3/device/{}", apns.endpoint(), self.token))
                .header("apns-push-type", self.push_type)
                .header("apns-priority", self.priority)
                .body(self.body);
            if let Some(jwt) = self.jwt {
                req = req.header("authorization", format!("bearer {jwt}"));
            }
            if let Some(topic) = self.topic {
                req = req.header("apns-topic", topic);
            }
            let response = tokio::time::timeout(TIMEOUT, req.send()).await.unwrap().unwrap();
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response.bytes().await.unwrap();
            (
                status,
                headers,
                serde_json::from_slice(&body).unwrap_or(Value::Null),
            )
        }
    }

    fn reason(body: &Value) -> &str {
        body["reason"].as_str().unwrap_or("")
    }

    #[tokio::test]
    async fn valid_push_is_accepted_over_tls_and_recorded() {
        let (key, apns, client) = mock(Transport::Tls).await;
        assert!(apns.endpoint().starts_with("https://127.0.0.1:"));
        let (status, headers, body) = Push::alert(&key).send(&apns, &client).await;
        assert_eq!(status, 200, "{body}");
        assert!(headers.get("apns-id").is_some());
        assert_eq!(body, Value::Null, "success has no body");
        let got = apns.wait_for(1, TIMEOUT).await.unwrap();
        assert_eq!(got[0].token, token(1));
        assert_eq!(got[0].header("apns-topic"), Some(TOPIC));
        assert_eq!(got[0].body, alert_body());
        assert_eq!(apns.distinct_provider_tokens(), 1);
    }

    #[tokio::test]
    async fn valid_push_is_accepted_over_h2c() {
        let (key, apns, client) = mock(Transport::H2c).await;
        assert!(apns.endpoint().starts_with("http://"));
        assert_eq!(Push::alert(&key).send(&apns, &client).await.0, 200);
    }

    #[tokio::test]
    async fn http1_is_refused() {
        let (_key, apns, _) = mock(Transport::H2c).await;
        let http1 = crate::testing::http1_client();
        let result = http1
            .post(format!("{}/3/device/{}", apns.endpoint(), token(1)))
            .send()
            .await;
        assert!(result.is_err(), "APNs speaks only HTTP/2");
    }

    #[tokio::test]
    async fn provider_token_problems_are_refused() {
        let (key, apns, client) = mock(Transport::H2c).await;
        let other = ApnsKey::generate(&key.key_id, &key.team_id);
        let now = unix_s();
        let cases = [
            (None, "MissingProviderToken"),
            (Some("not-a-jwt".to_owned()), "InvalidProviderToken"),
            (Some(valid_apns_jwt(&other)), "InvalidProviderToken"),
            (
                Some(apns_jwt(&key, "OTHERKEYID", &key.team_id, now)),
                "InvalidProviderToken",
            ),
            (
                Some(apns_jwt(&key, &key.key_id, "OTHERTEAM1", now)),
                "InvalidProviderToken",
            ),
            (
                Some(apns_jwt(&key, &key.key_id, &key.team_id, now - 3700)),
                "ExpiredProviderToken",
            ),
        ];
        for (jwt, expected) in cases {
            // A fresh connection each time, so token rotation does not interfere.
            let client = crate::testing::client(None);
            let (status, _, body) = Push {
                jwt,
                ..Push::alert(&key)
            }
            .send(&apns, &client)
            .await;
            assert_eq!((status, reason(&body)), (403, expected));
        }
        assert_eq!(apns.delivered().len(), 0);
        assert_eq!(Push::alert(&key).send(&apns, &client).await.0, 200);
    }

    #[tokio::test]
    async fn changing_the_provider_token_on_a_connection_too_often_is_refused() {
        let (key, apns, client) = mock(Transport::H2c).await;
        // ES256 here is deterministic (RFC 6979): distinct tokens need distinct claims.
        let jwt = |age| Some(apns_jwt(&key, &key.key_id, &key.team_id, unix_s() - age));
        let (first, second, third) = (jwt(30), jwt(20), jwt(10));
        assert_eq!(
            Push {
                jwt: first.clone(),
                ..Push::alert(&key)
            }
            .send(&apns, &client)
            .await
            .0,
            200
        );
        let (status, _, body) = Push {
            jwt: second,
            ..Push::alert(&key)
        }
        .send(&apns, &client)
        .await;
        assert_eq!((status, reason(&body)), (429, "TooManyProviderTokenUpdates"));
        assert_eq!(
            Push {
                jwt: first,
                ..Push::alert(&key)
            }
            .send(&apns, &client)
            .await
            .0,
            200
        );
        // Another connection may use another token.
        let other_connection = crate::testing::client(None);
        assert_eq!(
            Push {
                jwt: third,
                ..Push::alert(&key)
            }
            .send(&apns, &other_connection)
            .await
            .0,
            200
        );
        assert_eq!(
            apns.distinct_provider_tokens(),
            3,
            "the refused one was valid, just too soon"
        );
    }

    #[tokio::test]
    async fn header_and_token_problems_are_refused() {
        let (key, apns, client) = mock(Transport::H2c).await;
        apns.bind_token_topic(&token(9), "com.other.app");
        let jwt = valid_apns_jwt(&key);
        let alert = || Push {
            jwt: Some(jwt.clone()),
            ..Push::alert(&key)
        };
        let background = json!({"aps": {"content-available": 1}, "enc": "x"})
            .to_string()
            .into_bytes();
        let cases: Vec<(Push, u16, &str)> = vec![
            (
                Push {
                    topic: None,
                    ..alert()
                },
                400,
                "MissingTopic",
            ),
            (
                Push {
                    topic: Some("com.other.app"),
                    ..alert()
                },
                400,
                "TopicDisallowed",
            ),
            (
                Push {
                    push_type: "voip2",
                    ..alert()
                },
                400,
                "InvalidPushType",
            ),
            (
                Push {
                    priority: "7",
                    ..alert()
                },
                400,
                "BadPriority",
            ),
            (
                Push {
                    push_type: "background",
                    body: background,
                    ..alert()
                },
                400,
                "BadPriority",
            ),
            (
                Push {
                    token: "abcd".into(),
                    ..alert()
                },
                400,
                "BadDeviceToken",
            ),
            (
                Push {
                    token: "zz".repeat(32),
                    ..alert()
                },
                400,
                "BadDeviceToken",
            ),
            (
                Push {
                    token: token(9),
                    ..alert()
                },
                400,
                "DeviceTokenNotForTopic",
            ),
        ];
        for (push, status, expected) in cases {
            let (got, _, body) = push.send(&apns, &client).await;
            assert_eq!((got, reason(&body)), (status, expected));
        }
    }

    #[tokio::test]
    async fn payload_problems_are_refused() {
        let (key, apns, client) = mock(Transport::H2c).await;
        let jwt = valid_apns_jwt(&key);
        let alert = || Push {
            jwt: Some(jwt.clone()),
            ..Push::alert(&key)
        };
        let big = json!({"aps": {"alert": "x"}, "enc": "A".repeat(APNS_MAX_BODY)})
            .to_string()
            .into_bytes();
        let fits = {
            let overhead = json!({"aps": {"alert": "x"}, "enc": ""}).to_string().len();
            json!({"aps": {"alert": "x"}, "enc": "A".repeat(APNS_MAX_BODY - overhead)})
                .to_string()
                .into_bytes()
        };
        assert_eq!(fits.len(), APNS_MAX_BODY);
        let alert_in_background = json!({"aps": {"content-available": 1, "alert": "x"}})
            .to_string()
            .into_bytes();
        let cases: Vec<(Push, u16, &str)> = vec![
            (
                Push {
                    body: vec![],
                    ..alert()
                },
                400,
                "PayloadEmpty",
            ),
            (Push { body: big, ..alert() }, 413, "PayloadTooLarge"),
            (
                Push {
                    body: b"{not json".to_vec(),
                    ..alert()
                },
                400,
                "BadPayload",
            ),
            (
                Push {
                    body: br#"{"enc":"x"}"#.to_vec(),
                    ..alert()
                },
                400,
                "BadPayload",
            ),
            (
                Push {
                    push_type: "background",
                    priority: "5",
                    body: alert_in_background,
                    ..alert()
                },
                400,
                "BadPayload",
            ),
            (
                Push {
                    body: fits,
                    ..alert()
                },
                200,
                "",
            ),
        ];
        for (push, status, expected) in cases {
            let (got, _, body) = push.send(&apns, &client).await;
            assert_eq!((got, reason(&body)), (status, expected));
        }
    }

    #[tokio::test]
    async fn background_push_with_priority_5_is_accepted() {
        let (key, apns, client) = mock(Transport::H2c).await;
        let body = json!({"aps": {"content-available": 1}, "enc": "x"})
            .to_string()
            .into_bytes();
        let push = Push {
            push_type: "background",
            priority: "5",
            body,
            ..Push::alert(&key)
        };
        assert_eq!(push.send(&apns, &client).await.0, 200);
    }

    #[tokio::test]
    async fn dead_tokens_get_410_with_a_timestamp() {
        let (key, apns, client) = mock(Transport::H2c).await;
        apns.mark_dead(&token(1));
        let (status, _, body) = Push::alert(&key).send(&apns, &client).await;
        assert_eq!((status, reason(&body)), (410, "Unregistered"));
        assert!(body["timestamp"].as_u64().unwrap() > 1_600_000_000_000);
        assert_eq!(apns.attempts()[0].status, 410);
    }

    #[tokio::test]
    async fn injected_failures_come_first_then_success() {
        let (key, apns, client) = mock(Transport::H2c).await;
        let jwt = valid_apns_jwt(&key);
        let alert = || Push {
            jwt: Some(jwt.clone()),
            ..Push::alert(&key)
        };
        apns.fail_next(2, ApnsFailure::unavailable().retry_after(7));
        for _ in 0..2 {
            let (status, headers, body) = alert().send(&apns, &client).await;
            assert_eq!((status, reason(&body)), (503, "ServiceUnavailable"));
            assert_eq!(headers["retry-after"], "7");
        }
        assert_eq!(alert().send(&apns, &client).await.0, 200);
        apns.set_outage(Some(ApnsFailure::too_many_requests()));
        assert_eq!(alert().send(&apns, &client).await.0, 429);
        apns.set_outage(None);
        assert_eq!(alert().send(&apns, &client).await.0, 200);
        assert_eq!(apns.delivered().len(), 2);
        assert_eq!(apns.attempts().len(), 5);
        assert_eq!(apns.requests(), 5);
    }

    #[tokio::test]
    async fn wait_for_times_out_when_nothing_arrives() {
        let (_key, apns, _) = mock(Transport::H2c).await;
        let err = apns.wait_for(1, Duration::from_millis(50)).await.unwrap_err();
        assert_eq!((err.wanted, err.got), (1, 0));
    }

    #[tokio::test]
    async fn shutdown_closes_the_port() {
        let (_key, apns, _) = mock(Transport::Tls).await;
        let addr = apns.addr();
        apns.shutdown().await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
}
