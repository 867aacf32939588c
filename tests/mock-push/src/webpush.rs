//! A mock Web Push service (RFC 8030) that is also its subscribers' user agent: it checks
//! requests the way Mozilla's, Google's and Apple's push services do (VAPID, TTL, Urgency,
//! Topic, `aes128gcm`, the 4096-byte limit) and decrypts every message with the
//! subscriber's private key (RFC 8291), so a test sees the plaintext a phone would.
//!
//! The decryption is RustCrypto's (p256, hkdf, aes-gcm): independent of the relay's
//! encryption, which is ring's.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use aes_gcm::aead::{Aead, KeyInit};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::Full;
use p256::ecdsa::signature::Verifier;
use serde_json::{Value, json};

use crate::apns::unix_s;
use crate::record::{Attempt, Faults, Recorder, WaitTimeout, fill_random, lock, uuid_v4};
use crate::server::{MockRequest, Server, StartError, Transport, json_response};
use crate::tls::TlsIdentity;

/// The largest body the mock accepts, like the real services.
pub const WEBPUSH_MAX_BODY: usize = 4096;
/// The longest VAPID token lifetime accepted (RFC 8292 section 2).
const MAX_VAPID_LIFETIME: u64 = 24 * 3600;

/// How the mock Web Push service is set up.
#[derive(Clone, Debug)]
pub struct WebPushMockConfig {
    /// TLS (ALPN h2 and http/1.1) or cleartext (HTTP/1.1 and h2c).
    pub transport: Transport,
    /// Where to listen; port 0 picks a free port.
    pub bind: SocketAddr,
    /// The certificate to serve over TLS; `None` generates one.
    pub tls: Option<Arc<TlsIdentity>>,
    /// The host name senders reach the mock by (e.g. a compose service name): it goes into
    /// every subscription's endpoint. `None`: the bound IP address.
    pub public_host: Option<String>,
    /// Also answer `POST /subscribe` with a new subscription (see
    /// [`MockWebPush::subscribe`]), for demos whose subscriber is another process. Off by
    /// default: a real push service has no such resource, its user agent subscribes over
    /// a protocol of its own.
    pub serve_subscribe: bool,
}

impl WebPushMockConfig {
    /// On 127.0.0.1, port 0.
    pub fn new(transport: Transport) -> Self {
        Self {
            transport,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: None,
            public_host: None,
            serve_subscribe: false,
        }
    }
}

/// A subscriber's keys: what a browser or UnifiedPush app generates.
#[derive(Clone)]
pub struct Subscriber {
    secret: p256::SecretKey,
    /// The public key, uncompressed (`p256dh`).
    pub p256dh: [u8; 65],
    /// The authentication secret (`auth`).
    pub auth: [u8; 16],
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber").finish_non_exhaustive()
    }
}

impl Subscriber {
    /// Fresh keys.
    pub fn generate() -> Self {
        let mut raw = [0u8; 32];
        loop {
            fill_random(&mut raw);
            if let Ok(secret) = p256::SecretKey::from_slice(&raw) {
                return Self::from_secret(secret, random_auth());
            }
        }
    }

    /// The subscriber with this private scalar and auth secret (test vectors).
    pub fn from_parts(private: &[u8; 32], auth: [u8; 16]) -> Option<Self> {
        Some(Self::from_secret(
            p256::SecretKey::from_slice(private).ok()?,
            auth,
        ))
    }

    fn from_secret(secret: p256::SecretKey, auth: [u8; 16]) -> Self {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        let point = secret.public_key().to_encoded_point(false);
        let mut p256dh = [0u8; 65];
        p256dh.copy_from_slice(point.as_bytes());
        Self { secret, p256dh, auth }
    }

    /// The private scalar (for an independent decryption, e.g. Python's `http_ece`).
    pub fn private_key(&self) -> [u8; 32] {
        self.secret.to_bytes().into()
    }

    /// Decrypts an `aes128gcm` body (RFC 8188 records, RFC 8291 keys).
    pub fn decrypt(&self, body: &[u8]) -> Result<Vec<u8>, EceError> {
        decrypt(&self.secret, &self.p256dh, &self.auth, body)
    }
}

fn random_auth() -> [u8; 16] {
    let mut auth = [0u8; 16];
    fill_random(&mut auth);
    auth
}

/// Why a body did not decrypt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EceError {
    /// Shorter than the header, or a key id that is not a P-256 point.
    #[error("malformed aes128gcm header: {0}")]
    Header(&'static str),
    /// A record did not authenticate.
    #[error("record {0} does not decrypt")]
    Decrypt(usize),
    /// A record's padding delimiter is missing or wrong.
    #[error("record {0} has bad padding")]
    Padding(usize),
}

/// RFC 8291 decryption with the subscriber's private key, every record of RFC 8188.
fn decrypt(
    secret: &p256::SecretKey,
    ua_public: &[u8; 65],
    auth: &[u8; 16],
    body: &[u8],
) -> Result<Vec<u8>, EceError> {
    use hkdf::Hkdf;
    use sha2::Sha256;
    if body.len() < 21 {
        return Err(EceError::Header("shorter than 21 bytes"));
    }
    let salt = &body[..16];
    let rs = u32::from_be_bytes([body[16], body[17], body[18], body[19]]) as usize;
    let idlen = body[20] as usize;
    if rs < 18 {
        return Err(EceError::Header("record size below 18"));
    }
    let keyid = body
        .get(21..21 + idlen)
        .ok_or(EceError::Header("key id cut short"))?;
    let as_public = p256::PublicKey::from_sec1_bytes(keyid)
        .map_err(|_| EceError::Header("key id is not a P-256 point"))?;
    let shared = p256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), as_public.as_affine());
    let mut key_info = b"WebPush: info\0".to_vec();
    key_info.extend_from_slice(ua_public);
    key_info.extend_from_slice(keyid);
    let mut ikm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(auth), &shared.raw_secret_bytes()[..])
        .expand(&key_info, &mut ikm)
        .map_err(|_| EceError::Header("hkdf"))?;
    let prk = Hkdf::<Sha256>::new(Some(salt), &ikm);
    let mut cek = [0u8; 16];
    let mut base_nonce = [0u8; 12];
    prk.expand(b"Content-Encoding: aes128gcm\0", &mut cek)
        .map_err(|_| EceError::Header("hkdf"))?;
    prk.expand(b"Content-Encoding: nonce\0", &mut base_nonce)
        .map_err(|_| EceError::Header("hkdf"))?;
    let cipher = aes_gcm::Aes128Gcm::new(&cek.into());
    let records: Vec<&[u8]> = body[21 + idlen..].chunks(rs).collect();
    if records.is_empty() {
        return Err(EceError::Header("no record"));
    }
    let mut out = Vec::new();
    for (seq, record) in records.iter().enumerate() {
        let mut nonce = base_nonce;
        for (i, b) in (seq as u64).to_be_bytes().iter().enumerate() {
            nonce[4 + i] ^= b;
        }
        let plain = cipher
            .decrypt(&nonce.into(), *record)
            .map_err(|_| EceError::Decrypt(seq))?;
        let last = seq + 1 == records.len();
        let end = plain
            .iter()
            .rposition(|&b| b != 0)
            .ok_or(EceError::Padding(seq))?;
        let want = if last { 2 } else { 1 };
        if plain[end] != want {
            return Err(EceError::Padding(seq));
        }
        out.extend_from_slice(&plain[..end]);
    }
    Ok(out)
}

/// A subscription the mock issued: where to push and for whom.
#[derive(Clone, Debug)]
pub struct WebPushSubscription {
    /// The path id in the endpoint.
    pub id: String,
    /// The push resource URL.
    pub endpoint: String,
    /// The subscriber's keys.
    pub subscriber: Subscriber,
}

/// One request to a push resource and what the mock answered.
#[derive(Clone, Debug)]
pub struct WebPushRequest {
    /// The subscription id in the path.
    pub subscription: String,
    /// The request headers as received.
    pub headers: HeaderMap,
    /// The body's length.
    pub body_len: usize,
    /// The body as received (the `aes128gcm` ciphertext).
    pub body: Bytes,
    /// The decrypted message, when it decrypted.
    pub plaintext: Option<Vec<u8>>,
    /// `TTL`, when valid.
    pub ttl: Option<u64>,
    /// `Urgency`, if sent.
    pub urgency: Option<String>,
    /// `Topic`, if sent.
    pub topic: Option<String>,
    /// The VAPID token's `sub`, when it verified.
    pub vapid_subject: Option<String>,
    /// When it arrived.
    pub at: SystemTime,
    /// The HTTP status answered.
    pub status: u16,
    /// Why it was refused, if it was.
    pub error: Option<String>,
}

impl Attempt for WebPushRequest {
    fn delivered(&self) -> bool {
        self.status == 201
    }
}

/// An answer the mock is told to give.
#[derive(Clone, Debug)]
pub struct WebPushFailure {
    /// HTTP status.
    pub status: u16,
    /// `Retry-After` seconds.
    pub retry_after: Option<u64>,
    /// `Location`, for a redirect.
    pub location: Option<String>,
}

impl WebPushFailure {
    /// A bare `status`.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            retry_after: None,
            location: None,
        }
    }

    /// 503 Service Unavailable.
    pub fn unavailable() -> Self {
        Self::status(503)
    }

    /// 429 Too Many Requests with `Retry-After`.
    pub fn too_many(retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::status(429)
        }
    }

    /// 413 Payload Too Large.
    pub fn too_large() -> Self {
        Self::status(413)
    }

    /// 307 Temporary Redirect to `location`.
    pub fn redirect(location: &str) -> Self {
        Self {
            location: Some(location.to_owned()),
            ..Self::status(307)
        }
    }

    fn response(&self) -> Response<Full<Bytes>> {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut headers = Vec::new();
        if let Some(s) = self.retry_after {
            headers.push(("retry-after", s.to_string()));
        }
        if let Some(l) = &self.location {
            headers.push(("location", l.clone()));
        }
        error_response(status, "injected", &headers)
    }
}

/// A refusal: the answer and why, for the record.
type Refused = Box<(Response<Full<Bytes>>, String)>;

struct Sub {
    /// The keys, when this mock is also the subscriber's user agent; `None` when they are
    /// elsewhere ([`MockWebPush::subscribe_elsewhere`]), as for a real push service.
    subscriber: Option<Subscriber>,
    vapid_key: Option<[u8; 65]>,
    gone: Option<u16>,
}

struct WebPushState {
    origin: String,
    base: String,
    serve_subscribe: bool,
    /// `Authorization` values already verified, with their `sub` and `exp`: senders reuse
    /// one token per origin for hours, as RFC 8292 intends, so one check per token is enough.
    verified: std::sync::Mutex<HashMap<(String, String), (String, u64)>>,
    subs: std::sync::Mutex<HashMap<String, Sub>>,
    requests: AtomicU64,
    recorder: Recorder<WebPushRequest>,
    faults: Faults<WebPushFailure>,
}

/// A running mock Web Push service. Dropping it stops it.
pub struct MockWebPush {
    server: Server,
    state: Arc<WebPushState>,
    tls: Option<Arc<TlsIdentity>>,
}

impl std::fmt::Debug for MockWebPush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockWebPush")
            .field("base", &self.state.base)
            .finish()
    }
}

impl MockWebPush {
    /// Starts listening.
    pub async fn start(config: WebPushMockConfig) -> Result<Self, StartError> {
        let tls = match (config.transport, &config.tls) {
            (Transport::Tls, Some(identity)) => Some(identity.clone()),
            (Transport::Tls, None) => Some(Arc::new(TlsIdentity::generate(&[])?)),
            (Transport::H2c, _) => None,
        };
        let cell: Arc<std::sync::OnceLock<Arc<WebPushState>>> = Arc::new(std::sync::OnceLock::new());
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
        let server = Server::start(config.bind, config.transport, tls.as_deref(), false, handler).await?;
        let base = match &config.public_host {
            Some(host) => format!("{}://{host}:{}", server.scheme(), server.addr().port()),
            None => server.base_url(),
        };
        let state = Arc::new(WebPushState {
            origin: base.clone(),
            base,
            serve_subscribe: config.serve_subscribe,
            verified: Default::default(),
            subs: Default::default(),
            requests: AtomicU64::new(0),
            recorder: Recorder::new(),
            faults: Faults::new(),
        });
        let _ = cell.set(state.clone());
        Ok(Self { server, state, tls })
    }

    /// The service's base URL.
    pub fn base_url(&self) -> String {
        self.state.base.clone()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The CA certificate to trust, when serving TLS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.tls.as_deref().map(TlsIdentity::ca_pem)
    }

    /// A new subscription with fresh subscriber keys. With `vapid_key`, only pushes signed
    /// by that key are accepted (the `applicationServerKey` the subscriber gave).
    ///
    /// With [`WebPushMockConfig::serve_subscribe`], another process gets the same with
    /// `POST /subscribe`: an optional JSON body `{"applicationServerKey": "<base64url>"}`
    /// restricts the subscription to that VAPID key, and the answer (201) is the W3C
    /// `PushSubscription` JSON, `{"endpoint", "expirationTime", "keys": {"p256dh",
    /// "auth"}}`. The private key stays in the mock, which decrypts every push for it.
    pub fn subscribe(&self, vapid_key: Option<[u8; 65]>) -> WebPushSubscription {
        self.state.subscribe(vapid_key)
    }

    /// A new push resource for a subscriber whose keys the mock does not know (a
    /// UnifiedPush app that made its own): `(id, endpoint)`. Pushes to it are checked like
    /// any other (VAPID, headers, size) but not decrypted: [`WebPushRequest::body`] holds
    /// the ciphertext for the subscriber to open.
    pub fn subscribe_elsewhere(&self, vapid_key: Option<[u8; 65]>) -> (String, String) {
        self.state.subscribe_elsewhere(vapid_key)
    }

    /// From now on the subscription answers `status` (404 or 410): unsubscribed.
    pub fn mark_gone(&self, id: &str, status: u16) {
        if let Some(sub) = lock(&self.state.subs).get_mut(id) {
            sub.gone = Some(status);
        }
    }

    /// Every push request so far, answered or refused.
    pub fn attempts(&self) -> Vec<WebPushRequest> {
        self.state.recorder.attempts()
    }

    /// The pushes answered 201.
    pub fn delivered(&self) -> Vec<WebPushRequest> {
        self.state.recorder.delivered()
    }

    /// Waits until at least `n` pushes were answered 201, and returns them.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Result<Vec<WebPushRequest>, WaitTimeout> {
        self.state.recorder.wait_for(n, timeout).await
    }

    /// Forgets what was recorded (counters stay).
    pub fn clear(&self) {
        self.state.recorder.clear();
    }

    /// The next `n` authenticated pushes get `failure`.
    pub fn fail_next(&self, n: usize, failure: WebPushFailure) {
        self.state.faults.fail_next(n, failure);
    }

    /// Every authenticated push gets `failure` until called with `None`.
    pub fn set_outage(&self, failure: Option<WebPushFailure>) {
        self.state.faults.set_outage(failure);
    }

    /// Holds every request this long before answering.
    pub fn set_delay(&self, delay: Option<Duration>) {
        self.state.faults.set_delay(delay);
    }

    /// Requests received on any path (0: nothing ever reached the mock).
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// Stops the server and closes every connection.
    pub async fn shutdown(mut self) {
        self.server.shutdown().await;
    }
}

impl WebPushState {
    fn subscribe(&self, vapid_key: Option<[u8; 65]>) -> WebPushSubscription {
        let mut raw = [0u8; 24];
        fill_random(&mut raw);
        let id = URL_SAFE_NO_PAD.encode(raw);
        let subscriber = Subscriber::generate();
        lock(&self.subs).insert(
            id.clone(),
            Sub {
                subscriber: Some(subscriber.clone()),
                vapid_key,
                gone: None,
            },
        );
        WebPushSubscription {
            endpoint: format!("{}/push/{id}", self.base),
            id,
            subscriber,
        }
    }

    fn subscribe_elsewhere(&self, vapid_key: Option<[u8; 65]>) -> (String, String) {
        let mut raw = [0u8; 24];
        fill_random(&mut raw);
        let id = URL_SAFE_NO_PAD.encode(raw);
        lock(&self.subs).insert(
            id.clone(),
            Sub {
                subscriber: None,
                vapid_key,
                gone: None,
            },
        );
        let endpoint = format!("{}/push/{id}", self.base);
        (id, endpoint)
    }

    /// `POST /subscribe`: a subscription for a subscriber outside the process.
    fn subscribe_request(&self, body: &[u8]) -> Response<Full<Bytes>> {
        let vapid_key = if body.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            let key = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v.get("applicationServerKey")?.as_str().map(str::to_owned))
                .and_then(|k| URL_SAFE_NO_PAD.decode(k.trim_end_matches('=')).ok())
                .and_then(|k| <[u8; 65]>::try_from(k).ok())
                .filter(|k| p256::PublicKey::from_sec1_bytes(k).is_ok());
            match key {
                Some(key) => Some(key),
                None => {
                    return error_response(
                        StatusCode::BAD_REQUEST,
                        "body must be empty or {\"applicationServerKey\": \"<base64url P-256 public key, uncompressed>\"}",
                        &[],
                    );
                }
            }
        };
        let sub = self.subscribe(vapid_key);
        json_response(
            StatusCode::CREATED,
            &json!({
                "endpoint": sub.endpoint,
                "expirationTime": null,
                "keys": {
                    "p256dh": URL_SAFE_NO_PAD.encode(sub.subscriber.p256dh),
                    "auth": URL_SAFE_NO_PAD.encode(sub.subscriber.auth),
                },
            }),
            &[],
        )
    }

    async fn handle(&self, req: MockRequest) -> Response<Full<Bytes>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if let Some(delay) = self.faults.delay() {
            tokio::time::sleep(delay).await;
        }
        if self.serve_subscribe && req.parts.uri.path() == "/subscribe" && req.parts.method == Method::POST {
            return self.subscribe_request(&req.body);
        }
        let id = req
            .parts
            .uri
            .path()
            .strip_prefix("/push/")
            .filter(|id| !id.is_empty() && !id.contains('/'))
            .map(str::to_owned);
        match (id, &req.parts.method) {
            (Some(id), &Method::POST) => self.push(id, &req),
            _ => error_response(StatusCode::NOT_FOUND, "no such push resource", &[]),
        }
    }

    fn push(&self, id: String, req: &MockRequest) -> Response<Full<Bytes>> {
        let header = |name: &str| {
            req.parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let mut record = WebPushRequest {
            subscription: id.clone(),
            headers: req.parts.headers.clone(),
            body_len: req.body.len(),
            body: req.body.clone(),
            plaintext: None,
            ttl: header("ttl").and_then(|t| t.trim().parse().ok()),
            urgency: header("urgency"),
            topic: header("topic"),
            vapid_subject: None,
            at: SystemTime::now(),
            status: 201,
            error: None,
        };
        let response = match self.check(&id, req, &mut record) {
            Ok(()) => {
                let location = format!("{}/message/{}", self.base, uuid_v4());
                let mut r = crate::server::plain(StatusCode::CREATED);
                if let Ok(v) = http::HeaderValue::from_str(&location) {
                    r.headers_mut().insert(http::header::LOCATION, v);
                }
                r
            }
            Err(refused) => {
                let (response, why) = *refused;
                record.status = response.status().as_u16();
                record.error = Some(why);
                response
            }
        };
        self.recorder.record(record);
        response
    }

    fn check(&self, id: &str, req: &MockRequest, record: &mut WebPushRequest) -> Result<(), Refused> {
        let refuse =
            |status: StatusCode, why: &str| Err(Box::new((error_response(status, why, &[]), why.to_owned())));
        let (subscriber, vapid_key, gone) = match lock(&self.subs).get(id) {
            Some(sub) => (sub.subscriber.clone(), sub.vapid_key, sub.gone),
            None => return refuse(StatusCode::NOT_FOUND, "no such subscription"),
        };
        match self.verify_vapid(&req.parts.headers, &self.origin_of(req), vapid_key) {
            Ok(sub) => record.vapid_subject = Some(sub),
            Err((status, why)) => return refuse(status, why),
        }
        if let Some(failure) = self.faults.take() {
            return Err(Box::new((
                failure.response(),
                format!("injected {}", failure.status),
            )));
        }
        if let Some(status) = gone {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::GONE);
            return refuse(status, "subscription expired or unsubscribed");
        }
        if record.ttl.is_none() {
            return refuse(StatusCode::BAD_REQUEST, "missing or invalid TTL header");
        }
        if let Some(u) = &record.urgency
            && !["very-low", "low", "normal", "high"].contains(&u.as_str())
        {
            return refuse(StatusCode::BAD_REQUEST, "invalid Urgency header");
        }
        if let Some(t) = &record.topic {
            let ok = !t.is_empty()
                && t.len() <= 32
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                return refuse(StatusCode::BAD_REQUEST, "invalid Topic header");
            }
        }
        if req.body.len() > WEBPUSH_MAX_BODY {
            return refuse(StatusCode::PAYLOAD_TOO_LARGE, "payload larger than 4096 bytes");
        }
        if req.body.is_empty() {
            return Ok(());
        }
        let encoding = req
            .parts
            .headers
            .get(http::header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok());
        if encoding != Some("aes128gcm") {
            return refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Encoding must be aes128gcm",
            );
        }
        if req.parts.headers.contains_key("encryption") || req.parts.headers.contains_key("crypto-key") {
            return refuse(
                StatusCode::BAD_REQUEST,
                "Encryption and Crypto-Key headers belong to the old aesgcm scheme, not aes128gcm",
            );
        }
        // Without the keys the mock is what a real push service is: it forwards ciphertext.
        let Some(subscriber) = subscriber else {
            return Ok(());
        };
        match subscriber.decrypt(&req.body) {
            Ok(plain) => record.plaintext = Some(plain),
            Err(e) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    &format!("the subscriber cannot decrypt: {e}"),
                );
            }
        }
        Ok(())
    }

    /// `Authorization: vapid t=<jwt>, k=<key>`: an ES256 JWT for this origin, valid at
    /// most 24 hours, with a contact, signed by `k` (the subscription's key, if it has one).
    /// The origin the request was sent to (`:authority` or `Host`), which the token's
    /// `aud` must name.
    fn origin_of(&self, req: &MockRequest) -> String {
        let authority = req
            .parts
            .uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| {
                req.parts
                    .headers
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned)
            });
        match (authority, self.origin.split_once("://")) {
            (Some(authority), Some((scheme, _))) => format!("{scheme}://{authority}"),
            _ => self.origin.clone(),
        }
    }

    fn verify_vapid(
        &self,
        headers: &HeaderMap,
        origin: &str,
        restricted: Option<[u8; 65]>,
    ) -> Result<String, (StatusCode, &'static str)> {
        let value = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or((StatusCode::UNAUTHORIZED, "missing Authorization header"))?;
        let key = (value.to_owned(), origin.to_owned());
        let known = lock(&self.verified).get(&key).cloned();
        let (sub, exp) = match known {
            Some(known) => known,
            None => {
                let checked = verify_token(value, origin)?;
                let mut verified = lock(&self.verified);
                if verified.len() >= 1024 {
                    verified.clear();
                }
                verified.insert(key, checked.clone());
                checked
            }
        };
        if exp <= unix_s() {
            return Err((
                StatusCode::UNAUTHORIZED,
                "JWT exp must be within the next 24 hours",
            ));
        }
        if let Some(want) = restricted {
            let k = value.rsplit_once("k=").map(|(_, k)| k.trim()).unwrap_or_default();
            if URL_SAFE_NO_PAD.decode(k).ok().as_deref() != Some(want.as_slice()) {
                return Err((
                    StatusCode::FORBIDDEN,
                    "k is not the key this subscription was made with",
                ));
            }
        }
        Ok(sub)
    }
}

/// Verifies `vapid t=<jwt>, k=<key>` for `origin`: an ES256 JWT signed by `k`, naming the
/// origin, valid at most 24 hours, with a contact. Returns its `sub` and `exp`.
fn verify_token(value: &str, origin: &str) -> Result<(String, u64), (StatusCode, &'static str)> {
    const UNAUTHORIZED: StatusCode = StatusCode::UNAUTHORIZED;
    let params = value
        .strip_prefix("vapid ")
        .ok_or((UNAUTHORIZED, "Authorization scheme must be vapid"))?;
    let mut t = None;
    let mut k = None;
    for part in params.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = Some(v.trim()),
            Some(("k", v)) => k = Some(v.trim()),
            _ => return Err((UNAUTHORIZED, "malformed vapid parameters")),
        }
    }
    let (t, k) = t.zip(k).ok_or((UNAUTHORIZED, "vapid needs t= and k="))?;
    let key = URL_SAFE_NO_PAD
        .decode(k)
        .map_err(|_| (UNAUTHORIZED, "k is not base64url"))?;
    let verifier = p256::ecdsa::VerifyingKey::from_sec1_bytes(&key)
        .map_err(|_| (UNAUTHORIZED, "k is not a P-256 key"))?;
    let mut parts = t.split('.');
    let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err((UNAUTHORIZED, "t is not a JWT"));
    };
    let decode = |p: &str| {
        URL_SAFE_NO_PAD
            .decode(p)
            .map_err(|_| (UNAUTHORIZED, "JWT part is not base64url"))
    };
    let header: Value =
        serde_json::from_slice(&decode(h)?).map_err(|_| (UNAUTHORIZED, "JWT header is not JSON"))?;
    if header.get("alg").and_then(Value::as_str) != Some("ES256") {
        return Err((UNAUTHORIZED, "JWT alg must be ES256"));
    }
    let signature =
        p256::ecdsa::Signature::from_slice(&decode(s)?).map_err(|_| (UNAUTHORIZED, "bad JWT signature"))?;
    verifier
        .verify(format!("{h}.{c}").as_bytes(), &signature)
        .map_err(|_| (UNAUTHORIZED, "JWT signature does not verify with k"))?;
    let claims: Value =
        serde_json::from_slice(&decode(c)?).map_err(|_| (UNAUTHORIZED, "JWT claims are not JSON"))?;
    if claims.get("aud").and_then(Value::as_str) != Some(origin) {
        return Err((UNAUTHORIZED, "JWT aud is not this push service's origin"));
    }
    let exp = claims
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or((UNAUTHORIZED, "JWT has no exp"))?;
    let now = unix_s();
    if exp <= now || exp > now + MAX_VAPID_LIFETIME {
        return Err((UNAUTHORIZED, "JWT exp must be within the next 24 hours"));
    }
    let sub = claims.get("sub").and_then(Value::as_str).unwrap_or_default();
    if !(sub.starts_with("mailto:") || sub.starts_with("https://")) {
        return Err((UNAUTHORIZED, "JWT sub must be a mailto: or https: contact"));
    }
    Ok((sub.to_owned(), exp))
}

/// Mozilla autopush's error shape.
fn error_response(
    status: StatusCode,
    message: &str,
    headers: &[(&'static str, String)],
) -> Response<Full<Bytes>> {
    let body = json!({
        "code": status.as_u16(),
        "errno": 999,
        "error": status.canonical_reason().unwrap_or(""),
        "message": message,
    });
    json_response(status, &body, headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(s).unwrap()
    }

    /// RFC 8291 appendix A, decrypted with the subscriber's private key.
    #[test]
    fn decrypts_the_rfc_8291_example() {
        let private: [u8; 32] = b64("q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94")
            .try_into()
            .unwrap();
        let auth: [u8; 16] = b64("BTBZMqHH6r4Tts7J_aSIgg").try_into().unwrap();
        let sub = Subscriber::from_parts(&private, auth).unwrap();
        assert_eq!(
            sub.p256dh.to_vec(),
            b64("BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4")
        );
        let body = b64(
            "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN",
        );
        assert_eq!(
            sub.decrypt(&body).unwrap(),
            b"When I grow up, I want to be a watermelon"
        );
        let mut tampered = body.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(sub.decrypt(&tampered), Err(EceError::Decrypt(0)));
        assert!(Subscriber::generate().decrypt(&body).is_err());
        assert_eq!(
            sub.decrypt(&body[..10]),
            Err(EceError::Header("shorter than 21 bytes"))
        );
    }
}
