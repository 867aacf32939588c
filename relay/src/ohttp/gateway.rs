//! The Oblivious Gateway Resource (RFC 9458 §5; RFC 9540): one path,
//! `/.well-known/ohttp-gateway`. `GET` answers the key configuration
//! (`application/ohttp-keys`); `POST` takes an Encapsulated Request (`message/ohttp-req`),
//! removes the encapsulation, decodes the Binary HTTP request inside ([`message`]),
//! dispatches it in-process to the relay's gRPC services — the very tower stack the gRPC
//! listener serves, its layers included — and answers the encapsulated response
//! (`message/ohttp-res`).
//!
//! Refusals, outside the encapsulation (RFC 9458 §5.2, §5.3): another path 404; another
//! method 405; another media type 415; a body over the size limit 413; too short to hold
//! the request header 400; a key id the gateway does not accept (never had, or past its
//! grace), a suite the key does not offer, or a ciphertext that does not open 400 with
//! the `application/problem+json` body of type
//! `https://iana.org/assignments/http-problem-types#ohttp-key`. Once decapsulated, every
//! answer is encapsulated, refusals of the inner request included ([`message::Refusal`]).
//!
//! Nothing identifying a request is logged: refusals are logged at debug with a fixed
//! label, never a peer address, key id or byte of the request.

use std::{net::SocketAddr, sync::Arc};

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use tonic::transport::server::TcpConnectInfo;
use tower::{ServiceExt, util::BoxCloneSyncService};

use super::{
    keys::KeyRing,
    message::{self, Refusal},
};
use crate::{limits::ThroughOhttp, metrics::Metrics};

/// The gateway's path: its key configuration (GET) and its resource (POST), RFC 9540 §3–4.
pub const GATEWAY_PATH: &str = "/.well-known/ohttp-gateway";
/// The media type of an Encapsulated Request.
pub const REQUEST_MEDIA_TYPE: &str = "message/ohttp-req";
/// The media type of an Encapsulated Response.
pub const RESPONSE_MEDIA_TYPE: &str = "message/ohttp-res";
/// The media type of a key configuration list.
pub const KEYS_MEDIA_TYPE: &str = "application/ohttp-keys";
/// The media type of a problem report (RFC 9457).
pub const PROBLEM_MEDIA_TYPE: &str = "application/problem+json";
/// The problem type of a key configuration problem (RFC 9458 §5.3).
pub const KEY_PROBLEM_TYPE: &str = "https://iana.org/assignments/http-problem-types#ohttp-key";
/// A header field of the encapsulated response to a request made with the previous key:
/// the current key configuration (`application/ohttp-keys`, base64 with padding), so the
/// client moves on before the previous key's grace ends. Only the client can read it.
pub const NEXT_KEYS_FIELD: &str = "tidings-ohttp-keys";
/// Room for the Binary HTTP framing and header fields around a gRPC body, and for the
/// encapsulation (7-byte header, 32-byte encapsulated key, 16-byte tag).
const ENVELOPE_ROOM: usize = 16 * 1024;
/// Length of the request header before the encapsulated key: key id, KEM, KDF, AEAD.
const REQUEST_HEADER_LEN: usize = 7;

/// The relay's gRPC services as the gateway calls them.
pub type RpcService =
    BoxCloneSyncService<Request<tonic::body::Body>, Response<tonic::body::Body>, tower::BoxError>;

/// What became of one request to the gateway; its [`Outcome::label`] is the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The key configuration was served.
    Keys,
    /// A request was decapsulated, dispatched and answered (whatever its gRPC status).
    Answered,
    /// Decapsulated, then refused before dispatch (inside the encapsulation).
    Inner(Refusal),
    /// Not the gateway's path.
    NotFound,
    /// Neither GET nor POST.
    Method,
    /// A POST that is not `message/ohttp-req`.
    MediaType,
    /// A body over the limit.
    TooLarge,
    /// The body broke off, or is too short to hold an encapsulated request.
    Malformed,
    /// A key id that is not accepted, a suite the key lacks, or a ciphertext that does not
    /// open with the key.
    KeyProblem,
    /// The relay failed (an RPC stack error, an encapsulation failure).
    Failed,
}

impl Outcome {
    /// A fixed label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Keys => "keys",
            Outcome::Answered => "answered",
            Outcome::Inner(refusal) => refusal.label(),
            Outcome::NotFound => "outer_not_found",
            Outcome::Method => "outer_method_not_allowed",
            Outcome::MediaType => "outer_unsupported_media_type",
            Outcome::TooLarge => "too_large",
            Outcome::Malformed => "malformed_encapsulation",
            Outcome::KeyProblem => "key_problem",
            Outcome::Failed => "failed",
        }
    }
}

/// The connection a request came on: its peer is the OHTTP relay (or whoever posted).
#[derive(Debug, Clone, Copy, Default)]
pub struct Peer {
    /// The remote address.
    pub remote: Option<SocketAddr>,
    /// The local address.
    pub local: Option<SocketAddr>,
}

/// The gateway: its keys and the services it dispatches to.
pub struct Gateway {
    keys: Arc<KeyRing>,
    rpc: RpcService,
    max_body: usize,
    client_ip_header: Option<HeaderName>,
    metrics: Option<Arc<Metrics>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("keys", &self.keys)
            .field("max_body", &self.max_body)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway over `rpc` (the relay's layered gRPC services), taking gRPC bodies up to
    /// `max_request_bytes`. `client_ip_header` is the header the rate limits read behind a
    /// trusted proxy: the inner request gets the outer request's value of it, never its own.
    pub fn new<S, B>(keys: Arc<KeyRing>, rpc: S, max_request_bytes: usize, client_ip_header: &str) -> Self
    where
        S: tower::Service<Request<tonic::body::Body>, Response = Response<B>> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<tower::BoxError>,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<tower::BoxError>,
    {
        let rpc = rpc
            .map_response(|res: Response<B>| res.map(tonic::body::Body::new))
            .map_err(Into::into);
        Self {
            keys,
            rpc: BoxCloneSyncService::new(rpc),
            max_body: max_request_bytes.saturating_add(ENVELOPE_ROOM),
            client_ip_header: HeaderName::from_bytes(client_ip_header.as_bytes()).ok(),
            metrics: None,
        }
    }

    /// Counts every request in `metrics` (`tidings_ohttp_requests_total`).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The key ring.
    pub fn keys(&self) -> &Arc<KeyRing> {
        &self.keys
    }

    /// Answers one request to the gateway listener.
    pub async fn handle<B>(&self, request: Request<B>, peer: Peer) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<tower::BoxError>,
    {
        let (outcome, response) = self.route(request, peer).await;
        if let Some(metrics) = &self.metrics {
            metrics.ohttp_request(outcome.label());
        }
        if !matches!(outcome, Outcome::Answered | Outcome::Keys) {
            tracing::debug!(outcome = outcome.label(), "OHTTP request refused");
        }
        response
    }

    async fn route<B>(&self, request: Request<B>, peer: Peer) -> (Outcome, Response<Full<Bytes>>)
    where
        B: Body<Data = Bytes>,
        B::Error: Into<tower::BoxError>,
    {
        if request.uri().path() != GATEWAY_PATH {
            return refuse(Outcome::NotFound, StatusCode::NOT_FOUND, "not found");
        }
        match *request.method() {
            Method::GET | Method::HEAD => self.key_config(),
            Method::POST => {
                let media_ok = request
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| is_media_type(v, REQUEST_MEDIA_TYPE));
                if !media_ok {
                    return refuse(
                        Outcome::MediaType,
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "the gateway takes message/ohttp-req",
                    );
                }
                let (parts, body) = request.into_parts();
                let body = match Limited::new(body, self.max_body).collect().await {
                    Ok(body) => body.to_bytes(),
                    Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                        return refuse(
                            Outcome::TooLarge,
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "the encapsulated request is larger than the relay accepts",
                        );
                    }
                    Err(_) => {
                        return refuse(Outcome::Malformed, StatusCode::BAD_REQUEST, "the body broke off");
                    }
                };
                self.answer_encapsulated(&body, &parts.headers, peer).await
            }
            _ => {
                let (outcome, mut res) = refuse(
                    Outcome::Method,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "the gateway takes GET and POST",
                );
                res.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, POST"));
                (outcome, res)
            }
        }
    }

    fn key_config(&self) -> (Outcome, Response<Full<Bytes>>) {
        let Ok(current) = self.keys.current() else {
            return refuse(Outcome::Failed, StatusCode::INTERNAL_SERVER_ERROR, "no key");
        };
        let mut res = Response::new(Full::new(Bytes::from(current.key_config_list())));
        let headers = res.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(KEYS_MEDIA_TYPE));
        // Cacheable until the next rotation, by anyone: every client gets the same bytes.
        if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={}", self.keys.next_rotation_in())) {
            headers.insert(header::CACHE_CONTROL, v);
        }
        (Outcome::Keys, res)
    }

    /// Decapsulates `encapsulated` (the body of a POST), dispatches the request inside and
    /// answers. `outer_headers` are the POST's header fields; `peer` its connection.
    pub async fn answer_encapsulated(
        &self,
        encapsulated: &[u8],
        outer_headers: &HeaderMap,
        peer: Peer,
    ) -> (Outcome, Response<Full<Bytes>>) {
        if encapsulated.len() <= REQUEST_HEADER_LEN {
            return refuse(
                Outcome::Malformed,
                StatusCode::BAD_REQUEST,
                "too short to be an encapsulated request",
            );
        }
        let accepted = match self.keys.for_key_id(encapsulated[0]) {
            Ok(Some(accepted)) => accepted,
            Ok(None) => return key_problem("key identifier unknown"),
            Err(_) => return refuse(Outcome::Failed, StatusCode::INTERNAL_SERVER_ERROR, "no key"),
        };
        let (inner, server_response) = match accepted.key.server().decapsulate(encapsulated) {
            Ok(opened) => opened,
            Err(ohttp::Error::Truncated | ohttp::Error::Format | ohttp::Error::Io(_)) => {
                return refuse(
                    Outcome::Malformed,
                    StatusCode::BAD_REQUEST,
                    "malformed encapsulated request",
                );
            }
            // A suite or KEM the key does not have, or a ciphertext that does not open:
            // what a client with an outdated or wrong key configuration sends.
            Err(_) => return key_problem("the request does not decrypt with the key of this key identifier"),
        };
        let next_keys = if accepted.previous {
            self.keys
                .current()
                .ok()
                .map(|current| base64::engine::general_purpose::STANDARD.encode(current.key_config_list()))
        } else {
            None
        };
        let (outcome, inner_response) = match message::decode_request(&inner) {
            Err(refusal) => (Outcome::Inner(refusal), refusal.to_bhttp()),
            Ok(request) => match self.dispatch(request, outer_headers, peer, next_keys).await {
                Ok(bytes) => (Outcome::Answered, bytes),
                Err(()) => {
                    return refuse(
                        Outcome::Failed,
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "relay failure",
                    );
                }
            },
        };
        match server_response.encapsulate(&inner_response) {
            Ok(sealed) => {
                let mut res = Response::new(Full::new(Bytes::from(sealed)));
                let headers = res.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(RESPONSE_MEDIA_TYPE),
                );
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                (outcome, res)
            }
            Err(_) => refuse(
                Outcome::Failed,
                StatusCode::INTERNAL_SERVER_ERROR,
                "relay failure",
            ),
        }
    }

    /// Calls the relay's services with the decoded request, as if it had come in on the
    /// gRPC listener from `peer`, and writes their answer as Binary HTTP.
    async fn dispatch(
        &self,
        request: Request<Bytes>,
        outer_headers: &HeaderMap,
        peer: Peer,
        next_keys: Option<String>,
    ) -> Result<Vec<u8>, ()> {
        let (mut parts, body) = request.into_parts();
        // The client's headers never speak for the client's address: the rate limits see
        // the OHTTP relay, or, behind a trusted proxy, what that proxy says of it.
        parts.headers.remove(header::FORWARDED);
        if let Some(name) = &self.client_ip_header {
            parts.headers.remove(name);
            for value in outer_headers.get_all(name) {
                parts.headers.append(name.clone(), value.clone());
            }
        }
        parts.extensions.insert(TcpConnectInfo {
            local_addr: peer.local,
            remote_addr: peer.remote,
        });
        parts.extensions.insert(ThroughOhttp);
        let request = Request::from_parts(parts, tonic::body::Body::new(Full::new(body)));
        let response = self.rpc.clone().oneshot(request).await.map_err(|_| ())?;
        let extra: Vec<(&'static str, String)> =
            next_keys.map(|k| (NEXT_KEYS_FIELD, k)).into_iter().collect();
        message::encode_response(response, &extra).await.map_err(|_| ())
    }
}

/// Whether `value` is the media type `wanted` (case-insensitive, parameters ignored).
fn is_media_type(value: &str, wanted: &str) -> bool {
    value
        .split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(wanted))
}

fn refuse(outcome: Outcome, status: StatusCode, why: &'static str) -> (Outcome, Response<Full<Bytes>>) {
    let mut res = Response::new(Full::new(Bytes::from(format!("{why}\n"))));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    (outcome, res)
}

/// 400 with the RFC 9458 §5.3 problem: the client should fetch the key configuration anew.
fn key_problem(title: &'static str) -> (Outcome, Response<Full<Bytes>>) {
    let body = serde_json::json!({ "type": KEY_PROBLEM_TYPE, "title": title }).to_string();
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = StatusCode::BAD_REQUEST;
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_MEDIA_TYPE));
    (Outcome::KeyProblem, res)
}

#[cfg(test)]
mod tests {
    use std::{
        convert::Infallible,
        io::Cursor,
        sync::{Arc, Mutex},
    };

    use bhttp::Message;
    use ohttp::ClientRequest;

    use super::*;
    use crate::{
        clock::ManualClock,
        ohttp::keys::{KeyRing, Schedule},
    };

    const ROTATION_S: u64 = 3600;
    const GRACE_S: u64 = 600;
    const T0_MS: i64 = 1_700_002_800_000; // the start of an epoch (a multiple of 3600 s)

    /// What the fake RPC service saw of a call.
    #[derive(Debug, Clone, Default)]
    struct Seen {
        path: String,
        remote: Option<SocketAddr>,
        through_ohttp: bool,
        forwarded_for: Vec<String>,
        body: Vec<u8>,
    }

    /// A gateway over a service that records the call and answers a framed message with
    /// trailers, like a unary gRPC answer.
    fn gateway(clock: &ManualClock) -> (Gateway, Arc<Mutex<Vec<Seen>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let rpc = tower::service_fn(move |req: Request<tonic::body::Body>| {
            let log = Arc::clone(&log);
            async move {
                let (parts, body) = req.into_parts();
                let body = body.collect().await?.to_bytes();
                log.lock().unwrap().push(Seen {
                    path: parts.uri.path().to_owned(),
                    remote: parts
                        .extensions
                        .get::<TcpConnectInfo>()
                        .and_then(|i| i.remote_addr),
                    through_ohttp: parts.extensions.get::<ThroughOhttp>().is_some(),
                    forwarded_for: parts
                        .headers
                        .get_all("x-forwarded-for")
                        .iter()
                        .map(|v| v.to_str().unwrap().to_owned())
                        .collect(),
                    body: body.to_vec(),
                });
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", HeaderValue::from_static("0"));
                let frames = futures_util::stream::iter(vec![
                    Ok::<_, Infallible>(http_body::Frame::data(Bytes::from_static(b"\0\0\0\0\x01\x08"))),
                    Ok(http_body::Frame::trailers(trailers)),
                ]);
                let res = Response::builder()
                    .header("content-type", "application/grpc")
                    .body(http_body_util::StreamBody::new(frames))
                    .unwrap();
                Ok::<_, tower::BoxError>(res)
            }
        });
        let schedule = Schedule {
            key_id: 1,
            rotation_s: ROTATION_S,
            grace_s: GRACE_S,
        };
        let ring = Arc::new(KeyRing::new(&[9; 32], schedule, Arc::new(clock.clone())).unwrap());
        (Gateway::new(ring, rpc, 70_000, "x-forwarded-for"), seen)
    }

    fn peer() -> Peer {
        Peer {
            remote: Some("192.0.2.1:4321".parse().unwrap()),
            local: Some("127.0.0.1:7402".parse().unwrap()),
        }
    }

    async fn call(g: &Gateway, req: Request<Full<Bytes>>) -> (StatusCode, HeaderMap, Bytes) {
        let res = g.handle(req, peer()).await;
        let (parts, body) = res.into_parts();
        (
            parts.status,
            parts.headers,
            body.collect().await.unwrap().to_bytes(),
        )
    }

    fn post(content_type: &str, body: Vec<u8>) -> Request<Full<Bytes>> {
        Request::post(GATEWAY_PATH)
            .header("content-type", content_type)
            .header("x-forwarded-for", "203.0.113.9")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    }

    async fn key_config(g: &Gateway) -> Vec<u8> {
        let req = Request::get(GATEWAY_PATH).body(Full::new(Bytes::new())).unwrap();
        let (status, headers, body) = call(g, req).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], KEYS_MEDIA_TYPE);
        assert!(
            headers[header::CACHE_CONTROL]
                .to_str()
                .unwrap()
                .starts_with("public, max-age=")
        );
        body.to_vec()
    }

    fn grpc_call(path: &str) -> Vec<u8> {
        let mut m = Message::request(
            b"POST".to_vec(),
            b"https".to_vec(),
            b"relay".to_vec(),
            path.as_bytes().to_vec(),
        );
        m.put_header("content-type", "application/grpc");
        m.put_header("x-forwarded-for", "6.6.6.6");
        m.write_content(b"\0\0\0\0\x02\x10\x01");
        let mut out = Vec::new();
        m.write_bhttp(bhttp::Mode::KnownLength, &mut out).unwrap();
        out
    }

    /// Encapsulates `inner` to the first key of `keys` (an `application/ohttp-keys` list).
    fn encapsulate(keys: &[u8], inner: &[u8]) -> (Vec<u8>, ohttp::ClientResponse) {
        let mut configs = ohttp::KeyConfig::decode_list(keys).unwrap();
        ClientRequest::from_config(&mut configs[0])
            .unwrap()
            .encapsulate(inner)
            .unwrap()
    }

    #[tokio::test]
    async fn a_call_is_dispatched_as_from_the_ohttp_relay_and_answered_encapsulated() {
        let clock = ManualClock::new(T0_MS + 1000);
        let (g, seen) = gateway(&clock);
        let keys = key_config(&g).await;
        let (enc, pending) = encapsulate(&keys, &grpc_call("/tidings.v1.Mailbox/Store"));
        let (status, headers, body) = call(&g, post(REQUEST_MEDIA_TYPE, enc)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], RESPONSE_MEDIA_TYPE);
        let inner = pending.decapsulate(&body).unwrap();
        let answer = Message::read_bhttp(&mut Cursor::new(&inner[..])).unwrap();
        assert_eq!(answer.control().status().map(u16::from), Some(200));
        assert_eq!(answer.content(), b"\0\0\0\0\x01\x08");
        assert_eq!(answer.trailer().get(b"grpc-status"), Some(&b"0"[..]));
        assert_eq!(
            answer.header().get(NEXT_KEYS_FIELD.as_bytes()),
            None,
            "the current key"
        );
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].path, "/tidings.v1.Mailbox/Store");
        assert_eq!(seen[0].remote, peer().remote);
        assert!(seen[0].through_ohttp);
        assert_eq!(
            seen[0].forwarded_for,
            ["203.0.113.9"],
            "the outer header, never the inner one"
        );
        assert_eq!(seen[0].body, b"\0\0\0\0\x02\x10\x01");
    }

    #[tokio::test]
    async fn every_outer_refusal_has_its_status() {
        let clock = ManualClock::new(T0_MS);
        let (g, seen) = gateway(&clock);
        let keys = key_config(&g).await;
        let (good, _) = encapsulate(&keys, &grpc_call("/tidings.v1.Mailbox/Store"));

        let wrong_path = Request::post("/ohttp").header("content-type", REQUEST_MEDIA_TYPE);
        let (status, ..) = call(&g, wrong_path.body(Full::new(Bytes::from(good.clone()))).unwrap()).await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        let put = Request::put(GATEWAY_PATH).body(Full::new(Bytes::new())).unwrap();
        let (status, headers, _) = call(&g, put).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(headers[header::ALLOW], "GET, HEAD, POST");

        for media in ["application/octet-stream", "message/ohttp-res", "message/bhttp"] {
            let (status, ..) = call(&g, post(media, good.clone())).await;
            assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{media}");
        }
        let (status, ..) = call(&g, post("Message/OHTTP-Req; x=1", good.clone())).await;
        assert_eq!(status, StatusCode::OK, "media types compare case-insensitively");

        let (status, ..) = call(&g, post(REQUEST_MEDIA_TYPE, vec![0; 70_000 + 16 * 1024 + 1])).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

        let (status, headers, _) = call(&g, post(REQUEST_MEDIA_TYPE, good[..7].to_vec())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_ne!(
            headers[header::CONTENT_TYPE],
            PROBLEM_MEDIA_TYPE,
            "not a key problem"
        );

        let key_problem = |(status, headers, body): (StatusCode, HeaderMap, Bytes)| {
            assert_eq!(status, StatusCode::BAD_REQUEST);
            assert_eq!(headers[header::CONTENT_TYPE], PROBLEM_MEDIA_TYPE);
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(json["type"], KEY_PROBLEM_TYPE);
            json["title"].as_str().unwrap().to_owned()
        };
        let mut unknown_id = good.clone();
        unknown_id[0] = unknown_id[0].wrapping_add(100);
        let title = key_problem(call(&g, post(REQUEST_MEDIA_TYPE, unknown_id)).await);
        assert_eq!(title, "key identifier unknown");
        let mut tampered = good.clone();
        *tampered.last_mut().unwrap() ^= 1;
        key_problem(call(&g, post(REQUEST_MEDIA_TYPE, tampered)).await);
        let mut other_suite = good.clone();
        other_suite[6] = 2; // AES-256-GCM, which the key does not offer
        key_problem(call(&g, post(REQUEST_MEDIA_TYPE, other_suite)).await);
        assert_eq!(
            seen.lock().unwrap().len(),
            1,
            "only the case-insensitive call got through"
        );
    }

    #[tokio::test]
    async fn inner_refusals_are_encapsulated() {
        let clock = ManualClock::new(T0_MS);
        let (g, seen) = gateway(&clock);
        let keys = key_config(&g).await;
        for (inner, status) in [
            (b"\x00\x07".to_vec(), 400),
            (grpc_call("/grpc.health.v1.Health/Check"), 404),
            (grpc_call("/tidings.v1.Mailbox/Nope"), 404),
        ] {
            let (enc, pending) = encapsulate(&keys, &inner);
            let (outer, headers, body) = call(&g, post(REQUEST_MEDIA_TYPE, enc)).await;
            assert_eq!(outer, StatusCode::OK);
            assert_eq!(headers[header::CONTENT_TYPE], RESPONSE_MEDIA_TYPE);
            let answer = pending.decapsulate(&body).unwrap();
            let m = Message::read_bhttp(&mut Cursor::new(&answer[..])).unwrap();
            assert_eq!(m.control().status().map(u16::from), Some(status));
        }
        assert!(seen.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_previous_key_works_through_its_grace_and_names_the_next() {
        let clock = ManualClock::new(T0_MS + 5_000);
        let (g, seen) = gateway(&clock);
        let old_keys = key_config(&g).await;
        clock.advance_ms(i64::try_from(ROTATION_S).unwrap() * 1000);
        let new_keys = key_config(&g).await;
        assert_ne!(old_keys, new_keys);
        assert_ne!(old_keys[2], new_keys[2], "a new key id");

        let (enc, pending) = encapsulate(&old_keys, &grpc_call("/tidings.v1.Relay/GetRelayInfo"));
        let (status, _, body) = call(&g, post(REQUEST_MEDIA_TYPE, enc)).await;
        assert_eq!(status, StatusCode::OK);
        let inner = pending.decapsulate(&body).unwrap();
        let m = Message::read_bhttp(&mut Cursor::new(&inner[..])).unwrap();
        let next = m
            .header()
            .get(NEXT_KEYS_FIELD.as_bytes())
            .expect("the current keys");
        let next = base64::engine::general_purpose::STANDARD.decode(next).unwrap();
        assert_eq!(next, new_keys);

        clock.advance_ms(i64::try_from(GRACE_S).unwrap() * 1000);
        let (enc, _) = encapsulate(&old_keys, &grpc_call("/tidings.v1.Relay/GetRelayInfo"));
        let (status, headers, _) = call(&g, post(REQUEST_MEDIA_TYPE, enc)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(headers[header::CONTENT_TYPE], PROBLEM_MEDIA_TYPE);
        let (enc, _) = encapsulate(&new_keys, &grpc_call("/tidings.v1.Relay/GetRelayInfo"));
        assert_eq!(call(&g, post(REQUEST_MEDIA_TYPE, enc)).await.0, StatusCode::OK);
        assert_eq!(seen.lock().unwrap().len(), 2);
    }
}
