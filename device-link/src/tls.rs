//! TLS for `https://` relays: which roots a relay's certificate is checked against, and
//! the connector tonic makes its connections through.
//!
//! tonic's own TLS takes root certificates but not a custom rustls verifier, so the
//! platform verifier (the OS trust store, MDM-installed roots included) needs a connector
//! of its own: a TCP connection (TCP_NODELAY), then a rustls handshake on ring offering
//! ALPN `h2`, checked against the name in the endpoint's host. tonic applies the connect
//! timeout around all of it. Plain `http://` relays never come here.

use std::{fmt, io, sync::Arc};

use hyper_util::rt::TokioIo;
use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::CryptoProvider,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tonic::transport::Uri;

#[cfg(target_os = "android")]
pub use jni;

/// The ALPN protocol of gRPC.
const ALPN_H2: &[u8] = b"h2";
/// The port of an `https://` endpoint that names none.
const HTTPS_PORT: u16 = 443;

/// Which roots the certificate of an `https://` relay is checked against. Either way the
/// roots of [`ClientOptions::extra_roots_pem`](crate::client::ClientOptions) are trusted
/// too (a relay behind a private CA).
///
/// The default is [`TrustRoots::Bundled`] when the `webpki-roots` feature is on, else
/// [`TrustRoots::Platform`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TrustRoots {
    /// Mozilla's root store, compiled in (the `webpki-roots` feature): the same answer on
    /// every device, and nothing to set up, but only as current as the app's build and
    /// blind to roots an organisation installs. Without the feature nothing is bundled and
    /// only the extra roots are trusted.
    #[cfg_attr(feature = "webpki-roots", default)]
    Bundled,
    /// The operating system's verifier (`rustls-platform-verifier`): iOS and macOS
    /// Security.framework, Android's trust manager, Windows' CryptoAPI, each with the
    /// roots a user or an MDM profile installed and the OS's own distrust decisions; on
    /// Linux the system CA bundle (`SSL_CERT_FILE` / `SSL_CERT_DIR` when set). Android
    /// needs [`init_android`] first.
    #[cfg_attr(not(feature = "webpki-roots"), default)]
    Platform,
}

impl fmt::Display for TrustRoots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrustRoots::Bundled => "the bundled roots",
            TrustRoots::Platform => "the platform's trust store",
        })
    }
}

/// Why the TLS settings of a client cannot be used. Reported when the client is made,
/// before anything is sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// An entry of `extra_roots_pem` is not a PEM certificate usable as a trust anchor.
    #[error("extra_roots_pem[{index}] is not a usable root certificate: {reason}")]
    BadExtraRoot {
        /// Its position in the list, from 0.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// [`TrustRoots::Bundled`] without the `webpki-roots` feature and no extra root: no
    /// certificate could ever be trusted.
    #[error("no trusted roots: this build bundles none (feature webpki-roots) and extra_roots_pem is empty")]
    NoRoots,
    /// The platform verifier cannot be set up (on Linux: no system CA bundle).
    #[error("the platform verifier is unavailable: {0}")]
    Platform(String),
    /// Android: the platform verifier was not given the app's context yet.
    #[error(
        "the platform verifier is not initialised: call TidingsPlatform.initPlatformVerifier(context) \
         (tls::init_android) before connecting, or use the bundled roots"
    )]
    PlatformNotInitialised,
    /// The endpoint's host is neither a DNS name nor an IP address.
    #[error("{host:?} is not a name a certificate can be checked against")]
    ServerName {
        /// The host as given.
        host: String,
    },
}

/// Why a TLS connection to a relay failed: the transport error tonic reports (and
/// `ClientError::Connect` or an `UNAVAILABLE` status carries, as text).
#[derive(Debug, thiserror::Error)]
pub enum TlsConnectError {
    /// No TCP connection could be made.
    #[error("cannot connect to {target}: {error}")]
    Tcp {
        /// `host:port`.
        target: String,
        /// The socket's error.
        error: io::Error,
    },
    /// The relay's certificate is not accepted: not issued by a trusted root, expired, or
    /// for another name. Retrying does not help.
    #[error("the TLS certificate of {target} is not trusted by {trusted}: {reason}")]
    Certificate {
        /// `host:port`.
        target: String,
        /// The roots it was checked against.
        trusted: String,
        /// rustls' verdict.
        reason: String,
    },
    /// The handshake failed for another reason (no common protocol, a reset connection).
    #[error("TLS handshake with {target} failed: {error}")]
    Handshake {
        /// `host:port`.
        target: String,
        /// What rustls or the socket reported.
        error: io::Error,
    },
    /// The relay finished the handshake without agreeing to HTTP/2, which gRPC needs.
    #[error("{target} did not negotiate HTTP/2 (ALPN h2)")]
    NoHttp2 {
        /// `host:port`.
        target: String,
    },
}

impl TlsConnectError {
    /// Whether `error` or one of its sources is a rejected certificate.
    pub fn is_certificate_error(error: &(dyn std::error::Error + 'static)) -> bool {
        let mut next = Some(error);
        while let Some(e) = next {
            if matches!(e.downcast_ref(), Some(TlsConnectError::Certificate { .. })) {
                return true;
            }
            next = e.source();
        }
        false
    }
}

/// Parses every entry of `extra_roots_pem` (each one or more PEM `CERTIFICATE` blocks)
/// and checks that each certificate can serve as a trust anchor.
pub fn parse_extra_roots(extra_roots_pem: &[Vec<u8>]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let mut roots = Vec::new();
    for (index, pem) in extra_roots_pem.iter().enumerate() {
        let bad = |reason: String| TlsError::BadExtraRoot { index, reason };
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("not valid PEM: {e}")))?;
        if certs.is_empty() {
            return Err(bad("no PEM CERTIFICATE block in it".to_owned()));
        }
        let mut check = RootCertStore::empty();
        for (n, cert) in certs.iter().enumerate() {
            check
                .add(cert.clone())
                .map_err(|e| bad(format!("certificate {}: {e}", n + 1)))?;
        }
        roots.extend(certs);
    }
    Ok(roots)
}

/// The rustls client configuration for `roots` plus `extra_roots_pem`: ring, TLS 1.2
/// and 1.3, ALPN `h2`, no client certificate.
pub fn client_config(roots: TrustRoots, extra_roots_pem: &[Vec<u8>]) -> Result<ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let extra = parse_extra_roots(extra_roots_pem)?;
    let verifier = match roots {
        TrustRoots::Bundled => bundled_verifier(extra, provider.clone())?,
        TrustRoots::Platform => platform_verifier(extra, provider.clone())?,
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        // The ring provider supports the safe default versions: not a runtime condition.
        .map_err(|e| TlsError::Platform(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

fn bundled_verifier(
    extra: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, TlsError> {
    let mut store = bundled_roots();
    // Already checked by parse_extra_roots; add_parsable_certificates cannot drop one.
    store.add_parsable_certificates(extra);
    if store.is_empty() {
        return Err(TlsError::NoRoots);
    }
    Ok(webpki_verifier(store, provider)?)
}

#[cfg(feature = "webpki-roots")]
fn bundled_roots() -> RootCertStore {
    webpki_roots::TLS_SERVER_ROOTS.iter().cloned().collect()
}

#[cfg(not(feature = "webpki-roots"))]
fn bundled_roots() -> RootCertStore {
    RootCertStore::empty()
}

fn webpki_verifier(
    store: RootCertStore,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, TlsError> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider)
        .build()
        .map_err(|e| TlsError::Platform(e.to_string()))
}

/// The OS verifier, and the extra roots beside it. Android's verifier takes no extra
/// roots, so they are not handed to the OS on any platform: a certificate the OS rejects
/// is checked once more against the extra roots alone ([`PlatformThenExtra`]), which gives
/// one behaviour everywhere.
fn platform_verifier(
    extra: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, TlsError> {
    check_platform_ready()?;
    let platform = rustls_platform_verifier::Verifier::new(provider.clone());
    if extra.is_empty() {
        return Ok(Arc::new(platform.map_err(|e| TlsError::Platform(e.to_string()))?));
    }
    let platform = match platform {
        Ok(verifier) => Some(verifier),
        // A host with no system CA bundle (a slim Linux container) still reaches a relay
        // behind the private CA it was given.
        Err(e) => {
            tracing::warn!(error = %e, "no platform trust store; trusting only the extra roots");
            None
        }
    };
    let mut store = RootCertStore::empty();
    store.add_parsable_certificates(extra);
    Ok(Arc::new(PlatformThenExtra {
        platform,
        extra: webpki_verifier(store, provider)?,
    }))
}

#[cfg(target_os = "android")]
static ANDROID_READY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[cfg(target_os = "android")]
fn check_platform_ready() -> Result<(), TlsError> {
    // Verifying before initialisation panics inside rustls-platform-verifier, on a
    // connection task: refuse to build such a client instead.
    if ANDROID_READY.load(std::sync::atomic::Ordering::Acquire) {
        Ok(())
    } else {
        Err(TlsError::PlatformNotInitialised)
    }
}

#[cfg(not(target_os = "android"))]
fn check_platform_ready() -> Result<(), TlsError> {
    Ok(())
}

/// Gives the platform verifier the JVM and the app's `Context` it verifies through
/// (Android only; once per process, before the first client with
/// [`TrustRoots::Platform`]; later calls do nothing). The Kotlin side must also ship
/// rustls-platform-verifier's Android component (docs/mobile.md). `mobile-glue` exports
/// it to Kotlin as `TidingsPlatform.initPlatformVerifier(context)`.
#[cfg(target_os = "android")]
pub fn init_android(
    env: &mut jni::Env<'_>,
    context: jni::objects::JObject<'_>,
) -> Result<(), jni::errors::Error> {
    rustls_platform_verifier::android::init_with_env(env, context)?;
    ANDROID_READY.store(true, std::sync::atomic::Ordering::Release);
    Ok(())
}

/// The OS's verdict first; a certificate it rejects is accepted still if it chains to
/// one of the extra roots.
#[derive(Debug)]
struct PlatformThenExtra {
    platform: Option<rustls_platform_verifier::Verifier>,
    extra: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for PlatformThenExtra {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let by_extra = || {
            self.extra
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        };
        match &self.platform {
            None => by_extra(),
            Some(platform) => platform
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                // The OS's reason is the one worth reporting: the extra roots are the
                // exception, not the rule.
                .or_else(|platform_said| by_extra().map_err(|_| platform_said)),
        }
    }

    // Signatures are checked with the same ring algorithms whichever verifier accepted
    // the chain.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.extra.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.extra.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.extra.supported_verify_schemes()
    }
}

/// Opens TLS connections to one relay for tonic (`Endpoint::connect_with_connector`).
/// Cheap to clone.
#[derive(Clone)]
pub(crate) struct RelayConnector {
    tls: tokio_rustls::TlsConnector,
    server_name: ServerName<'static>,
    host: Arc<str>,
    port: u16,
    trusted: Arc<str>,
}

impl fmt::Debug for RelayConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayConnector")
            .field("target", &self.target())
            .field("trusted", &self.trusted)
            .finish_non_exhaustive()
    }
}

impl RelayConnector {
    /// A connector to the host and port of `uri` (443 when it names none), trusting
    /// `roots` plus `extra_roots_pem`.
    pub(crate) fn new(uri: &Uri, roots: TrustRoots, extra_roots_pem: &[Vec<u8>]) -> Result<Self, TlsError> {
        let host = uri.host().unwrap_or_default();
        // An IPv6 literal comes bracketed in a URI, and neither a socket address nor a
        // certificate's IP entry is.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let server_name = ServerName::try_from(bare.to_owned()).map_err(|_| TlsError::ServerName {
            host: host.to_owned(),
        })?;
        let config = client_config(roots, extra_roots_pem)?;
        let trusted = match extra_roots_pem.len() {
            0 => roots.to_string(),
            n => format!("{roots} and {n} extra root{}", if n == 1 { "" } else { "s" }),
        };
        Ok(Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
            host: bare.into(),
            port: uri.port_u16().unwrap_or(HTTPS_PORT),
            trusted: trusted.into(),
        })
    }

    /// The port connections go to.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The connector as the service tonic calls for each new connection. The URI it is
    /// called with is ignored: the target was fixed when the connector was made.
    pub(crate) fn service(
        &self,
    ) -> impl tower::Service<
        Uri,
        Response = TokioIo<TlsStream<TcpStream>>,
        Error = TlsConnectError,
        Future = impl Future<Output = Result<TokioIo<TlsStream<TcpStream>>, TlsConnectError>> + Send,
    > + Send
    + 'static {
        let connector = self.clone();
        tower::service_fn(move |_: Uri| connector.clone().connect())
    }

    async fn connect(self) -> Result<TokioIo<TlsStream<TcpStream>>, TlsConnectError> {
        let tcp = TcpStream::connect((&*self.host, self.port))
            .await
            .and_then(|tcp| tcp.set_nodelay(true).map(|()| tcp))
            .map_err(|error| TlsConnectError::Tcp {
                target: self.target(),
                error,
            })?;
        let tls = self
            .tls
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|error| self.handshake_error(error))?;
        if tls.get_ref().1.alpn_protocol() != Some(ALPN_H2) {
            return Err(TlsConnectError::NoHttp2 {
                target: self.target(),
            });
        }
        Ok(TokioIo::new(tls))
    }

    fn handshake_error(&self, error: io::Error) -> TlsConnectError {
        match error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
            Some(rustls::Error::InvalidCertificate(reason)) => TlsConnectError::Certificate {
                target: self.target(),
                trusted: self.trusted.to_string(),
                reason: reason.to_string(),
            },
            _ => TlsConnectError::Handshake {
                target: self.target(),
                error,
            },
        }
    }

    fn target(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_pem() -> String {
        rcgen::generate_simple_self_signed(vec!["ca.test".to_owned()])
            .unwrap()
            .cert
            .pem()
    }

    #[test]
    fn every_bad_extra_root_is_named_by_its_position() {
        let good = ca_pem().into_bytes();
        let cases: [(&[u8], &str); 3] = [
            (b"not a certificate", "no PEM CERTIFICATE block"),
            (
                b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
                "not valid PEM",
            ),
            (
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                "certificate 1",
            ),
        ];
        for (bad, expect) in cases {
            let err = parse_extra_roots(&[good.clone(), bad.to_vec()]).unwrap_err();
            let TlsError::BadExtraRoot { index, reason } = &err else {
                panic!("{err:?}")
            };
            assert_eq!(*index, 1, "{err}");
            assert!(reason.contains(expect), "{err}");
            assert!(err.to_string().starts_with("extra_roots_pem[1] "), "{err}");
        }
    }

    #[test]
    fn a_pem_bundle_yields_every_certificate() {
        let bundle = format!("{}{}", ca_pem(), ca_pem());
        let roots = parse_extra_roots(&[bundle.into_bytes(), ca_pem().into_bytes()]).unwrap();
        assert_eq!(roots.len(), 3);
        assert!(parse_extra_roots(&[]).unwrap().is_empty());
    }

    #[test]
    fn the_configuration_offers_http2_and_refuses_bad_roots_for_either_choice() {
        let pem = ca_pem().into_bytes();
        for roots in [TrustRoots::Bundled, TrustRoots::Platform] {
            let config = client_config(roots, std::slice::from_ref(&pem)).unwrap();
            assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);
            assert!(matches!(
                client_config(roots, &[b"junk".to_vec()]),
                Err(TlsError::BadExtraRoot { index: 0, .. })
            ));
        }
    }

    #[cfg(feature = "webpki-roots")]
    #[test]
    fn bundled_is_the_default_with_the_mozilla_roots() {
        assert_eq!(TrustRoots::default(), TrustRoots::Bundled);
        assert!(client_config(TrustRoots::Bundled, &[]).is_ok());
    }

    #[cfg(not(feature = "webpki-roots"))]
    #[test]
    fn without_bundled_roots_platform_is_the_default_and_bundled_needs_an_extra_root() {
        assert_eq!(TrustRoots::default(), TrustRoots::Platform);
        assert_eq!(
            client_config(TrustRoots::Bundled, &[]).unwrap_err(),
            TlsError::NoRoots
        );
        assert!(client_config(TrustRoots::Bundled, &[ca_pem().into_bytes()]).is_ok());
    }

    #[test]
    fn the_connector_takes_its_target_from_the_uri() {
        let pem = ca_pem().into_bytes();
        let make = |uri: &str| {
            RelayConnector::new(
                &uri.parse().unwrap(),
                TrustRoots::Bundled,
                std::slice::from_ref(&pem),
            )
        };
        let c = make("https://relay.example:8443").unwrap();
        assert_eq!((c.target(), c.port()), ("relay.example:8443".to_owned(), 8443));
        assert_eq!(c.server_name, ServerName::try_from("relay.example").unwrap());
        assert_eq!(make("https://relay.example").unwrap().port(), 443);
        let v6 = make("https://[::1]:9").unwrap();
        assert_eq!(v6.target(), "[::1]:9");
        assert!(matches!(v6.server_name, ServerName::IpAddress(_)));
        assert!(matches!(
            make("https://bad_name!:1"),
            Err(TlsError::ServerName { .. })
        ));
    }

    #[test]
    fn a_certificate_error_is_found_through_its_wrappers() {
        #[derive(Debug, thiserror::Error)]
        #[error("transport error")]
        struct Wrapper(#[source] TlsConnectError);
        let cert = TlsConnectError::Certificate {
            target: "h:1".into(),
            trusted: "the bundled roots".into(),
            reason: "UnknownIssuer".into(),
        };
        assert!(TlsConnectError::is_certificate_error(&Wrapper(cert)));
        let other = TlsConnectError::NoHttp2 { target: "h:1".into() };
        assert!(!TlsConnectError::is_certificate_error(&Wrapper(other)));
    }
}
