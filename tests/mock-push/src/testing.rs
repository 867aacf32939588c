//! Helpers for the mocks' own tests: an HTTP/2-only client and token signers.

use std::sync::Arc;
use std::time::Duration;

use crate::jwt::{Alg, sign};
use serde_json::json;

use crate::apns::unix_s;
use crate::fixtures::{ApnsKey, ServiceAccount};

/// An HTTP/2-only client trusting `ca_pem` (if any).
pub(crate) fn client(ca_pem: Option<&str>) -> reqwest::Client {
    reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(10))
        .tls_backend_preconfigured(tls_config(ca_pem, b"h2"))
        .build()
        .unwrap()
}

/// An HTTP/1.1-only client.
pub(crate) fn http1_client() -> reqwest::Client {
    reqwest::Client::builder()
        .http1_only()
        .timeout(Duration::from_secs(10))
        .tls_backend_preconfigured(tls_config(None, b"http/1.1"))
        .build()
        .unwrap()
}

/// reqwest is built without a default crypto provider, so every client gets a ring config.
fn tls_config(ca_pem: Option<&str>, alpn: &[u8]) -> rustls::ClientConfig {
    use rustls_pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.unwrap_or("").as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    tls
}

/// An APNs provider token for `key`, with overridable claims.
pub(crate) fn apns_jwt(key: &ApnsKey, kid: &str, iss: &str, iat: u64) -> String {
    sign(
        Alg::Es256,
        &key.private_key_pem,
        Some(kid),
        &json!({"iss": iss, "iat": iat}),
    )
}

/// A valid APNs provider token for `key`, issued now.
pub(crate) fn valid_apns_jwt(key: &ApnsKey) -> String {
    apns_jwt(key, &key.key_id, &key.team_id, unix_s())
}

/// A service-account assertion with the given claims.
pub(crate) fn assertion(account: &ServiceAccount, aud: &str, scope: &str, iat: u64, exp: u64) -> String {
    let claims = json!({"iss": account.client_email, "aud": aud, "scope": scope, "iat": iat, "exp": exp});
    sign(
        Alg::Rs256,
        &account.key.private_key_pem,
        Some(&account.private_key_id),
        &claims,
    )
}
