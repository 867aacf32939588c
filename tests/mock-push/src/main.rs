//! `mock-push`: serves a mock APNs (production and sandbox) and a mock FCM on fixed ports,
//! writing the credentials a relay needs into a directory, for demos and benchmarks.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tidings_mock_push::{
    ApnsKey, ApnsMockConfig, FcmMockConfig, MockApns, MockFcm, ServiceAccount, TlsIdentity, Transport,
};

/// Mock APNs and FCM servers for local demos.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Port of the mock APNs production endpoint (0: any free port).
    #[arg(long, default_value_t = 0)]
    apns_port: u16,
    /// Port of the mock APNs sandbox endpoint (0: any free port).
    #[arg(long, default_value_t = 0)]
    apns_sandbox_port: u16,
    /// Port of the mock FCM endpoint, which also serves `/token` (0: any free port).
    #[arg(long, default_value_t = 0)]
    fcm_port: u16,
    /// Serve cleartext HTTP/2 (h2c) instead of TLS.
    #[arg(long)]
    plain: bool,
    /// Directory to write `AuthKey_<key id>.p8`, `service-account.json` and `ca.pem` into.
    #[arg(long, default_value = "./mock-push")]
    dir: PathBuf,
    /// Host name clients use to reach the mocks (in the certificate and the `token_uri`).
    #[arg(long, default_value = "127.0.0.1")]
    public_host: String,
    /// APNs topic (the app's bundle id) the mock accepts.
    #[arg(long, default_value = "com.example.messenger")]
    topic: String,
    /// APNs key id.
    #[arg(long, default_value = "ABC123DEFG")]
    key_id: String,
    /// APNs team id.
    #[arg(long, default_value = "TEAM123456")]
    team_id: String,
    /// Firebase project id.
    #[arg(long, default_value = "tidings-demo")]
    project: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let transport = if args.plain {
        Transport::H2c
    } else {
        Transport::Tls
    };
    let scheme = if args.plain { "http" } else { "https" };
    let tls = Arc::new(TlsIdentity::generate(std::slice::from_ref(&args.public_host))?);

    let key = ApnsKey::generate(&args.key_id, &args.team_id);
    let mut apns_config = ApnsMockConfig::new(&key, &args.topic, transport);
    apns_config.tls = Some(tls.clone());
    apns_config.bind = SocketAddr::new(args.bind, args.apns_port);
    let apns = MockApns::start(apns_config.clone())
        .await
        .context("starting mock APNs")?;
    apns_config.bind = SocketAddr::new(args.bind, args.apns_sandbox_port);
    let sandbox = MockApns::start(apns_config)
        .await
        .context("starting mock APNs sandbox")?;

    let mut account = ServiceAccount::generate(&args.project);
    let mut fcm_config = FcmMockConfig::new(&account, transport);
    fcm_config.tls = Some(tls.clone());
    fcm_config.bind = SocketAddr::new(args.bind, args.fcm_port);
    fcm_config.public_host = Some(args.public_host.clone());
    let fcm = MockFcm::start(fcm_config).await.context("starting mock FCM")?;
    account.token_uri = fcm.token_uri();

    let key_path = key.write_p8(&args.dir)?;
    let account_path = account.write_json(&args.dir)?;
    let ca_path = args.dir.join("ca.pem");
    std::fs::write(&ca_path, tls.ca_pem())?;

    let public = |port: u16| format!("{scheme}://{}:{port}", args.public_host);
    println!("mock APNs          {}", public(apns.addr().port()));
    println!("mock APNs sandbox  {}", public(sandbox.addr().port()));
    println!("mock FCM           {}", public(fcm.addr().port()));
    println!(
        "APNs key           {} (key id {}, team {})",
        key_path.display(),
        key.key_id,
        key.team_id
    );
    println!("service account    {}", account_path.display());
    println!("CA certificate     {}", ca_path.display());

    tokio::signal::ctrl_c().await?;
    println!(
        "delivered: APNs {}, APNs sandbox {}, FCM {}",
        apns.delivered().len(),
        sandbox.delivered().len(),
        fcm.delivered().len()
    );
    apns.shutdown().await;
    sandbox.shutdown().await;
    fcm.shutdown().await;
    Ok(())
}
