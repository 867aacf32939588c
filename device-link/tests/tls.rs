//! The client against an `https://` relay whose certificate comes from a private CA: the
//! bundled roots refuse it (once, clearly, without retrying), the CA as an extra
//! root makes it work, the platform verifier trusts it when the system store holds the CA
//! (on Linux `SSL_CERT_FILE`, set only in a child process so no other test sees it), and
//! a bad root fails the client's creation, naming the entry.

// Test code: a failed unwrap is a failed test with its line.
#![allow(clippy::unwrap_used)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Output,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tidings_device_link::{
    client::{ClientError, ClientOptions, RelayClient, RetryPolicy},
    tls::TrustRoots,
};
use tidings_proto::v1::{
    GetRelayInfoRequest, RelayInfo, SubscribeRequest, SubscribeResponse, UnsubscribeRequest,
    UnsubscribeResponse,
    relay_server::{Relay, RelayServer},
};
use tokio_stream::StreamExt;
use tonic::{
    Request, Response, Status,
    transport::{Identity, Server, ServerTlsConfig, server::TcpIncoming},
};

const STEP: Duration = Duration::from_secs(20);
/// Set in the child process: the directory holding the certificates it serves.
const CHILD_DIR: &str = "TIDINGS_TLS_TEST_DIR";
/// Set in the child process: which case it checks.
const CHILD_CASE: &str = "TIDINGS_TLS_TEST_CASE";

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {STEP:?}: {what}"),
    }
}

/// A private CA, a server certificate it issued for `localhost` and `127.0.0.1`, and an
/// unrelated CA.
struct Pki {
    ca_pem: String,
    other_ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

fn pki() -> Pki {
    let (ca_pem, issuer) = ca("tidings test CA");
    let (other_ca_pem, _) = ca("somebody else's CA");
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "tidings test relay");
    let cert = params.signed_by(&key, &issuer).unwrap();
    Pki {
        ca_pem,
        other_ca_pem,
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

impl Pki {
    const FILES: [&str; 4] = ["ca.pem", "other-ca.pem", "cert.pem", "key.pem"];

    fn write(&self, dir: &Path) {
        let texts = [&self.ca_pem, &self.other_ca_pem, &self.cert_pem, &self.key_pem];
        for (name, text) in Self::FILES.iter().zip(texts) {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }

    fn read(dir: &Path) -> Pki {
        let [ca_pem, other_ca_pem, cert_pem, key_pem] =
            Self::FILES.map(|name| std::fs::read_to_string(dir.join(name)).unwrap());
        Pki {
            ca_pem,
            other_ca_pem,
            cert_pem,
            key_pem,
        }
    }
}

/// A Relay service that answers `GetRelayInfo` only.
struct InfoOnly;

#[tonic::async_trait]
impl Relay for InfoOnly {
    async fn get_relay_info(&self, _: Request<GetRelayInfoRequest>) -> Result<Response<RelayInfo>, Status> {
        Ok(Response::new(RelayInfo {
            x25519_public_key: vec![9; 32],
            version: "tls-test".into(),
            ..RelayInfo::default()
        }))
    }

    async fn subscribe(&self, _: Request<SubscribeRequest>) -> Result<Response<SubscribeResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn unsubscribe(
        &self,
        _: Request<UnsubscribeRequest>,
    ) -> Result<Response<UnsubscribeResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

/// Serves [`InfoOnly`] over TLS with the server certificate of `pki`; returns its address
/// and a count of the TCP connections it accepted.
fn serve(pki: &Pki) -> (SocketAddr, Arc<AtomicUsize>) {
    let incoming = TcpIncoming::bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let addr = incoming.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let incoming = incoming.map(move |conn| {
        count.fetch_add(1, Ordering::SeqCst);
        conn
    });
    let tls = ServerTlsConfig::new().identity(Identity::from_pem(&pki.cert_pem, &pki.key_pem));
    let server = Server::builder()
        .tls_config(tls)
        .unwrap()
        .add_service(RelayServer::new(InfoOnly));
    tokio::spawn(server.serve_with_incoming(incoming));
    (addr, accepted)
}

fn options(roots: TrustRoots, extra_roots_pem: &[&str]) -> ClientOptions {
    ClientOptions {
        roots,
        extra_roots_pem: extra_roots_pem
            .iter()
            .map(|pem| pem.as_bytes().to_vec())
            .collect(),
        retry: RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
        },
        ..ClientOptions::default()
    }
}

fn localhost(addr: SocketAddr) -> String {
    format!("https://localhost:{}", addr.port())
}

async fn relay_version(endpoint: &str, options: ClientOptions) -> Result<String, ClientError> {
    let client = within("connect", RelayClient::connect_with(endpoint, options)).await?;
    let info = within("GetRelayInfo", client.relay_info()).await?;
    Ok(info.version)
}

#[tokio::test]
async fn bundled_roots_refuse_a_private_ca_once_and_say_why() {
    let pki = pki();
    let (addr, accepted) = serve(&pki);
    // The bundled roots with an unrelated CA beside them: builds with or without the
    // Mozilla roots (webpki-roots) refuse the relay the same way.
    let err = relay_version(
        &localhost(addr),
        options(TrustRoots::Bundled, &[&pki.other_ca_pem]),
    )
    .await
    .unwrap_err();
    let ClientError::UntrustedCertificate(reason) = &err else {
        panic!("not an untrusted-certificate error: {err:?}")
    };
    let expected = format!(
        "the TLS certificate of localhost:{} is not trusted by the bundled roots and 1 extra root",
        addr.port()
    );
    assert!(reason.contains(&expected), "{reason}");
    assert!(reason.contains("UnknownIssuer"), "{reason}");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "a certificate refusal is not retried"
    );

    // A lazy client reports the same on its first call, and does not retry it either.
    accepted.store(0, Ordering::SeqCst);
    let lazy = RelayClient::connect_lazy(
        &localhost(addr),
        options(TrustRoots::Bundled, &[&pki.other_ca_pem]),
    )
    .unwrap();
    match within("GetRelayInfo", lazy.relay_info()).await {
        Err(ClientError::UntrustedCertificate(message)) => {
            assert!(
                message.contains("is not trusted by the bundled roots"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the lazy client does not retry it"
    );
}

#[cfg(feature = "webpki-roots")]
#[tokio::test]
async fn the_mozilla_roots_alone_refuse_a_private_ca() {
    let pki = pki();
    let (addr, _) = serve(&pki);
    let err = relay_version(&localhost(addr), options(TrustRoots::Bundled, &[]))
        .await
        .unwrap_err();
    let ClientError::UntrustedCertificate(reason) = &err else {
        panic!("not an untrusted-certificate error: {err:?}")
    };
    assert!(
        reason.contains("is not trusted by the bundled roots: "),
        "{reason}"
    );
    assert!(reason.contains("UnknownIssuer"), "{reason}");
}

#[cfg(not(feature = "webpki-roots"))]
#[tokio::test]
async fn without_the_mozilla_roots_bundled_alone_is_refused_before_connecting() {
    let err =
        RelayClient::connect_lazy("https://localhost:1", options(TrustRoots::Bundled, &[])).unwrap_err();
    let ClientError::Endpoint { reason, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(reason.starts_with("no trusted roots"), "{reason}");
}

#[tokio::test]
async fn the_private_ca_as_an_extra_root_is_trusted_beside_the_bundled_ones() {
    let pki = pki();
    let (addr, _) = serve(&pki);
    let trusting = || options(TrustRoots::Bundled, &[&pki.other_ca_pem, &pki.ca_pem]);
    assert_eq!(
        relay_version(&localhost(addr), trusting()).await.unwrap(),
        "tls-test"
    );
    // By IP address too (the certificate names 127.0.0.1), and connecting lazily.
    let by_ip = RelayClient::connect_lazy(&format!("https://{addr}"), trusting()).unwrap();
    assert_eq!(
        within("GetRelayInfo", by_ip.relay_info()).await.unwrap().version,
        "tls-test"
    );
}

#[tokio::test]
async fn a_bad_extra_root_fails_the_client_and_is_named() {
    let pki = pki();
    let bad = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    for roots in [TrustRoots::Bundled, TrustRoots::Platform] {
        let opts = options(roots, &[&pki.ca_pem, bad, "not PEM at all"]);
        for err in [
            RelayClient::connect_lazy("https://localhost:1", opts.clone()).unwrap_err(),
            within("connect", RelayClient::connect_with("https://localhost:1", opts))
                .await
                .unwrap_err(),
        ] {
            let ClientError::Endpoint { reason, .. } = &err else {
                panic!("{err:?}")
            };
            assert!(
                reason.starts_with("extra_roots_pem[1] is not a usable root certificate"),
                "{reason}"
            );
        }
    }
}

/// Runs [`platform_case_in_child`] in a child process of this test binary with
/// `SSL_CERT_FILE` set to `cert_file` (or unset), and returns its output.
async fn run_child(dir: &Path, case: &str, cert_file: Option<PathBuf>) -> Output {
    let mut cmd = tokio::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["platform_case_in_child", "--exact", "--ignored", "--nocapture"])
        .env(CHILD_DIR, dir)
        .env(CHILD_CASE, case)
        .env_remove("SSL_CERT_DIR")
        .kill_on_drop(true);
    match cert_file {
        Some(file) => cmd.env("SSL_CERT_FILE", file),
        None => cmd.env_remove("SSL_CERT_FILE"),
    };
    within("child test", cmd.output()).await.unwrap()
}

#[tokio::test]
async fn the_platform_verifier_trusts_what_the_system_store_holds() {
    let dir = tempfile::tempdir().unwrap();
    pki().write(dir.path());
    let ca = dir.path().join("ca.pem");
    let other = dir.path().join("other-ca.pem");
    for (case, store) in [
        ("trusted", Some(ca)),
        ("untrusted", Some(other.clone())),
        ("extra-root", Some(other)),
        ("system", None),
    ] {
        let out = run_child(dir.path(), case, store).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "case {case}: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// One case of [`the_platform_verifier_trusts_what_the_system_store_holds`], in the child
/// process it starts (ignored otherwise, and a no-op when run by hand).
#[tokio::test]
#[ignore = "run by the_platform_verifier_trusts_what_the_system_store_holds in a child process"]
async fn platform_case_in_child() {
    let (Some(dir), Some(case)) = (std::env::var_os(CHILD_DIR), std::env::var(CHILD_CASE).ok()) else {
        return;
    };
    let pki = Pki::read(Path::new(&dir));
    let (addr, _) = serve(&pki);
    let result = match case.as_str() {
        "extra-root" => relay_version(&localhost(addr), options(TrustRoots::Platform, &[&pki.ca_pem])).await,
        _ => relay_version(&localhost(addr), options(TrustRoots::Platform, &[])).await,
    };
    match (case.as_str(), result) {
        ("trusted" | "extra-root", Ok(version)) => assert_eq!(version, "tls-test"),
        ("untrusted", Err(ClientError::UntrustedCertificate(reason))) => {
            assert!(
                reason.contains("is not trusted by the platform's trust store"),
                "{reason}"
            );
            assert!(reason.contains("UnknownIssuer"), "{reason}");
        }
        // The machine's own store, which cannot hold a CA made a moment ago (or there is
        // no store at all, and so no platform verifier).
        ("system", Err(ClientError::UntrustedCertificate(reason))) => {
            assert!(reason.contains("is not trusted"), "{reason}")
        }
        ("system", Err(ClientError::Endpoint { reason, .. })) => {
            assert!(reason.contains("platform verifier is unavailable"), "{reason}")
        }
        (case, other) => panic!("case {case}: {other:?}"),
    }
}
