//! The HTTP/2 clients the push providers are reached through.
//!
//! One pooled client per sender keeps a long-lived HTTP/2 connection per host and multiplexes
//! every push over it, as Apple and Google ask. rustls runs on ring (as tonic's `tls-ring`
//! does) with a preconfigured `ClientConfig`, so aws-lc is never linked and no process-wide
//! crypto provider has to be installed.
//!
//! APNs, FCM and HMS pushes, the hot path, go through [`PushClient`]: hyper-util's pooled
//! client over hyper-rustls, taking a pre-parsed `Uri` and a ready body. reqwest (Web Push,
//! whose endpoints go through its SSRF-checking resolver, and the OAuth token fetches) sits
//! on the same two crates but parses the URL three times per request and adds a redirect
//! layer; on the push path that was 8 % of the relay's instructions per push
//! (`scripts/push-profile.sh`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use reqwest::header::{HeaderMap, HeaderValue, USER_AGENT};
use rustls::crypto::CryptoProvider;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::{Outcome, PushConfigError, scrub};

/// Connecting never waits longer than this, even with a longer request timeout.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an idle connection is pinged, so dead ones are noticed before a push is lost.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
/// How long a keepalive ping may go unanswered before the connection is dropped.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Idle pooled connections live this long; Apple asks providers to keep connections open.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// The longest provider answer body read; Apple's and Google's error bodies are a few
/// hundred bytes, and an endpoint (configurable) must not make the relay buffer more.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// The `User-Agent` of every provider request.
const AGENT: &str = concat!("tidings-relay/", env!("CARGO_PKG_VERSION"));

/// A provider's answer, read whole.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// The header fields (`Retry-After`, `apns-id`, …).
    pub headers: HeaderMap,
    /// The body, at most 64 KiB.
    pub body: Bytes,
}

/// Why a request got no answer; [`TransportError::describe`] is the text for logs.
#[derive(Debug)]
pub enum TransportError {
    /// No answer within the sender's timeout (connect included).
    TimedOut,
    /// The connection could not be made (DNS, TCP, TLS).
    Connect(String),
    /// The connection broke, the stream was reset, or the body broke off.
    Request(String),
}

impl TransportError {
    /// The failure as text fit for logs: never the URL (an APNs URL holds the device
    /// token), with the underlying causes.
    pub fn describe(&self) -> String {
        match self {
            TransportError::TimedOut => "timed out".to_owned(),
            TransportError::Connect(why) => format!("connection failed: {why}"),
            TransportError::Request(why) => format!("request failed: {why}"),
        }
    }
}

/// The pooled HTTP/2 client of APNs, FCM and HMS pushes: h2 with prior knowledge for `http://`
/// endpoints (local mocks), ALPN `h2` for `https://`; TCP_NODELAY, TCP and HTTP/2
/// keepalives as [`http2_client`] sets them.
#[derive(Clone)]
pub struct PushClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl std::fmt::Debug for PushClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushClient")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl PushClient {
    /// A client trusting the system's roots plus `extra_root_pem`; `timeout` bounds each
    /// request from connect to the end of the answer's body.
    pub fn new(extra_root_pem: Option<&str>, timeout: Duration) -> Result<Self, PushConfigError> {
        // No ALPN here: hyper-rustls offers `h2` itself (and refuses a config that has any).
        let tls = tls_config(extra_root_pem, &[])?;
        let client = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .http2_keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .http2_keep_alive_while_idle(true)
            .build(connector(tls, timeout));
        Ok(Self { client, timeout })
    }

    /// POSTs `body` to `uri` with `headers` (a `User-Agent` added) and reads the answer.
    pub async fn post(
        &self,
        uri: Uri,
        mut headers: HeaderMap,
        body: Bytes,
    ) -> Result<Answer, TransportError> {
        headers.insert(USER_AGENT, HeaderValue::from_static(AGENT));
        let mut request = Request::post(uri)
            .body(Full::new(body))
            .map_err(|e| TransportError::Request(e.to_string()))?;
        *request.headers_mut() = headers;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                let why = error_chain(&e);
                if e.is_connect() {
                    TransportError::Connect(why)
                } else {
                    TransportError::Request(why)
                }
            })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| TransportError::Request(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(TransportError::TimedOut))
    }

    /// POSTs the JSON `body` with the OAuth `access` token (FCM, HMS) as a bearer, marked
    /// sensitive (never put into HPACK's dynamic table, as reqwest's `bearer_auth` did).
    /// What keeps the push from getting an answer is already its outcome: a token that is
    /// no header value is the configuration's fault; no answer is worth a retry (its
    /// reason scrubbed of the device's `token`).
    pub async fn post_json_with_bearer(
        &self,
        uri: &Uri,
        access: &str,
        body: &Bytes,
        token: &str,
    ) -> Result<Answer, Outcome> {
        let mut bearer =
            HeaderValue::try_from(format!("Bearer {access}")).map_err(|_| Outcome::ConfigError {
                reason: "the OAuth access token is no header value".into(),
            })?;
        bearer.set_sensitive(true);
        let mut headers = HeaderMap::with_capacity(3);
        headers.insert(reqwest::header::AUTHORIZATION, bearer);
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        self.post(uri.clone(), headers, body.clone())
            .await
            .map_err(|err| Outcome::Retry {
                after: None,
                reason: scrub(&err.describe(), token),
            })
    }
}

/// TCP (nodelay, keepalive, connect timeout) under TLS for `https://`, plain for `http://`.
fn connector(tls: rustls::ClientConfig, timeout: Duration) -> HttpsConnector<HttpConnector> {
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    // Pushes are small frames: they must not wait for Nagle behind a delayed ACK.
    tcp.set_nodelay(true);
    tcp.set_keepalive(Some(KEEPALIVE_INTERVAL));
    tcp.set_connect_timeout(Some(timeout.min(MAX_CONNECT_TIMEOUT)));
    HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http2()
        .wrap_connector(tcp)
}

/// `error` and its causes, `: `-separated (hyper's own message leaves the causes out).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// An endpoint base (from [`endpoint_base`]) with `path` appended, as a `Uri`.
pub fn endpoint_uri(base: &str, path: &str) -> Result<Uri, http::uri::InvalidUri> {
    format!("{base}{path}").parse()
}

/// Builds an HTTP/2-only client: prior knowledge for `http://` endpoints (local mocks),
/// ALPN `h2` for `https://`. Trusts the system's roots plus `extra_root_pem` (any number of
/// PEM certificates). `timeout` bounds each request from connect to the end of the body.
pub fn http2_client(
    extra_root_pem: Option<&str>,
    timeout: Duration,
) -> Result<reqwest::Client, PushConfigError> {
    let tls = tls_config(extra_root_pem, &[b"h2"])?;
    reqwest::Client::builder()
        .http2_prior_knowledge()
        .tls_backend_preconfigured(tls)
        .connect_timeout(timeout.min(MAX_CONNECT_TIMEOUT))
        .timeout(timeout)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .http2_keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .http2_keep_alive_while_idle(true)
        .tcp_keepalive(KEEPALIVE_INTERVAL)
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tidings-relay/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| PushConfigError::Http(e.to_string()))
}

/// A ring-backed rustls client config trusting the platform's roots plus `extra_root_pem`,
/// offering `alpn` protocols.
pub(crate) fn tls_config(
    extra_root_pem: Option<&str>,
    alpn: &[&[u8]],
) -> Result<rustls::ClientConfig, PushConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let extra = parse_pem_certificates(extra_root_pem)?;
    let verifier = server_verifier(&extra, provider.clone())?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PushConfigError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The platform's roots plus `extra`. A host without a CA bundle (a slim container talking
/// to a mock over h2c or over TLS with `ca_file`) still gets a client trusting `extra` alone.
fn server_verifier(
    extra: &[CertificateDer<'static>],
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::client::danger::ServerCertVerifier>, PushConfigError> {
    match rustls_platform_verifier::Verifier::new_with_extra_roots(extra.iter().cloned(), provider.clone()) {
        Ok(verifier) => Ok(Arc::new(verifier)),
        Err(err) => {
            tracing::warn!(%err, "system CA certificates unavailable; trusting only the configured ca_file");
            let mut roots = rustls::RootCertStore::empty();
            for cert in extra {
                roots
                    .add(cert.clone())
                    .map_err(|e| PushConfigError::Tls(e.to_string()))?;
            }
            let verifier =
                rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build();
            match verifier {
                Ok(verifier) => Ok(verifier),
                // No roots at all: https endpoints cannot work, http ones still can.
                Err(_) => Ok(Arc::new(NoTrustedRoots)),
            }
        }
    }
}

fn parse_pem_certificates(pem: Option<&str>) -> Result<Vec<CertificateDer<'static>>, PushConfigError> {
    let Some(pem) = pem else { return Ok(Vec::new()) };
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PushConfigError::Tls(format!("extra root certificate: {e}")))?;
    if certs.is_empty() {
        return Err(PushConfigError::Tls(
            "extra root certificate: no PEM certificate found".into(),
        ));
    }
    Ok(certs)
}

/// A verifier that trusts nothing, for hosts with neither system roots nor a `ca_file`.
#[derive(Debug)]
struct NoTrustedRoots;

impl rustls::client::danger::ServerCertVerifier for NoTrustedRoots {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ))
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ))
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ))
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `Retry-After` as a delay: delta-seconds or an HTTP date (a past date means now).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// A transport failure as text fit for logs: without the URL (an APNs URL holds the device
/// token) and with the underlying causes, which reqwest's own message leaves out.
pub fn describe_transport_error(err: reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    format!("{kind}: {}", error_chain(&err.without_url()))
}

/// Checks an endpoint base URL (`http://` or `https://`, no query) and returns it without a
/// trailing slash, ready to have a path appended.
pub fn endpoint_base(endpoint: &str) -> Result<String, PushConfigError> {
    let bad = |why: &str| PushConfigError::BadEndpoint(format!("{endpoint:?}: {why}"));
    let url = reqwest::Url::parse(endpoint).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("scheme must be http or https"));
    }
    if url.host().is_none() || url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must be a base URL with a host and no query"));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert("retry-after", "120".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(120)));
        headers.insert("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
        let future = std::time::SystemTime::now() + Duration::from_secs(3600);
        headers.insert("retry-after", httpdate::fmt_http_date(future).parse().unwrap());
        let after = retry_after(&headers).unwrap();
        assert!(after > Duration::from_secs(3500) && after <= Duration::from_secs(3600));
        headers.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn endpoints_are_checked_and_normalised() {
        assert_eq!(
            endpoint_base("https://api.push.apple.com").unwrap(),
            "https://api.push.apple.com"
        );
        assert_eq!(
            endpoint_base("http://127.0.0.1:9/").unwrap(),
            "http://127.0.0.1:9"
        );
        for bad in ["ftp://x", "api.push.apple.com", "https://x/?a=b", ""] {
            assert!(endpoint_base(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn extra_roots_must_be_certificates() {
        assert!(http2_client(Some("not a pem"), Duration::from_secs(1)).is_err());
        assert!(http2_client(None, Duration::from_secs(1)).is_ok());
        assert!(PushClient::new(Some("not a pem"), Duration::from_secs(1)).is_err());
    }

    /// APNs' answers stall on delayed ACKs without TCP_NODELAY (issue 17).
    #[tokio::test]
    async fn push_connections_set_tcp_nodelay() {
        use tower::Service;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tls = tls_config(None, &[]).unwrap();
        let mut connect = connector(tls, Duration::from_secs(2));
        let stream = connect
            .call(format!("http://{addr}").parse().unwrap())
            .await
            .unwrap();
        match stream {
            hyper_rustls::MaybeHttpsStream::Http(io) => assert!(io.inner().nodelay().unwrap()),
            hyper_rustls::MaybeHttpsStream::Https(_) => panic!("http:// is plain TCP"),
        }
    }

    #[tokio::test]
    async fn transport_failures_are_told_apart_and_never_name_the_url() {
        let client = PushClient::new(None, Duration::from_millis(300)).unwrap();
        // Nothing listens: refused at once.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let uri: Uri = format!("http://127.0.0.1:{port}/3/device/secret-token")
            .parse()
            .unwrap();
        let err = client
            .post(uri, HeaderMap::new(), Bytes::new())
            .await
            .unwrap_err();
        assert!(matches!(err, TransportError::Connect(_)), "{err:?}");
        assert!(!err.describe().contains("secret-token"), "{}", err.describe());
        // Accepts and never answers: the timeout.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let (socket, _) = silent.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(socket);
        });
        let uri: Uri = format!("http://{addr}/3/device/secret-token").parse().unwrap();
        let err = client
            .post(uri, HeaderMap::new(), Bytes::new())
            .await
            .unwrap_err();
        assert!(matches!(err, TransportError::TimedOut), "{err:?}");
        assert_eq!(err.describe(), "timed out");
        held.abort();
    }
}
