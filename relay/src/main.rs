//! `tidings-relay`: the relay binary.
//!
//! - `serve [--config FILE]`: run the relay (no arguments: Slow Mode on the embedded
//!   store in `./tidings-data`, gRPC on 127.0.0.1:7400). Prints
//!   `tidings-relay listening on grpc=ADDR admin=ADDR` on stdout once it serves.
//!   SIGTERM or Ctrl-C drain in-flight calls and flush storage, then exit 0. SIGHUP
//!   re-reads `tls_cert` and `tls_key` (a bad file keeps the old certificate).
//! - `keygen [--out PATH]`: write a new relay secret (never overwrites one).
//! - `check-config FILE`: validate a config file; names the first bad key.
//! - `migrate [--config FILE]`: apply pending PostgreSQL schema migrations (the relay
//!   also applies them at start; this lets an operator do it ahead of a rollout).
//! - `healthcheck [--addr ADDR] [--path PATH]`: one HTTP GET of the admin listener's
//!   health path (default 127.0.0.1:7401 `/healthz`), exit 0 on 200: for container
//!   health checks, which have no curl.

use std::{io::Write, path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tidings_relay::{
    config::{Backend, Config},
    keys, server,
    store::postgres,
};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "tidings-relay",
    version,
    about = "The tidings relay: Slow Mode mailbox and Fast Mode push"
)]
struct Cli {
    /// Log line format (the level comes from RUST_LOG, default `info`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the relay.
    Serve {
        /// TOML config file (TIDINGS_* environment variables override its top-level keys).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Write a new relay secret; refuses to overwrite an existing one.
    Keygen {
        /// Where to write it.
        #[arg(long, default_value = "./tidings-data/relay.key")]
        out: PathBuf,
    },
    /// Validate a config file and name the first bad key.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Apply pending PostgreSQL schema migrations and exit.
    Migrate {
        /// TOML config file (TIDINGS_* environment variables override its top-level keys).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Exit 0 when the relay's admin endpoint answers 200 (container HEALTHCHECKs, which
    /// then need no curl in the image).
    Healthcheck {
        /// The admin address.
        #[arg(long, default_value = "127.0.0.1:7401")]
        addr: std::net::SocketAddr,
        /// The path to ask.
        #[arg(long, default_value = "/healthz")]
        path: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let result = match cli.command {
        Command::Serve { config } => serve(config),
        Command::Keygen { out } => keygen(&out),
        Command::CheckConfig { file } => return check_config(&file),
        Command::Migrate { config } => migrate(config),
        Command::Healthcheck { addr, path } => healthcheck(addr, &path),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("tidings-relay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn serve(config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = Config::load(config_path.as_deref()).context("invalid configuration")?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let relay = server::start(config).await.context("cannot start the relay")?;
        // Listen before announcing: whoever reads the announcement may signal at once, and
        // a signal with no handler yet would kill the process without a drain.
        let mut signals = Signals::listen()?;
        announce(&relay)?;
        loop {
            tokio::select! {
                _ = signals.term.recv() => {
                    tracing::info!(signal = "SIGTERM", "shutdown requested");
                    break;
                }
                _ = signals.interrupt.recv() => {
                    tracing::info!(signal = "SIGINT", "shutdown requested");
                    break;
                }
                () = relay.stopped() => {
                    tracing::error!("the gRPC server stopped unexpectedly");
                    break;
                }
                _ = signals.hangup.recv() => reload_tls(&relay).await,
            }
        }
        relay.shutdown().await.context("unclean shutdown")
    })
}

/// SIGHUP: new TLS connections get the certificate and key now in the files. The relay
/// logs the outcome itself; a failed reload keeps serving the old certificate.
async fn reload_tls(relay: &server::RunningRelay) {
    match relay.reload_tls().await {
        Ok(()) | Err(server::ServerError::Tls(_)) => {}
        Err(server::ServerError::NoTls) => tracing::info!("SIGHUP: no TLS configured, nothing to reload"),
        Err(e) => tracing::error!("SIGHUP: TLS reload failed: {e}"),
    }
}

/// The line scripts and tests wait for: the real addresses, also when ports were 0.
fn announce(relay: &server::RunningRelay) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "tidings-relay listening on grpc={} admin={}",
        relay.grpc_addr(),
        relay.admin_addr()
    )?;
    out.flush()?;
    Ok(())
}

/// The signals `serve` acts on, registered together.
struct Signals {
    term: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn listen() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?,
            hangup: signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?,
        })
    }
}

fn migrate(config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = Config::load(config_path.as_deref()).context("invalid configuration")?;
    let url = match (config.storage.backend, &config.storage.postgres_url) {
        (Backend::Postgres, Some(url)) => url.clone(),
        _ => {
            println!("nothing to migrate: the embedded store upgrades itself when the relay opens it");
            return Ok(());
        }
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let report = runtime
        .block_on(postgres::migrate(&url))
        .context("cannot migrate the PostgreSQL schema")?;
    if report.applied.is_empty() {
        println!("PostgreSQL schema is up to date (version {})", report.version);
    } else {
        println!(
            "applied PostgreSQL schema migration(s) {:?}; schema version {}",
            report.applied, report.version
        );
    }
    Ok(())
}

fn keygen(out: &std::path::Path) -> anyhow::Result<()> {
    let keys = keys::generate(out)?;
    println!("wrote a new relay key to {}", out.display());
    println!("x25519 public key: {}", hex::encode(keys.x25519_public()));
    Ok(())
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match Config::load(Some(file)) {
        Ok(config) => {
            println!(
                "{}: OK (listen {}, admin {}, data_dir {}, {} app(s))",
                file.display(),
                config.listen,
                config.admin_listen,
                config.data_dir.display(),
                config.apps.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            ExitCode::FAILURE
        }
    }
}

/// One `GET` over HTTP/1.1 with short timeouts; fails unless the status is 200.
fn healthcheck(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<()> {
    use std::io::Read;
    let timeout = std::time::Duration::from_secs(3);
    let mut tcp = std::net::TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("cannot connect to {addr}"))?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    tcp.read_to_string(&mut answer)?;
    let status = answer.split(' ').nth(1).unwrap_or_default();
    anyhow::ensure!(status == "200", "{path} answered {status:?}");
    println!("{path}: ok");
    Ok(())
}
