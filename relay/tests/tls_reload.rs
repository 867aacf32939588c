//! TLS on the gRPC listener and its reload: a relay started on one self-signed
//! certificate serves a second one to new connections after `reload_tls` (in-process)
//! or SIGHUP (the binary); connections made before keep working; a bad file on reload
//! keeps the current certificate.

// Test code: a failed unwrap is a failed test with its line.
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use rustls_pki_types::{CertificateDer, ServerName};
use support::{relay_command, spawn_announced, within};
use tidings_proto::v1::{GetRelayInfoRequest, relay_client::RelayClient};
use tidings_relay::{
    config::Config,
    server::{self, ServerError},
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

/// A self-signed certificate for `localhost`: (certificate PEM, key PEM, certificate DER).
struct SelfSigned {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

fn self_signed() -> SelfSigned {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    SelfSigned {
        cert_pem: ck.cert.pem(),
        key_pem: ck.signing_key.serialize_pem(),
        der: ck.cert.der().clone(),
    }
}

struct Files {
    cert: PathBuf,
    key: PathBuf,
}

impl Files {
    fn new(dir: &Path) -> Files {
        Files {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }

    fn write(&self, pair: &SelfSigned) {
        std::fs::write(&self.cert, &pair.cert_pem).unwrap();
        std::fs::write(&self.key, &pair.key_pem).unwrap();
    }
}

/// Handshakes with `addr` trusting only `trusted`, and returns the certificate the
/// server presented; `None` if the handshake failed.
async fn presented(addr: SocketAddr, trusted: &SelfSigned) -> Option<CertificateDer<'static>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.der.clone()).unwrap();
    let mut config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .ok()?;
    let (_, conn) = tls.get_ref();
    assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]), "gRPC needs HTTP/2");
    conn.peer_certificates().and_then(|c| c.first()).cloned()
}

/// A gRPC channel over TLS trusting only `trusted`.
async fn channel(addr: SocketAddr, trusted: &SelfSigned) -> Channel {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&trusted.cert_pem))
        .domain_name("localhost");
    let endpoint = Channel::from_shared(format!("https://localhost:{}", addr.port()))
        .unwrap()
        .tls_config(tls)
        .unwrap();
    within("TLS connect", endpoint.connect()).await.unwrap()
}

async fn relay_info(channel: &Channel) -> Result<(), tonic::Status> {
    RelayClient::new(channel.clone())
        .get_relay_info(GetRelayInfoRequest {})
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_tls_serves_the_new_certificate_to_new_connections_only() {
    let dir = tempfile::tempdir().unwrap();
    let files = Files::new(dir.path());
    let (first, second) = (self_signed(), self_signed());
    files.write(&first);
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("data"),
        tls_cert: Some(files.cert.clone()),
        tls_key: Some(files.key.clone()),
        ..Config::default()
    };
    let relay = within("start", server::start(config)).await.unwrap();
    let addr = relay.grpc_addr();

    let old = channel(addr, &first).await;
    relay_info(&old).await.expect("gRPC over TLS");
    assert_eq!(presented(addr, &first).await, Some(first.der.clone()));

    files.write(&second);
    relay.reload_tls().await.expect("reloaded");
    assert_eq!(presented(addr, &second).await, Some(second.der.clone()));
    assert_eq!(presented(addr, &first).await, None, "the old certificate is gone");
    relay_info(&channel(addr, &second).await)
        .await
        .expect("gRPC on the new certificate");
    // The connection made before the reload trusts only the first certificate: it still
    // works, so it is the same connection, untouched.
    relay_info(&old).await.expect("the old connection still serves");

    // A certificate file that is not PEM: refused, the current pair stays.
    std::fs::write(&files.cert, "not a certificate").unwrap();
    assert!(matches!(relay.reload_tls().await, Err(ServerError::Tls(_))));
    assert_eq!(presented(addr, &second).await, Some(second.der.clone()));
    // A certificate with somebody else's key: refused too.
    let third = self_signed();
    std::fs::write(&files.cert, &third.cert_pem).unwrap();
    assert!(matches!(relay.reload_tls().await, Err(ServerError::Tls(_))));
    // A missing key file.
    std::fs::remove_file(&files.key).unwrap();
    assert!(matches!(relay.reload_tls().await, Err(ServerError::Tls(_))));
    assert_eq!(presented(addr, &second).await, Some(second.der.clone()));

    within("shutdown", relay.shutdown()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_tls_without_tls_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("data"),
        ..Config::default()
    };
    let relay = within("start", server::start(config)).await.unwrap();
    assert!(matches!(relay.reload_tls().await, Err(ServerError::NoTls)));
    within("shutdown", relay.shutdown()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reloads_its_certificate_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let files = Files::new(dir.path());
    let (first, second) = (self_signed(), self_signed());
    files.write(&first);
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
             tls_cert = {:?}\ntls_key = {:?}\n",
            files.cert, files.key
        ),
    )
    .unwrap();
    let log = dir.path().join("relay.log");
    let mut cmd = relay_command(&["serve", "--config", config.to_str().unwrap()], "info");
    cmd.current_dir(dir.path());
    let log_file = std::fs::File::create(&log).unwrap();
    let (mut child, announced) = spawn_announced(&mut cmd, log_file, &log).await;
    let addr = announced.grpc;
    assert_eq!(presented(addr, &first).await, Some(first.der.clone()));

    files.write(&second);
    support::signal(&child, libc::SIGHUP);
    // The signal is handled asynchronously: wait until new connections see the change.
    within("the new certificate is served", async {
        while presented(addr, &second).await.is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("TLS certificate reloaded"),
        "the reload is logged"
    );

    support::signal(&child, libc::SIGTERM);
    let status = within("exit", child.wait()).await.unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "log: {}",
        std::fs::read_to_string(&log).unwrap()
    );
}
