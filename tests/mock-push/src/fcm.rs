//! A mock of Firebase Cloud Messaging's HTTP v1 API and Google's OAuth2 token endpoint.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::jwt::VerifyingKey;
use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::Full;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::apns::unix_s;
use crate::fixtures::ServiceAccount;
use crate::record::{Attempt, Faults, Recorder, WaitTimeout, fill_random, lock};
use crate::server::{MockRequest, Server, StartError, Transport, json_response};
use crate::tls::TlsIdentity;

/// FCM's limit on the `data` map: keys and values, in bytes.
pub const FCM_MAX_DATA: usize = 4000;
/// The OAuth grant type a service account uses.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const FCM_ERROR_TYPE: &str = "type.googleapis.com/google.firebase.fcm.v1.FcmError";
const ACCEPTED_SCOPES: [&str; 2] = [
    "https://www.googleapis.com/auth/firebase.messaging",
    "https://www.googleapis.com/auth/cloud-platform",
];

/// How the mock FCM is set up.
#[derive(Clone, Debug)]
pub struct FcmMockConfig {
    /// The only project whose `messages:send` is accepted.
    pub project_id: String,
    /// The service account allowed to obtain tokens (the assertion's `iss`).
    pub client_email: String,
    /// SPKI PEM of the service account's RSA key.
    pub public_key_pem: String,
    /// The host name clients reach the mock by (e.g. a docker-compose service name); it
    /// goes into [`MockFcm::token_uri`], which assertions must name as `aud`. `None`: the
    /// bound IP address.
    pub public_host: Option<String>,
    /// TLS or h2c.
    pub transport: Transport,
    /// Where to listen; port 0 picks a free port.
    pub bind: SocketAddr,
    /// The certificate to serve over TLS; `None` generates one.
    pub tls: Option<Arc<TlsIdentity>>,
    /// How long issued access tokens live (Google: 3599 s).
    pub token_lifetime: Duration,
}

impl FcmMockConfig {
    /// Google's rules for `account`, on 127.0.0.1 port 0.
    pub fn new(account: &ServiceAccount, transport: Transport) -> FcmMockConfig {
        FcmMockConfig {
            project_id: account.project_id.clone(),
            client_email: account.client_email.clone(),
            public_key_pem: account.key.public_key_pem.clone(),
            public_host: None,
            transport,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: None,
            token_lifetime: Duration::from_secs(3599),
        }
    }
}

/// One request to `messages:send` and what the mock answered.
#[derive(Clone, Debug)]
pub struct FcmRequest {
    /// The project in the path.
    pub project: String,
    /// `message.token`, if the body had one.
    pub token: String,
    /// The request headers as received.
    pub headers: HeaderMap,
    /// The parsed JSON body (`Value::Null` if it was not JSON).
    pub body: Value,
    /// `message.data`, if it was a map of strings.
    pub data: BTreeMap<String, String>,
    /// When it arrived.
    pub at: SystemTime,
    /// The HTTP status answered.
    pub status: u16,
    /// The FCM `errorCode` (or Google `status` when there is none) answered, if any.
    pub error: Option<String>,
}

impl Attempt for FcmRequest {
    fn delivered(&self) -> bool {
        self.status == 200
    }
}

/// Google's message for a registration token it cannot parse.
const INVALID_TOKEN_MESSAGE: &str = "The registration token is not a valid FCM registration token";

/// An error the mock is told to answer, Google-style.
#[derive(Clone, Debug)]
pub struct FcmFailure {
    /// HTTP status.
    pub status: u16,
    /// Google's canonical status, e.g. `UNAVAILABLE`.
    pub google_status: String,
    /// The FCM `errorCode` detail, e.g. `QUOTA_EXCEEDED`; `None` sends no details.
    pub error_code: Option<String>,
    /// `Retry-After` seconds to send along.
    pub retry_after: Option<u64>,
    /// The error message, instead of the one the mock would give.
    pub message: Option<&'static str>,
    /// A `google.rpc.BadRequest` field violation on this field, e.g. `message.token`.
    pub field: Option<&'static str>,
}

impl FcmFailure {
    /// A failure with the given status, Google status and FCM error code.
    pub fn new(status: u16, google_status: &str, error_code: Option<&str>) -> FcmFailure {
        FcmFailure {
            status,
            google_status: google_status.to_owned(),
            error_code: error_code.map(str::to_owned),
            retry_after: None,
            message: None,
            field: None,
        }
    }

    /// The same failure with `Retry-After: secs`.
    pub fn retry_after(mut self, secs: u64) -> FcmFailure {
        self.retry_after = Some(secs);
        self
    }

    /// 429 `RESOURCE_EXHAUSTED` / `QUOTA_EXCEEDED`.
    pub fn quota_exceeded() -> FcmFailure {
        FcmFailure::new(429, "RESOURCE_EXHAUSTED", Some("QUOTA_EXCEEDED"))
    }

    /// 503 `UNAVAILABLE`.
    pub fn unavailable() -> FcmFailure {
        FcmFailure::new(503, "UNAVAILABLE", Some("UNAVAILABLE"))
    }

    /// 500 `INTERNAL`.
    pub fn internal() -> FcmFailure {
        FcmFailure::new(500, "INTERNAL", Some("INTERNAL"))
    }

    /// 404 `NOT_FOUND` / `UNREGISTERED`.
    pub fn unregistered() -> FcmFailure {
        FcmFailure::new(404, "NOT_FOUND", Some("UNREGISTERED"))
    }

    /// 403 `PERMISSION_DENIED` / `SENDER_ID_MISMATCH`.
    pub fn sender_id_mismatch() -> FcmFailure {
        FcmFailure::new(403, "PERMISSION_DENIED", Some("SENDER_ID_MISMATCH"))
    }

    /// 400 `INVALID_ARGUMENT`.
    pub fn invalid_argument() -> FcmFailure {
        FcmFailure::new(400, "INVALID_ARGUMENT", Some("INVALID_ARGUMENT"))
    }

    /// 400 `INVALID_ARGUMENT` about the token, as FCM answers a token it cannot parse.
    pub fn invalid_token() -> FcmFailure {
        FcmFailure {
            message: Some(INVALID_TOKEN_MESSAGE),
            field: Some("message.token"),
            ..FcmFailure::invalid_argument()
        }
    }

    /// 401 `UNAUTHENTICATED` / `THIRD_PARTY_AUTH_ERROR`.
    pub fn third_party_auth_error() -> FcmFailure {
        FcmFailure::new(401, "UNAUTHENTICATED", Some("THIRD_PARTY_AUTH_ERROR"))
    }

    fn response(&self, message: &str) -> Response<Full<Bytes>> {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = self.message.unwrap_or(message);
        let mut error = json!({"code": self.status, "message": message, "status": self.google_status});
        let mut details = Vec::new();
        if let Some(code) = &self.error_code {
            details.push(json!({ "@type": FCM_ERROR_TYPE, "errorCode": code }));
        }
        if let Some(field) = self.field {
            details.push(json!({
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{ "field": field, "description": message }],
            }));
        }
        if !details.is_empty() {
            error["details"] = Value::Array(details);
        }
        let headers: Vec<_> = self
            .retry_after
            .map(|s| ("retry-after", s.to_string()))
            .into_iter()
            .collect();
        json_response(status, &json!({ "error": error }), &headers)
    }
}

struct FcmState {
    config: FcmMockConfig,
    key: VerifyingKey,
    audience: String,
    token_lifetime: std::sync::Mutex<Duration>,
    requests: AtomicU64,
    token_requests: AtomicU64,
    grants: AtomicU64,
    access_tokens: std::sync::Mutex<HashMap<String, Instant>>,
    dead: std::sync::Mutex<std::collections::HashSet<String>>,
    recorder: Recorder<FcmRequest>,
    faults: Faults<FcmFailure>,
    token_faults: Faults<FcmFailure>,
}

/// A running mock FCM server (send endpoint and OAuth token endpoint). Dropping it stops it.
pub struct MockFcm {
    server: Server,
    state: Arc<FcmState>,
    tls: Option<Arc<TlsIdentity>>,
}

impl std::fmt::Debug for MockFcm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockFcm")
            .field("endpoint", &self.endpoint())
            .finish()
    }
}

impl MockFcm {
    /// Starts listening.
    pub async fn start(config: FcmMockConfig) -> Result<MockFcm, StartError> {
        let key = VerifyingKey::rs256_from_pem(&config.public_key_pem)?;
        let tls = match (config.transport, &config.tls) {
            (Transport::Tls, Some(identity)) => Some(identity.clone()),
            (Transport::Tls, None) => Some(Arc::new(TlsIdentity::generate(&[])?)),
            (Transport::H2c, _) => None,
        };
        // The audience depends on the port, known only once bound: the handler reads it
        // from a cell filled right after.
        let cell: Arc<std::sync::OnceLock<Arc<FcmState>>> = Arc::new(std::sync::OnceLock::new());
        let handler_cell = cell.clone();
        let handler = move |req: MockRequest| {
            let state = handler_cell.get().cloned();
            async move {
                match state {
                    Some(state) => state.handle(req).await,
                    None => crate::server::plain(StatusCode::SERVICE_UNAVAILABLE),
                }
            }
        };
        let (bind, transport) = (config.bind, config.transport);
        let server = Server::start(bind, transport, tls.as_deref(), false, handler).await?;
        let audience = match &config.public_host {
            Some(host) => format!("{}://{host}:{}/token", server.scheme(), server.addr().port()),
            None => format!("{}/token", server.base_url()),
        };
        let state = Arc::new(FcmState {
            token_lifetime: std::sync::Mutex::new(config.token_lifetime),
            config,
            key,
            audience,
            requests: AtomicU64::new(0),
            token_requests: AtomicU64::new(0),
            grants: AtomicU64::new(0),
            access_tokens: Default::default(),
            dead: Default::default(),
            recorder: Recorder::new(),
            faults: Faults::new(),
            token_faults: Faults::new(),
        });
        let _ = cell.set(state.clone());
        Ok(MockFcm { server, state, tls })
    }

    /// The base URL to configure as the FCM endpoint (`https://…` or `http://…`).
    pub fn endpoint(&self) -> String {
        self.server.base_url()
    }

    /// The OAuth token endpoint to put in the service account's `token_uri`.
    pub fn token_uri(&self) -> String {
        self.state.audience.clone()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The CA certificate to trust, when serving TLS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.tls.as_deref().map(TlsIdentity::ca_pem)
    }

    /// Every `messages:send` request so far, answered or refused.
    pub fn attempts(&self) -> Vec<FcmRequest> {
        self.state.recorder.attempts()
    }

    /// The sends answered 200.
    pub fn delivered(&self) -> Vec<FcmRequest> {
        self.state.recorder.delivered()
    }

    /// Waits until at least `n` sends were answered 200, and returns them.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Result<Vec<FcmRequest>, WaitTimeout> {
        self.state.recorder.wait_for(n, timeout).await
    }

    /// Forgets what was recorded (counters stay).
    pub fn clear(&self) {
        self.state.recorder.clear();
    }

    /// From now on `token` gets 404 `UNREGISTERED`.
    pub fn mark_dead(&self, token: &str) {
        lock(&self.state.dead).insert(token.to_owned());
    }

    /// The next `n` authenticated sends get `failure`.
    pub fn fail_next(&self, n: usize, failure: FcmFailure) {
        self.state.faults.fail_next(n, failure);
    }

    /// Every authenticated send gets `failure` until called with `None`.
    pub fn set_outage(&self, failure: Option<FcmFailure>) {
        self.state.faults.set_outage(failure);
    }

    /// The next `n` token requests get `failure` (OAuth-style body).
    pub fn fail_next_token_requests(&self, n: usize, failure: FcmFailure) {
        self.state.token_faults.fail_next(n, failure);
    }

    /// Holds every request (sends and token requests) this long before answering.
    pub fn set_delay(&self, delay: Option<Duration>) {
        self.state.faults.set_delay(delay);
    }

    /// Access tokens issued from now on live this long.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        *lock(&self.state.token_lifetime) = lifetime;
    }

    /// Invalidates every access token issued so far (sends with them get 401).
    pub fn revoke_access_tokens(&self) {
        lock(&self.state.access_tokens).clear();
    }

    /// Requests received on any path.
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

impl FcmState {
    async fn handle(&self, req: MockRequest) -> Response<Full<Bytes>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if let Some(delay) = self.faults.delay() {
            tokio::time::sleep(delay).await;
        }
        let path = req.parts.uri.path().to_owned();
        if path == "/token" && req.parts.method == Method::POST {
            return self.token(&req.body);
        }
        let project = path
            .strip_prefix("/v1/projects/")
            .and_then(|rest| rest.strip_suffix("/messages:send"))
            .filter(|p| !p.contains('/'));
        match (project, &req.parts.method) {
            (Some(project), &Method::POST) => self.send(project, &req),
            _ => FcmFailure::new(404, "NOT_FOUND", None).response("Requested entity was not found."),
        }
    }

    fn token(&self, body: &[u8]) -> Response<Full<Bytes>> {
        self.token_requests.fetch_add(1, Ordering::Relaxed);
        if let Some(failure) = self.token_faults.take() {
            let status = StatusCode::from_u16(failure.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let headers: Vec<_> = failure
                .retry_after
                .map(|s| ("retry-after", s.to_string()))
                .into_iter()
                .collect();
            let body =
                json!({"error": failure.google_status.to_lowercase(), "error_description": "injected"});
            return json_response(status, &body, &headers);
        }
        let form: HashMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
        if form.get("grant_type").map(String::as_str) != Some(JWT_BEARER_GRANT) {
            return oauth_error("unsupported_grant_type", "Invalid grant_type");
        }
        let Some(assertion) = form.get("assertion") else {
            return oauth_error("invalid_request", "Missing required parameter: assertion");
        };
        if let Err((error, description)) = self.check_assertion(assertion) {
            return oauth_error(error, description);
        }
        let lifetime = *lock(&self.token_lifetime);
        let mut raw = [0u8; 24];
        fill_random(&mut raw);
        let token = format!("ya29.mock-{}", hex::encode(raw));
        lock(&self.access_tokens).insert(token.clone(), Instant::now() + lifetime);
        self.grants.fetch_add(1, Ordering::Relaxed);
        let body = json!({"access_token": token, "expires_in": lifetime.as_secs(), "token_type": "Bearer"});
        json_response(StatusCode::OK, &body, &[])
    }

    fn check_assertion(&self, assertion: &str) -> Result<(), (&'static str, &'static str)> {
        const BAD_SIGNATURE: (&str, &str) = ("invalid_grant", "Invalid JWT Signature.");
        // Checks the header's alg (RS256) and the signature.
        let claims: AssertionClaims = self.key.verify(assertion).ok_or(BAD_SIGNATURE)?;
        if claims.iss != self.config.client_email {
            return Err(("invalid_grant", "Invalid email or User ID"));
        }
        if claims.aud != self.audience {
            return Err(("invalid_grant", "Invalid JWT: Failed audience check."));
        }
        if !claims.scope.split(' ').any(|s| ACCEPTED_SCOPES.contains(&s)) {
            return Err((
                "invalid_scope",
                "Invalid OAuth scope or ID token audience provided.",
            ));
        }
        let now = unix_s();
        let short_lived = claims.exp > claims.iat && claims.exp - claims.iat <= 3600;
        if !short_lived || claims.exp <= now || claims.iat > now + 60 {
            return Err((
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.",
            ));
        }
        Ok(())
    }

    fn send(&self, project: &str, req: &MockRequest) -> Response<Full<Bytes>> {
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let message = body.get("message");
        let text = |key: &str| {
            message
                .and_then(|m| m.get(key))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let data = message
            .and_then(|m| m.get("data"))
            .and_then(Value::as_object)
            .map(|d| {
                d.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        let mut record = FcmRequest {
            project: project.to_owned(),
            token: text("token").unwrap_or_default(),
            headers: req.parts.headers.clone(),
            body: body.clone(),
            data,
            at: SystemTime::now(),
            status: 200,
            error: None,
        };
        let response = match self.check_send(project, &req.parts.headers, &body, &record.token) {
            Ok(()) => {
                let mut id = [0u8; 8];
                fill_random(&mut id);
                let name = format!("projects/{project}/messages/0:{}", hex::encode(id));
                json_response(StatusCode::OK, &json!({ "name": name }), &[])
            }
            Err((failure, message)) => {
                record.status = failure.status;
                record.error = Some(
                    failure
                        .error_code
                        .clone()
                        .unwrap_or_else(|| failure.google_status.clone()),
                );
                failure.response(message)
            }
        };
        self.recorder.record(record);
        response
    }

    fn check_send(
        &self,
        project: &str,
        headers: &HeaderMap,
        body: &Value,
        token: &str,
    ) -> Result<(), (FcmFailure, &'static str)> {
        if !self.authorized(headers) {
            return Err((
                FcmFailure::new(401, "UNAUTHENTICATED", None),
                "Request had invalid authentication credentials. Expected OAuth 2 access token.",
            ));
        }
        if project != self.config.project_id {
            return Err((
                FcmFailure::new(403, "PERMISSION_DENIED", None),
                "Permission 'cloudmessaging.messages.create' denied on resource.",
            ));
        }
        if let Some(failure) = self.faults.take() {
            return Err((failure, "injected failure"));
        }
        validate_send_body(body).map_err(|m| {
            let failure = if m == INVALID_TOKEN_MESSAGE {
                FcmFailure::invalid_token()
            } else {
                FcmFailure::invalid_argument()
            };
            (failure, m)
        })?;
        if lock(&self.dead).contains(token) {
            return Err((FcmFailure::unregistered(), "Requested entity was not found."));
        }
        Ok(())
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(token) = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        lock(&self.access_tokens)
            .get(token)
            .is_some_and(|expiry| Instant::now() < *expiry)
    }
}

#[derive(Deserialize)]
struct AssertionClaims {
    iss: String,
    aud: String,
    #[serde(default)]
    scope: String,
    iat: u64,
    exp: u64,
}

fn oauth_error(error: &str, description: &str) -> Response<Full<Bytes>> {
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({"error": error, "error_description": description}),
        &[],
    )
}

const MESSAGE_FIELDS: [&str; 10] = [
    "name",
    "data",
    "notification",
    "android",
    "webpush",
    "apns",
    "fcm_options",
    "token",
    "topic",
    "condition",
];
const ANDROID_FIELDS: [&str; 8] = [
    "collapse_key",
    "priority",
    "ttl",
    "restricted_package_name",
    "data",
    "notification",
    "fcm_options",
    "direct_boot_ok",
];

/// The parts of Google's request validation a push sender can get wrong: unknown fields,
/// target, data map shape and size, Android priority and TTL.
fn validate_send_body(body: &Value) -> Result<(), &'static str> {
    let top = body.as_object().ok_or("Invalid JSON payload received.")?;
    if top.keys().any(|k| k != "message" && k != "validate_only") {
        return Err("Invalid JSON payload received. Unknown name.");
    }
    let message = top
        .get("message")
        .and_then(Value::as_object)
        .ok_or("Message is required.")?;
    known_fields(message, &MESSAGE_FIELDS)?;
    let targets = ["token", "topic", "condition"]
        .iter()
        .filter(|k| message.contains_key(**k))
        .count();
    if targets != 1 {
        return Err("Exactly one of token, topic or condition must be specified.");
    }
    match message.get("token").and_then(Value::as_str) {
        Some(token) if !token.is_empty() => {}
        _ => return Err(INVALID_TOKEN_MESSAGE),
    }
    if let Some(data) = message.get("data") {
        validate_data(data)?;
    }
    if let Some(android) = message.get("android") {
        validate_android(android)?;
    }
    Ok(())
}

fn known_fields(object: &Map<String, Value>, allowed: &[&str]) -> Result<(), &'static str> {
    if object.keys().all(|k| allowed.contains(&k.as_str())) {
        Ok(())
    } else {
        Err("Invalid JSON payload received. Unknown name.")
    }
}

fn validate_data(data: &Value) -> Result<(), &'static str> {
    let data = data.as_object().ok_or("Invalid value at 'message.data'.")?;
    let mut size = 0;
    for (key, value) in data {
        let value = value
            .as_str()
            .ok_or("Invalid value at 'message.data': values must be strings.")?;
        let reserved = ["from", "notification", "message_type"].contains(&key.as_str())
            || key.starts_with("google.")
            || key.starts_with("gcm.");
        if reserved {
            return Err("Invalid data payload key: reserved word.");
        }
        size += key.len() + value.len();
    }
    if size > FCM_MAX_DATA {
        return Err("Android message is too big");
    }
    Ok(())
}

fn validate_android(android: &Value) -> Result<(), &'static str> {
    let android = android.as_object().ok_or("Invalid value at 'message.android'.")?;
    known_fields(android, &ANDROID_FIELDS)?;
    if let Some(priority) = android.get("priority")
        && !matches!(priority.as_str(), Some("HIGH" | "NORMAL"))
    {
        return Err("Invalid value at 'message.android.priority'.");
    }
    if let Some(ttl) = android.get("ttl") {
        let seconds = ttl
            .as_str()
            .and_then(parse_duration)
            .ok_or("Invalid value at 'message.android.ttl'.")?;
        if seconds > 28 * 24 * 3600 {
            return Err("Invalid value at 'message.android.ttl': longer than 4 weeks.");
        }
    }
    if let Some(key) = android.get("collapse_key")
        && !key.is_string()
    {
        return Err("Invalid value at 'message.android.collapse_key'.");
    }
    Ok(())
}

/// A protobuf JSON `Duration` (`"3600s"`, `"1.5s"`) as whole seconds.
fn parse_duration(text: &str) -> Option<u64> {
    let number = text.strip_suffix('s')?;
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || fraction.len() > 9 {
        return None;
    }
    whole.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assertion, client};

    const TIMEOUT: Duration = Duration::from_secs(10);
    const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

    async fn mock(transport: Transport) -> (ServiceAccount, MockFcm, reqwest::Client) {
        let mut account = ServiceAccount::generate("demo-project");
        let fcm = MockFcm::start(FcmMockConfig::new(&account, transport))
            .await
            .unwrap();
        account.token_uri = fcm.token_uri();
        let client = client(fcm.ca_pem());
        (account, fcm, client)
    }

    async fn post_form(client: &reqwest::Client, url: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let request = client
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send();
        let response = tokio::time::timeout(TIMEOUT, request).await.unwrap().unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn grant(account: &ServiceAccount, client: &reqwest::Client, jwt: &str) -> (u16, Value) {
        post_form(
            client,
            &account.token_uri,
            &[("grant_type", JWT_BEARER_GRANT), ("assertion", jwt)],
        )
        .await
    }

    fn good_assertion(account: &ServiceAccount) -> String {
        let now = unix_s();
        assertion(account, &account.token_uri, SCOPE, now, now + 3600)
    }

    async fn access_token(account: &ServiceAccount, client: &reqwest::Client) -> String {
        let (status, body) = grant(account, client, &good_assertion(account)).await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    fn message(token: &str) -> Value {
        json!({"message": {"token": token, "data": {"enc": "AAAA"},
               "android": {"priority": "HIGH", "ttl": "3600s"}}})
    }

    async fn send(
        fcm: &MockFcm,
        client: &reqwest::Client,
        project: &str,
        bearer: Option<&str>,
        body: &Value,
    ) -> (u16, HeaderMap, Value) {
        let mut request = client
            .post(format!("{}/v1/projects/{project}/messages:send", fcm.endpoint()))
            .json(body);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let response = tokio::time::timeout(TIMEOUT, request.send())
            .await
            .unwrap()
            .unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.json().await.unwrap_or(Value::Null))
    }

    fn error_code(body: &Value) -> &str {
        body["error"]["details"][0]["errorCode"].as_str().unwrap_or("")
    }

    #[tokio::test]
    async fn token_grant_then_send_over_tls_is_recorded() {
        let (account, fcm, client) = mock(Transport::Tls).await;
        let (status, body) = grant(&account, &client, &good_assertion(&account)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 3599);
        let token = body["access_token"].as_str().unwrap();
        let (status, _, body) = send(&fcm, &client, "demo-project", Some(token), &message("tok-1")).await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body["name"]
                .as_str()
                .unwrap()
                .starts_with("projects/demo-project/messages/")
        );
        let got = fcm.wait_for(1, TIMEOUT).await.unwrap();
        assert_eq!(got[0].token, "tok-1");
        assert_eq!(got[0].data["enc"], "AAAA");
        assert_eq!(got[0].body["message"]["android"]["priority"], "HIGH");
        assert_eq!((fcm.token_grants(), fcm.token_requests()), (1, 1));
    }

    #[tokio::test]
    async fn token_grant_works_over_h2c() {
        let (account, _fcm, client) = mock(Transport::H2c).await;
        assert!(account.token_uri.starts_with("http://127.0.0.1:"));
        access_token(&account, &client).await;
    }

    #[tokio::test]
    async fn bad_assertions_are_refused() {
        let (account, fcm, client) = mock(Transport::H2c).await;
        let now = unix_s();
        let good = good_assertion(&account);
        let tampered = format!(
            "{}{}",
            &good[..good.len() - 4],
            if good.ends_with("AAAA") { "BBBB" } else { "AAAA" }
        );
        let mut stranger = account.clone();
        stranger.client_email = "someone@else.iam.gserviceaccount.com".into();
        let cases = [
            (tampered, "invalid_grant"),
            (
                assertion(
                    &account,
                    "https://oauth2.googleapis.com/token",
                    SCOPE,
                    now,
                    now + 60,
                ),
                "invalid_grant",
            ),
            (
                assertion(
                    &account,
                    &account.token_uri,
                    "https://example.com/other",
                    now,
                    now + 60,
                ),
                "invalid_scope",
            ),
            (
                assertion(&account, &account.token_uri, SCOPE, now, now + 3700),
                "invalid_grant",
            ),
            (
                assertion(&account, &account.token_uri, SCOPE, now - 7200, now - 3600),
                "invalid_grant",
            ),
            (
                assertion(&stranger, &account.token_uri, SCOPE, now, now + 60),
                "invalid_grant",
            ),
        ];
        for (jwt, expected) in cases {
            let (status, body) = grant(&account, &client, &jwt).await;
            assert_eq!((status, body["error"].as_str().unwrap()), (400, expected));
        }
        let (status, body) = post_form(
            &client,
            &account.token_uri,
            &[("grant_type", "password"), ("assertion", &good)],
        )
        .await;
        assert_eq!(
            (status, body["error"].as_str().unwrap()),
            (400, "unsupported_grant_type")
        );
        assert_eq!(fcm.token_grants(), 0);
        let cloud_platform = "https://www.googleapis.com/auth/cloud-platform";
        let jwt = assertion(&account, &account.token_uri, cloud_platform, now, now + 3600);
        assert_eq!(grant(&account, &client, &jwt).await.0, 200);
    }

    #[tokio::test]
    async fn sends_need_a_live_issued_token_for_the_right_project() {
        let (account, fcm, client) = mock(Transport::H2c).await;
        let token = access_token(&account, &client).await;
        let unauthenticated = |(status, _, body): (u16, HeaderMap, Value)| {
            assert_eq!(
                (status, body["error"]["status"].as_str().unwrap()),
                (401, "UNAUTHENTICATED")
            );
        };
        unauthenticated(send(&fcm, &client, "demo-project", None, &message("t")).await);
        unauthenticated(send(&fcm, &client, "demo-project", Some("ya29.forged"), &message("t")).await);
        let (status, _, body) = send(&fcm, &client, "other-project", Some(&token), &message("t")).await;
        assert_eq!(
            (status, body["error"]["status"].as_str().unwrap()),
            (403, "PERMISSION_DENIED")
        );
        fcm.revoke_access_tokens();
        unauthenticated(send(&fcm, &client, "demo-project", Some(&token), &message("t")).await);
        fcm.set_token_lifetime(Duration::ZERO);
        let expired = access_token(&account, &client).await;
        unauthenticated(send(&fcm, &client, "demo-project", Some(&expired), &message("t")).await);
    }

    #[tokio::test]
    async fn malformed_messages_are_invalid_arguments() {
        let (account, fcm, client) = mock(Transport::H2c).await;
        let token = access_token(&account, &client).await;
        let too_big = "A".repeat(FCM_MAX_DATA - 3 + 1);
        let fits = "A".repeat(FCM_MAX_DATA - 3);
        let cases = [
            json!({"message": {"data": {"enc": "x"}}}),
            json!({"message": {"token": "", "data": {"enc": "x"}}}),
            json!({"message": {"token": "t", "topic": "news"}}),
            json!({"message": {"token": "t", "data": {"enc": 5}}}),
            json!({"message": {"token": "t", "data": {"enc": too_big}}}),
            json!({"message": {"token": "t", "data": {"google.x": "y"}}}),
            json!({"message": {"token": "t", "android": {"priority": "URGENT"}}}),
            json!({"message": {"token": "t", "android": {"ttl": "3600"}}}),
            json!({"message": {"token": "t", "android": {"ttl": "9999999s"}}}),
            json!({"message": {"token": "t", "surprise": 1}}),
            json!({"message": {"token": "t"}, "extra": 1}),
        ];
        for body in cases {
            let (status, _, answer) = send(&fcm, &client, "demo-project", Some(&token), &body).await;
            assert_eq!((status, error_code(&answer)), (400, "INVALID_ARGUMENT"), "{body}");
        }
        let ok = json!({"message": {"token": "t", "data": {"enc": fits}, "android": {"ttl": "1.5s"}}});
        assert_eq!(
            send(&fcm, &client, "demo-project", Some(&token), &ok).await.0,
            200
        );
    }

    #[tokio::test]
    async fn dead_tokens_and_injected_failures_answer_like_google() {
        let (account, fcm, client) = mock(Transport::H2c).await;
        let token = access_token(&account, &client).await;
        fcm.mark_dead("dead");
        let (status, _, body) = send(&fcm, &client, "demo-project", Some(&token), &message("dead")).await;
        assert_eq!((status, error_code(&body)), (404, "UNREGISTERED"));
        assert_eq!(body["error"]["status"], "NOT_FOUND");
        assert_eq!(body["error"]["details"][0]["@type"], FCM_ERROR_TYPE);

        fcm.fail_next(1, FcmFailure::quota_exceeded().retry_after(30));
        fcm.fail_next(1, FcmFailure::unavailable().retry_after(2));
        let (status, headers, body) = send(&fcm, &client, "demo-project", Some(&token), &message("t")).await;
        assert_eq!(
            (
                status,
                error_code(&body),
                headers["retry-after"].to_str().unwrap()
            ),
            (429, "QUOTA_EXCEEDED", "30")
        );
        let (status, headers, body) = send(&fcm, &client, "demo-project", Some(&token), &message("t")).await;
        assert_eq!(
            (
                status,
                error_code(&body),
                headers["retry-after"].to_str().unwrap()
            ),
            (503, "UNAVAILABLE", "2")
        );
        assert_eq!(
            send(&fcm, &client, "demo-project", Some(&token), &message("t"))
                .await
                .0,
            200
        );
        assert_eq!(fcm.delivered().len(), 1);
        assert_eq!(fcm.attempts().len(), 4);
    }

    #[tokio::test]
    async fn token_endpoint_failures_can_be_injected() {
        let (account, fcm, client) = mock(Transport::H2c).await;
        fcm.fail_next_token_requests(1, FcmFailure::unavailable().retry_after(1));
        let (status, _) = grant(&account, &client, &good_assertion(&account)).await;
        assert_eq!(status, 503);
        access_token(&account, &client).await;
        assert_eq!((fcm.token_requests(), fcm.token_grants()), (2, 1));
    }

    #[test]
    fn durations_parse_like_protobuf_json() {
        assert_eq!(parse_duration("3600s"), Some(3600));
        assert_eq!(parse_duration("0.5s"), Some(0));
        assert_eq!(parse_duration("3600"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration("1.0000000001s"), None);
    }

    #[test]
    fn service_account_json_has_googles_fields() {
        let account = ServiceAccount::generate("p1");
        let json: Value = serde_json::from_str(&account.to_json()).unwrap();
        assert_eq!(json["type"], "service_account");
        assert_eq!(json["project_id"], "p1");
        assert!(
            json["private_key"]
                .as_str()
                .unwrap()
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
        let dir = tempfile::tempdir().unwrap();
        let path = account.write_json(dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(path).unwrap(), account.to_json());
    }
}
