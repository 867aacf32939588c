//! `mock-push`: serves a mock APNs (production and sandbox), a mock FCM, a mock Web Push
//! service and a mock Huawei Push Kit, each on its own port, writing the credentials a
//! relay needs into a directory, for demos and benchmarks.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Parser;
use tidings_mock_push::hms::HMS_TOKEN_PATH;
use tidings_mock_push::{
    ApnsKey, ApnsMockConfig, FcmMockConfig, HmsMockConfig, MockApns, MockFcm, MockHms, MockWebPush,
    ServiceAccount, TlsIdentity, Transport, VapidKeyPair, WebPushMockConfig,
};

/// What `--help` adds below the options: the files, and how a demo gets a Web Push
/// subscription.
const AFTER_HELP: &str = "\
Files written into --dir (ca.pem last, so its presence means the others are there):
  AuthKey_<key id>.p8    the APNs token-signing key         [apps.apns] key_file
  service-account.json   a Google service account whose     [apps.fcm] service_account_file
                         token_uri is the mock FCM's
  hms-client-secret      the HMS app's OAuth client secret  [apps.hms] client_secret_file
                         (app_id and client id: --hms-app-id)
  vapid.pem              a VAPID key for the demo app       [apps.webpush] vapid_key_file
                         (the mock needs none of it: it accepts any VAPID key unless a
                         subscription was made with an applicationServerKey)
  ca.pem                 the CA of every TLS listener       each ca_file, [webpush] ca_file

Web Push subscriptions: `POST /subscribe` on the Web Push port answers 201 with the W3C
PushSubscription JSON, {\"endpoint\": …, \"expirationTime\": null, \"keys\": {\"p256dh\": …,
\"auth\": …}}, for a client to register with the relay. An optional body
{\"applicationServerKey\": \"<base64url>\"} (the app's vapid_public_key from GetRelayInfo)
makes the subscription accept only pushes signed with that key. The mock keeps the
subscriber's private key and decrypts every push, as a browser would:

  curl --cacert ./mock-push/ca.pem -X POST https://127.0.0.1:<webpush port>/subscribe

The relay refuses loopback and private endpoints unless allowed: [webpush]
allow_networks = [\"127.0.0.1/32\"] (or allow_hosts = [\"<--public-host>\"]), and
allow_http = true with --plain. The mock HMS accepts any device token.";

/// Mock APNs, FCM, Web Push and Huawei Push Kit servers for local demos.
#[derive(Parser, Debug)]
#[command(version, after_help = AFTER_HELP)]
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
    /// Port of the mock Web Push service: the push resources and `POST /subscribe`
    /// (0: any free port).
    #[arg(long, default_value_t = 0)]
    webpush_port: u16,
    /// Port of the mock Huawei Push Kit, which also serves the token endpoint
    /// `/oauth2/v3/token` (0: any free port).
    #[arg(long, default_value_t = 0)]
    hms_port: u16,
    /// Serve cleartext HTTP/2 (h2c; Web Push also HTTP/1.1) instead of TLS.
    #[arg(long)]
    plain: bool,
    /// Directory to write the credentials and `ca.pem` into.
    #[arg(long, default_value = "./mock-push")]
    dir: PathBuf,
    /// Host name clients use to reach the mocks (in the certificate, the `token_uri` and
    /// every Web Push endpoint).
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
    /// The AppGallery app id (and OAuth client id) the mock HMS accepts.
    #[arg(long, default_value = "104123456")]
    hms_app_id: String,
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

    let mut webpush_config = WebPushMockConfig::new(transport);
    webpush_config.tls = Some(tls.clone());
    webpush_config.bind = SocketAddr::new(args.bind, args.webpush_port);
    webpush_config.public_host = Some(args.public_host.clone());
    webpush_config.serve_subscribe = true;
    let webpush = MockWebPush::start(webpush_config)
        .await
        .context("starting mock Web Push")?;

    let mut hms_config = HmsMockConfig::new(&args.hms_app_id, transport);
    hms_config.tls = Some(tls.clone());
    hms_config.bind = SocketAddr::new(args.bind, args.hms_port);
    let hms = MockHms::start(hms_config).await.context("starting mock HMS")?;

    let key_path = key.write_p8(&args.dir)?;
    let account_path = account.write_json(&args.dir)?;
    let secret_path = args.dir.join("hms-client-secret");
    std::fs::write(&secret_path, format!("{}\n", hms.client_secret()))?;
    let vapid = VapidKeyPair::generate();
    let vapid_path = vapid.write_pem(&args.dir)?;
    // Last: compose's health check waits for this file, so every other one exists by then.
    let ca_path = args.dir.join("ca.pem");
    std::fs::write(&ca_path, tls.ca_pem())?;

    let public = |port: u16| format!("{scheme}://{}:{port}", args.public_host);
    println!("mock APNs          {}", public(apns.addr().port()));
    println!("mock APNs sandbox  {}", public(sandbox.addr().port()));
    println!("mock FCM           {}", public(fcm.addr().port()));
    println!(
        "mock Web Push      {} (POST /subscribe for a subscription)",
        public(webpush.addr().port())
    );
    println!(
        "mock HMS           {} (token endpoint {}{HMS_TOKEN_PATH})",
        public(hms.addr().port()),
        public(hms.addr().port())
    );
    println!(
        "APNs key           {} (key id {}, team {})",
        key_path.display(),
        key.key_id,
        key.team_id
    );
    println!("service account    {}", account_path.display());
    println!(
        "HMS client secret  {} (app id {})",
        secret_path.display(),
        args.hms_app_id
    );
    println!(
        "VAPID key          {} (public key {})",
        vapid_path.display(),
        URL_SAFE_NO_PAD.encode(vapid.public_key)
    );
    println!("CA certificate     {}", ca_path.display());

    tokio::signal::ctrl_c().await?;
    println!(
        "delivered: APNs {}, APNs sandbox {}, FCM {}, Web Push {}, HMS {}",
        apns.delivered().len(),
        sandbox.delivered().len(),
        fcm.delivered().len(),
        webpush.delivered().len(),
        hms.delivered().len()
    );
    apns.shutdown().await;
    sandbox.shutdown().await;
    fcm.shutdown().await;
    webpush.shutdown().await;
    hms.shutdown().await;
    Ok(())
}
