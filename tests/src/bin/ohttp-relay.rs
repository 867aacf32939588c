//! The published OHTTP relay (crates.io `ohttp-relay` 0.0.11, by the payjoin project) as a
//! process of its own: what its own `main` does, with its configuration from the same
//! environment variables. `PORT` (it binds `0.0.0.0:PORT`; the tests reach it on
//! 127.0.0.2) and `GATEWAY_ORIGIN` (the tidings relay's OHTTP gateway, `http://host:port`;
//! requests are forwarded to its `/.well-known/ohttp-gateway`). Nothing of tidings is in
//! here: the tests need an OHTTP relay that was not written for them.

use std::str::FromStr;

use ohttp_relay::GatewayUri;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // The relay's HTTPS client needs a process-wide provider; ring is the one linked.
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let port: u16 = std::env::var("PORT")?.parse()?;
    let gateway = GatewayUri::from_str(&std::env::var("GATEWAY_ORIGIN")?)?;
    ohttp_relay::listen_tcp(port, gateway).await?.await?
}
