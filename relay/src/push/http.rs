//! The HTTP/2 client every push provider is reached through.
//!
//! One pooled client per sender keeps a long-lived HTTP/2 connection per host and multiplexes
//! every push over it, as Apple and Google ask. rustls runs on ring (as tonic's `tls-ring`
//! does) with a preconfigured `ClientConfig`, so aws-lc is never linked and no process-wide
//! crypto provider has to be installed.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::PushConfigError;

/// Connecting never waits longer than this, even with a longer request timeout.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an idle connection is pinged, so dead ones are noticed before a push is lost.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
/// How long a keepalive ping may go unanswered before the connection is dropped.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Idle pooled connections live this long; Apple asks providers to keep connections open.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60 * 60);

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
    let err = err.without_url();
    let mut text = format!("{kind}: {err}");
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
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
    }
}
