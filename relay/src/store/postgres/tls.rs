//! Connections to PostgreSQL, plain or over verified TLS.
//!
//! libpq's default `sslmode=prefer` encrypts without checking who answers, which an
//! attacker on the path undoes at will. Here the URL's `sslmode` means:
//! - `disable` or `prefer` (the default): plain TCP, for a database on the same host or
//!   private network;
//! - `require`: TLS with the server's certificate and host name verified (libpq's
//!   `verify-full`) against the platform's roots plus the PEM file named by the
//!   `PGSSLROOTCERT` environment variable, as libpq reads it (a managed database's CA).

use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::config::SslMode;
use tokio_postgres::{AsyncMessage, Client, Connection, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::store::StoreError;

/// The environment variable naming extra trusted CA certificates (PEM).
pub const ROOT_CERT_ENV: &str = "PGSSLROOTCERT";

/// The TLS connector a configuration asks for: `None` for plain TCP. Turns `prefer`
/// into `disable` in `config`, so that a connection is never encrypted half-heartedly.
pub fn connector(config: &mut tokio_postgres::Config) -> Result<Option<MakeRustlsConnect>, StoreError> {
    if config.get_ssl_mode() != SslMode::Require {
        config.ssl_mode(SslMode::Disable);
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = verifier(&extra_roots()?, provider.clone())?;
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(&e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Some(MakeRustlsConnect::new(tls)))
}

fn tls_error(e: &dyn std::fmt::Display) -> StoreError {
    StoreError::unavailable(format!("PostgreSQL TLS: {e}"))
}

fn extra_roots() -> Result<Vec<CertificateDer<'static>>, StoreError> {
    let Some(path) = std::env::var_os(ROOT_CERT_ENV) else {
        return Ok(Vec::new());
    };
    let certs = CertificateDer::pem_file_iter(&path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| tls_error(&format!("{ROOT_CERT_ENV} ({}): {e}", path.to_string_lossy())))?;
    if certs.is_empty() {
        return Err(tls_error(&format!("{ROOT_CERT_ENV}: no PEM certificate found")));
    }
    Ok(certs)
}

/// The platform's roots plus `extra`; `extra` alone on a host without a CA bundle.
fn verifier(
    extra: &[CertificateDer<'static>],
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, StoreError> {
    match rustls_platform_verifier::Verifier::new_with_extra_roots(extra.iter().cloned(), provider.clone()) {
        Ok(verifier) => Ok(Arc::new(verifier)),
        Err(e) => {
            tracing::warn!("system CA certificates unavailable ({e}); trusting only {ROOT_CERT_ENV}");
            let mut roots = rustls::RootCertStore::empty();
            for cert in extra {
                roots.add(cert.clone()).map_err(|e| tls_error(&e))?;
            }
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map(|v| v as Arc<dyn ServerCertVerifier>)
                .map_err(|e| tls_error(&format!("no trusted CA certificate ({e}); set {ROOT_CERT_ENV}")))
        }
    }
}

/// A connection being driven: its client, the task polling it, and the asynchronous
/// messages (notifications, notices) it received.
pub struct Connected {
    /// The client; dropping it ends the connection.
    pub client: Client,
    /// Ends with the connection's error, if any.
    pub driver: JoinHandle<Result<(), tokio_postgres::Error>>,
    /// Notifications and notices. Keep it: the driver stops once it is dropped.
    pub messages: mpsc::UnboundedReceiver<AsyncMessage>,
}

/// Opens one connection outside the pool (migrations, LISTEN).
pub async fn connect(
    config: &tokio_postgres::Config,
    tls: Option<&MakeRustlsConnect>,
) -> Result<Connected, tokio_postgres::Error> {
    match tls {
        None => {
            let (client, connection) = config.connect(NoTls).await?;
            Ok(drive(client, connection))
        }
        Some(tls) => {
            let (client, connection) = config.connect(tls.clone()).await?;
            Ok(drive(client, connection))
        }
    }
}

fn drive<S, T>(client: Client, mut connection: Connection<S, T>) -> Connected
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (tx, messages) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            if tx.send(message?).is_err() {
                break;
            }
        }
        Ok(())
    });
    Connected {
        client,
        driver,
        messages,
    }
}
