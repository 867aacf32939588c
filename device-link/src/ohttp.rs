//! Oblivious HTTP (RFC 9458) under the relay client: each gRPC call is written as a Binary
//! HTTP request (RFC 9292), encapsulated to the relay's OHTTP gateway key and POSTed to an
//! independent OHTTP relay, which forwards it to the gateway. The OHTTP relay sees this
//! device's address but only ciphertext; the tidings relay sees the call but only the
//! OHTTP relay's address (DESIGN.md "Oblivious HTTP"; docs/security.md).
//!
//! [`OhttpTransport`] is a tower `Service<http::Request<tonic::body::Body>>`, so tonic's
//! generated clients run over it unchanged; [`crate::client::RelayClient`] uses it when
//! [`ClientOptions::ohttp`](crate::client::ClientOptions) is set, with the same calls,
//! retries and errors as over a direct connection.
//!
//! Keys. The gateway's key configuration is pinned: given in [`OhttpSettings::key_config`]
//! (an app ships it, or kept from an earlier run through
//! [`crate::client::RelayClient::ohttp_key_config`]), or else fetched from the gateway once
//! (`GET /.well-known/ohttp-gateway` at the relay endpoint, directly: that one request
//! shows this device's address to the relay, with nothing else). When the gateway rotates
//! its key it still accepts the previous one for a grace period and says so inside the
//! encapsulated answer (`tidings-ohttp-keys`): the client moves to the new key at once,
//! unseen by the OHTTP relay. A key the gateway no longer accepts at all (it changed
//! without an overlap this client saw) fails the call with `FAILED_PRECONDITION` and a
//! message saying so; a client that fetched its key fetches the new one then, so the next
//! call goes through, and a client with a pinned key needs a new `key_config`.

use std::{
    fmt,
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
    time::Duration,
};

use base64::Engine;
use bhttp::{Message, Mode};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_util::{
    client::legacy::{
        Client,
        connect::{Connected, Connection},
    },
    rt::{TokioExecutor, TokioIo},
};
use ohttp::{ClientRequest, KeyConfig};
use rustls_pki_types::ServerName;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tonic::{Status, transport::Channel};

use crate::tls::{self, TlsConnectError, TrustRoots};

/// The path of the gateway's key configuration (RFC 9540 §3).
pub const KEYS_PATH: &str = "/.well-known/ohttp-gateway";
/// The header field of an encapsulated answer that carries the gateway's current key
/// configuration when the request used the previous one (base64 of `application/ohttp-keys`).
pub const NEXT_KEYS_FIELD: &str = "tidings-ohttp-keys";
/// The problem type of a key configuration the gateway does not accept (RFC 9458 §5.3).
pub const KEY_PROBLEM_TYPE: &str = "https://iana.org/assignments/http-problem-types#ohttp-key";
const REQUEST_MEDIA_TYPE: &str = "message/ohttp-req";
const RESPONSE_MEDIA_TYPE: &str = "message/ohttp-res";
const KEYS_MEDIA_TYPE: &str = "application/ohttp-keys";
/// The largest answer read from the OHTTP relay or the gateway: a Retrieve page (4 MB by
/// default) and its framing.
const MAX_RESPONSE_BYTES: usize = 8 << 20;
/// Fields of one connection, never of a message (RFC 9113 §8.2.2).
const CONNECTION_FIELDS: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "host",
];

/// How a [`crate::client::RelayClient`] reaches the relay through Oblivious HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OhttpSettings {
    /// The OHTTP relay resource every call is POSTed to (`https://…`, or `http://` on a
    /// trusted network), as its operator publishes it for this relay.
    pub relay_url: String,
    /// The gateway's key configuration as `/.well-known/ohttp-gateway` serves it
    /// (`application/ohttp-keys`), or one bare key configuration: pinned. `None`: fetched
    /// from the gateway at the relay endpoint once, and again when the gateway stops
    /// accepting it (each fetch shows this device's address to the relay).
    pub key_config: Option<Vec<u8>>,
    /// The local address connections leave from (a multi-homed host; tests).
    pub local_address: Option<IpAddr>,
}

impl OhttpSettings {
    /// Through `relay_url`, fetching the key configuration from the gateway.
    pub fn new(relay_url: impl Into<String>) -> Self {
        Self {
            relay_url: relay_url.into(),
            key_config: None,
            local_address: None,
        }
    }
}

/// Why OHTTP settings cannot be used (reported when the client is made).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OhttpSettingsError {
    /// `relay_url` is not an `http://` or `https://` URL.
    #[error("ohttp.relay_url {0:?} is not an http:// or https:// URL")]
    RelayUrl(String),
    /// `key_config` holds no key configuration this client can use (X25519 with
    /// HKDF-SHA256 and ChaCha20-Poly1305 or AES-128-GCM).
    #[error("ohttp.key_config holds no usable OHTTP key configuration")]
    KeyConfig,
    /// The TLS settings for an `https://` OHTTP relay.
    #[error("ohttp: {0}")]
    Tls(#[from] tls::TlsError),
}

/// A key configuration the client encapsulates to.
#[derive(Clone)]
struct Pinned {
    /// As received (`application/ohttp-keys`, or one configuration).
    encoded: Vec<u8>,
    /// The configuration used: the first usable one.
    config: KeyConfig,
    key_id: u8,
}

impl Pinned {
    fn parse(encoded: &[u8]) -> Option<Self> {
        let configs = KeyConfig::decode_list(encoded)
            .ok()
            .filter(|c| !c.is_empty())
            .or_else(|| KeyConfig::decode(encoded).ok().map(|c| vec![c]))?;
        let config = configs.into_iter().next()?;
        // The key id is the first byte of an encoded configuration; ask the encoding
        // rather than reach into the crate's fields.
        let key_id = *config.encode().ok()?.first()?;
        ClientRequest::from_config(&mut config.clone()).ok()?;
        Some(Self {
            encoded: encoded.to_vec(),
            config,
            key_id,
        })
    }
}

/// Where pinned keys come from and where they go.
struct Keys {
    pinned: Mutex<Option<Pinned>>,
    /// Whether the client may fetch keys from the gateway (no `key_config` was given).
    fetch: bool,
}

/// A tower service carrying gRPC calls through an OHTTP relay to the relay's gateway.
/// Cheap to clone; clones share the connection pool and the pinned key.
#[derive(Clone)]
pub struct OhttpTransport(Arc<Shared>);

struct Shared {
    relay: Uri,
    /// The relay endpoint: its origin is the inner requests' scheme and authority, and
    /// where keys are fetched from.
    gateway: Uri,
    keys: Keys,
    http: Client<Connector, Full<Bytes>>,
}

impl fmt::Debug for OhttpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OhttpTransport")
            .field("relay", &self.0.relay)
            .field("gateway", &self.0.gateway)
            .finish_non_exhaustive()
    }
}

impl OhttpTransport {
    /// A transport to the gateway at `gateway` (the relay endpoint, `http://` or
    /// `https://`) through the OHTTP relay of `settings`; `https://` OHTTP relays are
    /// checked against `roots` and `extra_roots_pem`.
    pub fn new(
        gateway: Uri,
        settings: &OhttpSettings,
        roots: TrustRoots,
        extra_roots_pem: &[Vec<u8>],
        connect_timeout: Duration,
    ) -> Result<Self, OhttpSettingsError> {
        let relay: Uri = settings
            .relay_url
            .parse()
            .ok()
            .filter(|u: &Uri| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some())
            .ok_or_else(|| OhttpSettingsError::RelayUrl(settings.relay_url.clone()))?;
        let pinned = match &settings.key_config {
            Some(encoded) => Some(Pinned::parse(encoded).ok_or(OhttpSettingsError::KeyConfig)?),
            None => None,
        };
        let mut tls_config = tls::client_config(roots, extra_roots_pem)?;
        tls_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let trusted = match extra_roots_pem.len() {
            0 => roots.to_string(),
            n => format!("{roots} and {n} extra roots"),
        };
        let connector = Connector {
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls_config)),
            trusted: trusted.into(),
            local: settings.local_address,
            timeout: connect_timeout,
        };
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Ok(Self(Arc::new(Shared {
            relay,
            gateway,
            keys: Keys {
                pinned: Mutex::new(pinned),
                fetch: settings.key_config.is_none(),
            },
            http,
        })))
    }

    /// The key configuration pinned now (what the gateway answered last, or was given), to
    /// keep for the next start; `None` before the first fetch.
    pub fn key_config(&self) -> Option<Vec<u8>> {
        self.pinned().map(|p| p.encoded)
    }

    fn pinned(&self) -> Option<Pinned> {
        self.0
            .keys
            .pinned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn pin(&self, pinned: Pinned) {
        *self.0.keys.pinned.lock().unwrap_or_else(PoisonError::into_inner) = Some(pinned);
    }

    /// Fetches the key configuration from the gateway (a direct request) and pins it.
    pub async fn fetch_key_config(&self) -> Result<(), Status> {
        let uri = keys_uri(&self.0.gateway)
            .ok_or_else(|| Status::failed_precondition("OHTTP: the relay endpoint has no origin"))?;
        let request = Request::get(uri)
            .body(Full::new(Bytes::new()))
            .map_err(|e| Status::internal(format!("OHTTP: {e}")))?;
        let response = self.send(request).await?;
        let status = response.status();
        let media = media_type(response.headers());
        let body = read_body(response).await?;
        if status != StatusCode::OK || !media.eq_ignore_ascii_case(KEYS_MEDIA_TYPE) {
            return Err(http_refusal("the gateway's key configuration", status));
        }
        let pinned = Pinned::parse(&body).ok_or_else(|| {
            Status::failed_precondition(
                "OHTTP: the gateway's key configuration holds no key this client can use",
            )
        })?;
        tracing::debug!(key_id = pinned.key_id, "OHTTP: key configuration fetched");
        self.pin(pinned);
        Ok(())
    }

    async fn current_key(&self) -> Result<Pinned, Status> {
        if let Some(pinned) = self.pinned() {
            return Ok(pinned);
        }
        if !self.0.keys.fetch {
            // Only reachable if parsing a pinned config failed, which `new` refuses.
            return Err(Status::failed_precondition("OHTTP: no key configuration"));
        }
        self.fetch_key_config().await?;
        self.pinned()
            .ok_or_else(|| Status::failed_precondition("OHTTP: no key configuration"))
    }

    async fn send(&self, request: Request<Full<Bytes>>) -> Result<Response<hyper::body::Incoming>, Status> {
        self.0.http.request(request).await.map_err(|e| {
            let mut status =
                Status::unavailable(format!("cannot reach the OHTTP relay: {}", error_chain(&e)));
            status.set_source(Arc::new(e));
            status
        })
    }

    /// One gRPC call: encode, encapsulate, POST, decapsulate, decode.
    async fn call_through(
        self,
        request: Request<tonic::body::Body>,
    ) -> Result<Response<tonic::body::Body>, Status> {
        let (parts, body) = request.into_parts();
        let content = body
            .collect()
            .await
            .map_err(|e| Status::internal(format!("OHTTP: reading the request: {e}")))?
            .to_bytes();
        let inner = encode_request(&parts, &self.0.gateway, &content);
        let key = self.current_key().await?;
        let (encapsulated, pending) = ClientRequest::from_config(&mut key.config.clone())
            .and_then(|c| c.encapsulate(&inner))
            .map_err(|e| Status::internal(format!("OHTTP: encapsulating the request: {e}")))?;
        let post = Request::post(self.0.relay.clone())
            .header(header::CONTENT_TYPE, REQUEST_MEDIA_TYPE)
            .body(Full::new(Bytes::from(encapsulated)))
            .map_err(|e| Status::internal(format!("OHTTP: {e}")))?;
        let response = self.send(post).await?;
        let status = response.status();
        let media = media_type(response.headers());
        let body = read_body(response).await?;
        if status == StatusCode::OK && media.eq_ignore_ascii_case(RESPONSE_MEDIA_TYPE) {
            let inner = pending.decapsulate(&body).map_err(|_| {
                Status::unavailable("OHTTP: the answer does not decrypt (altered on the way)")
            })?;
            return self.decode_answer(&inner);
        }
        if status == StatusCode::BAD_REQUEST && is_key_problem(&media, &body) {
            return Err(self.key_rejected(&key).await);
        }
        Err(http_refusal("the OHTTP relay or gateway", status))
    }

    /// The gateway refused the pinned key: say so, and fetch the current one if allowed.
    async fn key_rejected(&self, rejected: &Pinned) -> Status {
        let what = format!(
            "OHTTP: the gateway no longer accepts this client's key configuration (key id {}): \
             its key changed without an overlap this client saw",
            rejected.key_id
        );
        if !self.0.keys.fetch {
            return Status::failed_precondition(format!(
                "{what}; give the client the gateway's current key configuration (ohttp key_config)"
            ));
        }
        match self.fetch_key_config().await {
            Ok(()) => Status::failed_precondition(format!(
                "{what}; the current one was fetched from the gateway: retry the call"
            )),
            Err(e) => Status::failed_precondition(format!(
                "{what}; fetching the current one failed: {}",
                e.message()
            )),
        }
    }

    fn decode_answer(&self, inner: &[u8]) -> Result<Response<tonic::body::Body>, Status> {
        let bad = || Status::internal("OHTTP: the gateway's answer is not a Binary HTTP response");
        let message = Message::read_bhttp(&mut io::Cursor::new(inner)).map_err(|_| bad())?;
        let status = message
            .control()
            .status()
            .and_then(|s| StatusCode::from_u16(u16::from(s)).ok())
            .ok_or_else(bad)?;
        let mut response = Response::builder().status(status);
        if let Some(headers) = response.headers_mut() {
            copy_fields(message.header(), headers);
        }
        if let Some(next) = message.header().get(NEXT_KEYS_FIELD.as_bytes()) {
            self.move_to(next);
        }
        let mut trailers = HeaderMap::new();
        copy_fields(message.trailer(), &mut trailers);
        let mut frames = vec![Ok::<_, Status>(http_body::Frame::data(Bytes::copy_from_slice(
            message.content(),
        )))];
        if !trailers.is_empty() {
            frames.push(Ok(http_body::Frame::trailers(trailers)));
        }
        let body = StreamBody::new(futures_util::stream::iter(frames));
        response.body(tonic::body::Body::new(body)).map_err(|_| bad())
    }

    /// Pins the key configuration the gateway named as current (base64 in `value`).
    fn move_to(&self, value: &[u8]) {
        let Some(next) = base64::engine::general_purpose::STANDARD
            .decode(value)
            .ok()
            .and_then(|b| Pinned::parse(&b))
        else {
            tracing::debug!("OHTTP: the gateway named an unusable next key configuration");
            return;
        };
        if self.pinned().is_some_and(|p| p.encoded == next.encoded) {
            return;
        }
        tracing::debug!(
            key_id = next.key_id,
            "OHTTP: the gateway rotated its key; moving to the new one"
        );
        self.pin(next);
    }
}

impl tower::Service<Request<tonic::body::Body>> for OhttpTransport {
    type Response = Response<tonic::body::Body>;
    type Error = tower::BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The pool opens connections as calls need them.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<tonic::body::Body>) -> Self::Future {
        let me = self.clone();
        // A `Status` error is what tonic hands to the caller, code and all.
        Box::pin(async move { me.call_through(request).await.map_err(Into::into) })
    }
}

/// What a [`crate::client::RelayClient`] talks through: a direct channel, or OHTTP.
#[derive(Debug, Clone)]
pub enum Transport {
    /// A tonic channel to the relay's gRPC listener.
    Direct(Channel),
    /// Oblivious HTTP through an OHTTP relay.
    Ohttp(OhttpTransport),
}

impl tower::Service<Request<tonic::body::Body>> for Transport {
    type Response = Response<tonic::body::Body>;
    type Error = tower::BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self {
            Transport::Direct(channel) => channel.poll_ready(cx).map_err(Into::into),
            Transport::Ohttp(ohttp) => ohttp.poll_ready(cx),
        }
    }

    fn call(&mut self, request: Request<tonic::body::Body>) -> Self::Future {
        match self {
            Transport::Direct(channel) => {
                let call = channel.call(request);
                // Boxed as tonic would box it, so errors reach the caller as before.
                Box::pin(async move { call.await.map_err(Into::into) })
            }
            Transport::Ohttp(ohttp) => ohttp.call(request),
        }
    }
}

/// The Binary HTTP request of a gRPC call: POST to its path at the relay endpoint's
/// origin, its header fields (connection fields left out), its body as content.
fn encode_request(parts: &http::request::Parts, gateway: &Uri, content: &[u8]) -> Vec<u8> {
    let scheme = gateway.scheme_str().unwrap_or("https");
    let authority = gateway.authority().map(|a| a.as_str()).unwrap_or_default();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut m = Message::request(
        Method::POST.as_str().as_bytes().to_vec(),
        scheme.as_bytes().to_vec(),
        authority.as_bytes().to_vec(),
        path.as_bytes().to_vec(),
    );
    for (name, value) in &parts.headers {
        if !CONNECTION_FIELDS.contains(&name.as_str()) {
            m.put_header(name.as_str(), value.as_bytes());
        }
    }
    m.write_content(content);
    let mut out = Vec::with_capacity(content.len() + 256);
    // Writing into a Vec cannot fail.
    m.write_bhttp(Mode::KnownLength, &mut out)
        .expect("writing Binary HTTP into memory");
    out
}

fn copy_fields(fields: &bhttp::FieldSection, into: &mut HeaderMap) {
    for field in fields.iter() {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(field.name()),
            HeaderValue::from_bytes(field.value()),
        ) && !CONNECTION_FIELDS.contains(&name.as_str())
            && name != NEXT_KEYS_FIELD
        {
            into.append(name, value);
        }
    }
}

fn keys_uri(gateway: &Uri) -> Option<Uri> {
    Uri::builder()
        .scheme(gateway.scheme_str()?)
        .authority(gateway.authority()?.as_str())
        .path_and_query(KEYS_PATH)
        .build()
        .ok()
}

fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn is_key_problem(media: &str, body: &[u8]) -> bool {
    media.eq_ignore_ascii_case("application/problem+json")
        && serde_json::from_slice::<serde_json::Value>(body)
            .is_ok_and(|json| json["type"] == KEY_PROBLEM_TYPE)
}

async fn read_body(response: Response<hyper::body::Incoming>) -> Result<Bytes, Status> {
    http_body_util::Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| Status::unavailable(format!("OHTTP: the answer broke off: {e}")))
}

/// An HTTP status other than the expected one from `who`: busy or down (5xx, 429, 408)
/// is `UNAVAILABLE` and retried; anything else is a setup problem (a wrong URL, a relay
/// that does not serve this gateway).
fn http_refusal(who: &str, status: StatusCode) -> Status {
    let text = format!("OHTTP: {who} answered HTTP {status}");
    if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
    {
        Status::unavailable(text)
    } else if status == StatusCode::PAYLOAD_TOO_LARGE {
        Status::resource_exhausted(text)
    } else {
        Status::failed_precondition(text)
    }
}

/// An error and its sources in one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Opens connections to the OHTTP relay (and, for a key fetch, the gateway): TCP from the
/// configured local address, TLS for `https://` with the client's roots.
#[derive(Clone)]
struct Connector {
    tls: tokio_rustls::TlsConnector,
    trusted: Arc<str>,
    local: Option<IpAddr>,
    timeout: Duration,
}

impl tower::Service<Uri> for Connector {
    type Response = Io;
    type Error = TlsConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Io, TlsConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let me = self.clone();
        Box::pin(async move { me.connect(uri).await })
    }
}

impl Connector {
    async fn connect(self, uri: Uri) -> Result<Io, TlsConnectError> {
        let https = uri.scheme_str() == Some("https");
        let host = uri.host().unwrap_or_default();
        let bare = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let target = if bare.contains(':') {
            format!("[{bare}]:{port}")
        } else {
            format!("{bare}:{port}")
        };
        let tcp = tokio::time::timeout(self.timeout, self.tcp(&bare, port))
            .await
            .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")))
            .map_err(|error| TlsConnectError::Tcp {
                target: target.clone(),
                error,
            })?;
        if !https {
            return Ok(Io::Plain(TokioIo::new(tcp)));
        }
        let name = ServerName::try_from(bare).map_err(|e| TlsConnectError::Handshake {
            target: target.clone(),
            error: io::Error::new(io::ErrorKind::InvalidInput, e),
        })?;
        let handshake = tokio::time::timeout(self.timeout, self.tls.connect(name, tcp))
            .await
            .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")));
        let stream = handshake.map_err(|error| {
            match error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
                Some(rustls::Error::InvalidCertificate(reason)) => TlsConnectError::Certificate {
                    target: target.clone(),
                    trusted: self.trusted.to_string(),
                    reason: reason.to_string(),
                },
                _ => TlsConnectError::Handshake {
                    target: target.clone(),
                    error,
                },
            }
        })?;
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        Ok(Io::Tls(Box::new(TokioIo::new(stream)), h2))
    }

    async fn tcp(&self, host: &str, port: u16) -> io::Result<TcpStream> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the name has no address");
        for addr in tokio::net::lookup_host((host, port)).await? {
            match self.tcp_to(addr).await {
                Ok(tcp) => return Ok(tcp),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn tcp_to(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(local) = self.local {
            socket.bind(SocketAddr::new(local, 0))?;
        }
        let tcp = socket.connect(addr).await?;
        tcp.set_nodelay(true)?;
        Ok(tcp)
    }
}

/// A connection to the OHTTP relay, plain or TLS (with whether ALPN chose HTTP/2).
enum Io {
    Plain(TokioIo<TcpStream>),
    Tls(Box<TokioIo<TlsStream<TcpStream>>>, bool),
}

impl Connection for Io {
    fn connected(&self) -> Connected {
        match self {
            Io::Tls(_, true) => Connected::new().negotiated_h2(),
            _ => Connected::new(),
        }
    }
}

impl hyper::rt::Read for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Io::Tls(io, _) => Pin::new(io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Io::Tls(io, _) => Pin::new(io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(io) => Pin::new(io).poll_flush(cx),
            Io::Tls(io, _) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Io::Tls(io, _) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_list(key_id: u8) -> Vec<u8> {
        use ohttp::hpke::{Aead, Kdf, Kem};
        let config = KeyConfig::derive(
            key_id,
            Kem::X25519Sha256,
            vec![ohttp::SymmetricSuite::new(
                Kdf::HkdfSha256,
                Aead::ChaCha20Poly1305,
            )],
            &[key_id; 32],
        )
        .unwrap();
        KeyConfig::encode_list(&[config]).unwrap()
    }

    #[test]
    fn key_configurations_are_read_as_lists_or_alone() {
        let list = key_list(7);
        let pinned = Pinned::parse(&list).unwrap();
        assert_eq!(pinned.key_id, 7);
        assert_eq!(pinned.encoded, list);
        assert_eq!(
            Pinned::parse(&list[2..]).unwrap().key_id,
            7,
            "one bare configuration"
        );
        assert!(Pinned::parse(b"").is_none());
        assert!(Pinned::parse(&list[..20]).is_none());
    }

    #[test]
    fn settings_are_checked_when_the_transport_is_made() {
        let make = |relay: &str, keys: Option<Vec<u8>>| {
            let settings = OhttpSettings {
                key_config: keys,
                ..OhttpSettings::new(relay)
            };
            OhttpTransport::new(
                "http://127.0.0.1:7402".parse().unwrap(),
                &settings,
                TrustRoots::Platform,
                &[],
                Duration::from_secs(1),
            )
            .map(|_| ())
        };
        assert_eq!(
            make("ftp://relay.example", None),
            Err(OhttpSettingsError::RelayUrl("ftp://relay.example".into()))
        );
        assert_eq!(
            make("relay.example", None),
            Err(OhttpSettingsError::RelayUrl("relay.example".into()))
        );
        assert_eq!(
            make("https://relay.example/", Some(vec![1, 2, 3])),
            Err(OhttpSettingsError::KeyConfig)
        );
        assert_eq!(make("https://relay.example/", Some(key_list(1))), Ok(()));
    }

    #[test]
    fn a_grpc_call_is_written_as_binary_http() {
        let (parts, ()) = Request::post("/tidings.v1.Mailbox/Store")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("grpc-timeout", "10S")
            .body(())
            .unwrap()
            .into_parts();
        let bytes = encode_request(
            &parts,
            &"https://relay.example:7402".parse().unwrap(),
            b"\0\0\0\0\0",
        );
        let m = Message::read_bhttp(&mut io::Cursor::new(&bytes[..])).unwrap();
        assert_eq!(m.control().method(), Some(&b"POST"[..]));
        assert_eq!(m.control().scheme(), Some(&b"https"[..]));
        assert_eq!(m.control().authority(), Some(&b"relay.example:7402"[..]));
        assert_eq!(m.control().path(), Some(&b"/tidings.v1.Mailbox/Store"[..]));
        assert_eq!(m.header().get(b"grpc-timeout"), Some(&b"10S"[..]));
        assert_eq!(m.header().get(b"te"), None);
        assert_eq!(m.content(), b"\0\0\0\0\0");
    }

    #[test]
    fn refusals_map_to_codes_that_retry_only_what_may_pass() {
        use tonic::Code;
        assert_eq!(
            http_refusal("x", StatusCode::BAD_GATEWAY).code(),
            Code::Unavailable
        );
        assert_eq!(
            http_refusal("x", StatusCode::TOO_MANY_REQUESTS).code(),
            Code::Unavailable
        );
        assert_eq!(
            http_refusal("x", StatusCode::NOT_FOUND).code(),
            Code::FailedPrecondition
        );
        assert_eq!(
            http_refusal("x", StatusCode::PAYLOAD_TOO_LARGE).code(),
            Code::ResourceExhausted
        );
        let problem = format!(r#"{{"type":"{KEY_PROBLEM_TYPE}","title":"key identifier unknown"}}"#);
        assert!(is_key_problem("application/problem+json", problem.as_bytes()));
        assert!(!is_key_problem("text/plain", problem.as_bytes()));
        assert!(!is_key_problem(
            "application/problem+json",
            br#"{"type":"about:blank"}"#
        ));
    }
}
