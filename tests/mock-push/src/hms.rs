//! A mock of Huawei Push Kit: the OAuth 2.0 token endpoint (client credentials) and
//! `messages:send`, answering with Push Kit's JSON result codes.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};

use crate::record::{Attempt, Faults, Recorder, WaitTimeout, fill_random, lock};
use crate::server::{MockRequest, Server, StartError, Transport, json_response};
use crate::tls::TlsIdentity;

/// Push Kit's limit on `message.data`, in bytes.
pub const HMS_MAX_DATA: usize = 4096;
/// The token endpoint's path (Huawei's is `/oauth2/v3/token`).
pub const HMS_TOKEN_PATH: &str = "/oauth2/v3/token";

/// How the mock Push Kit is set up.
#[derive(Clone, Debug)]
pub struct HmsMockConfig {
    /// The only app id whose `messages:send` is accepted.
    pub app_id: String,
    /// The OAuth client id.
    pub client_id: String,
    /// The OAuth client secret.
    pub client_secret: String,
    /// TLS or h2c.
    pub transport: Transport,
    /// Where to listen; port 0 picks a free port.
    pub bind: SocketAddr,
    /// The certificate to serve over TLS; `None` generates one.
    pub tls: Option<Arc<TlsIdentity>>,
    /// How long issued access tokens live (Huawei: 3600 s).
    pub token_lifetime: Duration,
}

impl HmsMockConfig {
    /// An app with a random client secret, on 127.0.0.1 port 0.
    pub fn new(app_id: &str, transport: Transport) -> Self {
        let mut raw = [0u8; 16];
        fill_random(&mut raw);
        Self {
            app_id: app_id.to_owned(),
            client_id: app_id.to_owned(),
            client_secret: hex::encode(raw),
            transport,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: None,
            token_lifetime: Duration::from_secs(3600),
        }
    }
}

/// One request to `messages:send` and what the mock answered.
#[derive(Clone, Debug)]
pub struct HmsRequest {
    /// The app id in the path.
    pub app_id: String,
    /// `message.token[0]`.
    pub token: String,
    /// The request headers.
    pub headers: HeaderMap,
    /// The parsed body (`Value::Null` if not JSON).
    pub body: Value,
    /// `message.data`, when it is a JSON object of strings (as the SDK parses it).
    pub data: HashMap<String, String>,
    /// When it arrived.
    pub at: SystemTime,
    /// The HTTP status answered.
    pub status: u16,
    /// The result code answered.
    pub code: String,
}

impl Attempt for HmsRequest {
    fn delivered(&self) -> bool {
        self.status == 200 && self.code == SUCCESS
    }
}

const SUCCESS: &str = "80000000";

/// A result the mock is told to answer.
#[derive(Clone, Debug)]
pub struct HmsFailure {
    /// HTTP status.
    pub status: u16,
    /// Push Kit's result code.
    pub code: String,
    /// Its message.
    pub msg: String,
}

impl HmsFailure {
    /// `status` with `code` and `msg`.
    pub fn new(status: u16, code: &str, msg: &str) -> Self {
        Self {
            status,
            code: code.to_owned(),
            msg: msg.to_owned(),
        }
    }

    /// 503, Push Kit's flow control.
    pub fn flow_control() -> Self {
        Self::new(503, "80100017", "Flow control")
    }

    /// `80300007`: the token is not valid for the app.
    pub fn invalid_token() -> Self {
        Self::new(400, "80300007", "All the tokens are invalid")
    }

    /// `80300008`: the message is too large.
    pub fn too_large() -> Self {
        Self::new(400, "80300008", "The message body size exceeds the default value")
    }

    /// `80200003`: the access token has expired.
    pub fn token_expired() -> Self {
        Self::new(401, "80200003", "Oauth Token expired.")
    }

    fn response(&self) -> Response<Full<Bytes>> {
        answer(
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &self.code,
            &self.msg,
        )
    }
}

fn answer(status: StatusCode, code: &str, msg: &str) -> Response<Full<Bytes>> {
    let mut id = [0u8; 12];
    fill_random(&mut id);
    json_response(
        status,
        &json!({"code": code, "msg": msg, "requestId": hex::encode(id)}),
        &[],
    )
}

struct HmsState {
    config: HmsMockConfig,
    token_lifetime: std::sync::Mutex<Duration>,
    requests: AtomicU64,
    token_requests: AtomicU64,
    grants: AtomicU64,
    access_tokens: std::sync::Mutex<HashMap<String, Instant>>,
    dead: std::sync::Mutex<HashSet<String>>,
    recorder: Recorder<HmsRequest>,
    faults: Faults<HmsFailure>,
}

/// A running mock Push Kit. Dropping it stops it.
pub struct MockHms {
    server: Server,
    state: Arc<HmsState>,
    tls: Option<Arc<TlsIdentity>>,
}

impl std::fmt::Debug for MockHms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockHms")
            .field("endpoint", &self.endpoint())
            .finish()
    }
}

impl MockHms {
    /// Starts listening.
    pub async fn start(config: HmsMockConfig) -> Result<Self, StartError> {
        let tls = match (config.transport, &config.tls) {
            (Transport::Tls, Some(identity)) => Some(identity.clone()),
            (Transport::Tls, None) => Some(Arc::new(TlsIdentity::generate(&[])?)),
            (Transport::H2c, _) => None,
        };
        let state = Arc::new(HmsState {
            token_lifetime: std::sync::Mutex::new(config.token_lifetime),
            config: config.clone(),
            requests: AtomicU64::new(0),
            token_requests: AtomicU64::new(0),
            grants: AtomicU64::new(0),
            access_tokens: Default::default(),
            dead: Default::default(),
            recorder: Recorder::new(),
            faults: Faults::new(),
        });
        let handler_state = state.clone();
        let handler = move |req: MockRequest| {
            let state = handler_state.clone();
            async move { state.handle(req).await }
        };
        let server = Server::start(config.bind, config.transport, tls.as_deref(), false, handler).await?;
        Ok(Self { server, state, tls })
    }

    /// The Push Kit base URL to configure as `endpoint`.
    pub fn endpoint(&self) -> String {
        self.server.base_url()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The token URL to configure as `token_endpoint`.
    pub fn token_endpoint(&self) -> String {
        format!("{}{HMS_TOKEN_PATH}", self.server.base_url())
    }

    /// The app's OAuth client secret.
    pub fn client_secret(&self) -> &str {
        &self.state.config.client_secret
    }

    /// The CA certificate to trust, when serving TLS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.tls.as_deref().map(TlsIdentity::ca_pem)
    }

    /// Every `messages:send` so far.
    pub fn attempts(&self) -> Vec<HmsRequest> {
        self.state.recorder.attempts()
    }

    /// The sends answered `80000000`.
    pub fn delivered(&self) -> Vec<HmsRequest> {
        self.state.recorder.delivered()
    }

    /// Waits until at least `n` sends succeeded, and returns them.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Result<Vec<HmsRequest>, WaitTimeout> {
        self.state.recorder.wait_for(n, timeout).await
    }

    /// Forgets what was recorded (counters stay).
    pub fn clear(&self) {
        self.state.recorder.clear();
    }

    /// From now on `token` gets `80300007`.
    pub fn mark_dead(&self, token: &str) {
        lock(&self.state.dead).insert(token.to_owned());
    }

    /// The next `n` authenticated sends get `failure`.
    pub fn fail_next(&self, n: usize, failure: HmsFailure) {
        self.state.faults.fail_next(n, failure);
    }

    /// Every authenticated send gets `failure` until called with `None`.
    pub fn set_outage(&self, failure: Option<HmsFailure>) {
        self.state.faults.set_outage(failure);
    }

    /// Every access token issued so far is expired from now on (`80200003`).
    pub fn expire_access_tokens(&self) {
        let past = Instant::now();
        for expiry in lock(&self.state.access_tokens).values_mut() {
            *expiry = past;
        }
    }

    /// Access tokens issued from now on live this long.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        *lock(&self.state.token_lifetime) = lifetime;
    }

    /// Requests on any path.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// Requests to the token endpoint.
    pub fn token_requests(&self) -> u64 {
        self.state.token_requests.load(Ordering::Relaxed)
    }

    /// Access tokens granted.
    pub fn token_grants(&self) -> u64 {
        self.state.grants.load(Ordering::Relaxed)
    }

    /// Stops the server and closes every connection.
    pub async fn shutdown(mut self) {
        self.server.shutdown().await;
    }
}

impl HmsState {
    async fn handle(&self, req: MockRequest) -> Response<Full<Bytes>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let path = req.parts.uri.path().to_owned();
        if path == HMS_TOKEN_PATH && req.parts.method == Method::POST {
            return self.token(&req.body);
        }
        let app = path
            .strip_prefix("/v1/")
            .and_then(|rest| rest.strip_suffix("/messages:send"))
            .filter(|p| !p.contains('/'));
        match (app, &req.parts.method) {
            (Some(app), &Method::POST) => self.send(app, &req),
            _ => answer(StatusCode::NOT_FOUND, "80100000", "Not found"),
        }
    }

    fn token(&self, body: &[u8]) -> Response<Full<Bytes>> {
        self.token_requests.fetch_add(1, Ordering::Relaxed);
        let form: HashMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
        let field = |k: &str| form.get(k).map(String::as_str);
        if field("grant_type") != Some("client_credentials") {
            return oauth_error(1102, "unsupported grant type");
        }
        if field("client_id") != Some(self.config.client_id.as_str())
            || field("client_secret") != Some(self.config.client_secret.as_str())
        {
            return oauth_error(1101, "invalid client");
        }
        let lifetime = *lock(&self.token_lifetime);
        let mut raw = [0u8; 24];
        fill_random(&mut raw);
        let token = format!("DAEDA{}", hex::encode(raw));
        lock(&self.access_tokens).insert(token.clone(), Instant::now() + lifetime);
        self.grants.fetch_add(1, Ordering::Relaxed);
        json_response(
            StatusCode::OK,
            &json!({"access_token": token, "expires_in": lifetime.as_secs(), "token_type": "Bearer"}),
            &[],
        )
    }

    fn send(&self, app: &str, req: &MockRequest) -> Response<Full<Bytes>> {
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let message = body.get("message");
        let token = message
            .and_then(|m| m.get("token"))
            .and_then(Value::as_array)
            .and_then(|t| t.first())
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let data = message
            .and_then(|m| m.get("data"))
            .and_then(Value::as_str)
            .and_then(|d| serde_json::from_str::<HashMap<String, String>>(d).ok())
            .unwrap_or_default();
        let mut record = HmsRequest {
            app_id: app.to_owned(),
            token: token.clone(),
            headers: req.parts.headers.clone(),
            body: body.clone(),
            data,
            at: SystemTime::now(),
            status: 200,
            code: SUCCESS.into(),
        };
        let response = match self.check(app, &req.parts.headers, &body, &token) {
            Ok(()) => answer(StatusCode::OK, SUCCESS, "Success"),
            Err(failure) => {
                record.status = failure.status;
                record.code = failure.code.clone();
                failure.response()
            }
        };
        self.recorder.record(record);
        response
    }

    fn check(&self, app: &str, headers: &HeaderMap, body: &Value, token: &str) -> Result<(), HmsFailure> {
        let bearer = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let Some(bearer) = bearer else {
            return Err(HmsFailure::new(401, "80200001", "Oauth authentication error"));
        };
        match lock(&self.access_tokens).get(bearer) {
            None => return Err(HmsFailure::new(401, "80200001", "Oauth authentication error")),
            Some(expiry) if Instant::now() >= *expiry => return Err(HmsFailure::token_expired()),
            Some(_) => {}
        }
        if app != self.config.app_id {
            return Err(HmsFailure::new(401, "80200001", "Oauth authentication error"));
        }
        if let Some(failure) = self.faults.take() {
            return Err(failure);
        }
        validate_body(body)?;
        if lock(&self.dead).contains(token) {
            return Err(HmsFailure::invalid_token());
        }
        Ok(())
    }
}

/// The parts of Push Kit's validation a sender can get wrong.
fn validate_body(body: &Value) -> Result<(), HmsFailure> {
    let bad = |msg: &str| HmsFailure::new(400, "80100001", msg);
    let top = body
        .as_object()
        .ok_or_else(|| bad("Some request parameters are incorrect"))?;
    if top.keys().any(|k| k != "message" && k != "validate_only") {
        return Err(bad("Unknown request parameter"));
    }
    let message = top
        .get("message")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("message is required"))?;
    const FIELDS: [&str; 7] = [
        "data",
        "notification",
        "android",
        "apns",
        "webpush",
        "token",
        "topic",
    ];
    if message.keys().any(|k| !FIELDS.contains(&k.as_str())) {
        return Err(bad("Unknown message parameter"));
    }
    let tokens = message.get("token").and_then(Value::as_array);
    if !tokens.is_some_and(|t| {
        (1..=1000).contains(&t.len()) && t.iter().all(|x| x.as_str().is_some_and(|s| !s.is_empty()))
    }) {
        return Err(HmsFailure::new(
            400,
            "80300010",
            "The number of tokens in the message body exceeds the default value",
        ));
    }
    let data = message
        .get("data")
        .map(|d| d.as_str().ok_or_else(|| bad("data must be a string")));
    if let Some(data) = data.transpose()?
        && data.len() > HMS_MAX_DATA
    {
        return Err(HmsFailure::too_large());
    }
    if let Some(android) = message.get("android") {
        let android = android
            .as_object()
            .ok_or_else(|| bad("android must be an object"))?;
        if let Some(u) = android.get("urgency")
            && !matches!(u.as_str(), Some("HIGH" | "NORMAL"))
        {
            return Err(bad("android.urgency must be HIGH or NORMAL"));
        }
        if let Some(ttl) = android.get("ttl") {
            let ok = ttl
                .as_str()
                .map(|t| t.strip_suffix('s').unwrap_or(t))
                .is_some_and(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()));
            if !ok {
                return Err(bad("android.ttl must be seconds, e.g. \"86400s\""));
            }
        }
    }
    Ok(())
}

fn oauth_error(code: u32, description: &str) -> Response<Full<Bytes>> {
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({"error": code, "sub_error": 20152, "error_description": description}),
        &[],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_validated_like_push_kit() {
        let ok = json!({"validate_only": false, "message": {"data": "{\"enc\":\"x\"}", "token": ["t"], "android": {"urgency": "HIGH", "ttl": "60s"}}});
        assert!(validate_body(&ok).is_ok());
        let code = |v: Value| validate_body(&v).unwrap_err().code;
        assert_eq!(code(json!({"message": {"data": "x", "token": []}})), "80300010");
        assert_eq!(
            code(json!({"message": {"data": "x".repeat(4097), "token": ["t"]}})),
            "80300008"
        );
        assert_eq!(
            code(json!({"message": {"data": "x", "token": ["t"], "android": {"urgency": "LOW"}}})),
            "80100001"
        );
        assert_eq!(
            code(json!({"message": {"data": "x", "token": ["t"], "android": {"ttl": "1h"}}})),
            "80100001"
        );
        assert_eq!(code(json!({"msg": {}})), "80100001");
    }
}
