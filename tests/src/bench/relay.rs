//! The relay under test: the built binary as a child process (so its memory can be read),
//! a relay already running elsewhere (`--addr`), or one inside this process.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, bail};
use tidings_relay::{config::Config, server::RunningRelay};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    task::JoinHandle,
};

use super::stats::{cpu_seconds, proc_status_bytes};

/// How long the relay may take to announce its addresses.
const START_LIMIT: Duration = Duration::from_secs(60);
/// Memory is sampled this often to catch the peak.
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Where the relay comes from (shared by every scenario).
#[derive(Debug, Clone, clap::Args)]
pub struct RelayArgs {
    /// The `tidings-relay` binary to start (default: next to this executable, or
    /// $TIDINGS_RELAY_BIN).
    #[arg(long)]
    pub relay_bin: Option<PathBuf>,
    /// Run the relay inside this process instead of as a child (no separate RSS figure).
    #[arg(long, conflicts_with = "relay_bin")]
    pub in_process: bool,
    /// Where the relay's temporary data directory is created (default: the system temp dir).
    #[arg(long)]
    pub tmp: Option<PathBuf>,
    /// A command the relay binary runs under (its program and arguments, the relay's
    /// command line appended), e.g. valgrind for `tidings-bench push-profile`; set by the
    /// scenario, not on the command line.
    #[arg(skip)]
    pub wrapper: Vec<String>,
}

/// A relay started for the run; stopped when dropped.
pub struct Relay {
    /// Its gRPC address.
    pub addr: SocketAddr,
    kind: Kind,
    rss_peak: Arc<AtomicU64>,
    sampler: Option<JoinHandle<()>>,
    /// Keeps the data dir and config alive while the relay runs.
    dir: Option<tempfile::TempDir>,
}

enum Kind {
    Child {
        child: Box<Child>,
        pid: u32,
        log: PathBuf,
    },
    InProcess(Box<RunningRelay>),
    External,
}

impl Relay {
    /// A relay someone else runs at `addr`.
    pub fn external(addr: SocketAddr) -> Self {
        Self {
            addr,
            kind: Kind::External,
            rss_peak: Arc::new(AtomicU64::new(0)),
            sampler: None,
            dir: None,
        }
    }

    /// Starts a relay with `config` (TOML, without `listen`, `admin_listen` and
    /// `data_dir`, which are chosen here), as `args` says.
    pub async fn start(args: &RelayArgs, config: &str) -> anyhow::Result<Self> {
        Self::start_sharing_key(args, config, None).await
    }

    /// Like [`Relay::start`], but with the relay secret copied from `key` first: the
    /// nodes of one deployment share it (clients seal registrations to it).
    pub async fn start_sharing_key(
        args: &RelayArgs,
        config: &str,
        key: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let mut dir = match &args.tmp {
            Some(parent) => tempfile::Builder::new()
                .prefix("tidings-bench")
                .tempdir_in(parent),
            None => tempfile::Builder::new().prefix("tidings-bench").tempdir(),
        }
        .context("cannot create a temp dir for the relay")?;
        // Inspecting the data after a failed run beats losing it.
        dir.disable_cleanup(std::env::var_os("TIDINGS_BENCH_KEEP").is_some());
        // A load generator on one host is, to the relay, one abusive client: the abuse
        // limits would measure themselves, not the relay.
        let text = format!(
            "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n{config}\n[rate_limits]\nenabled = false\n"
        );
        let config_path = dir.path().join("relay.toml");
        std::fs::write(&config_path, &text).context("cannot write the relay config")?;
        if let Some(key) = key {
            let data = dir.path().join("data");
            std::fs::create_dir_all(&data).context("cannot create the relay's data dir")?;
            std::fs::copy(key, data.join("relay.key")).context("cannot copy the relay key")?;
        }
        let mut relay = if args.in_process {
            Self::start_in_process(&text, dir.path()).await?
        } else {
            let bin = locate_relay_bin(args.relay_bin.as_deref())?;
            Self::spawn(&bin, &args.wrapper, &config_path, dir.path()).await?
        };
        relay.dir = Some(dir);
        Ok(relay)
    }

    async fn start_in_process(text: &str, dir: &Path) -> anyhow::Result<Self> {
        let config = Config::from_toml(text, dir, |_| None).context("relay config")?;
        let running = tidings_relay::server::start(config)
            .await
            .context("cannot start the in-process relay")?;
        Ok(Self {
            addr: running.grpc_addr(),
            kind: Kind::InProcess(Box::new(running)),
            rss_peak: Arc::new(AtomicU64::new(0)),
            sampler: None,
            dir: None,
        })
    }

    async fn spawn(bin: &Path, wrapper: &[String], config: &Path, dir: &Path) -> anyhow::Result<Self> {
        let log = dir.join("relay.log");
        let log_file = std::fs::File::create(&log).context("cannot create the relay log")?;
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(bin);
                cmd
            }
            None => Command::new(bin),
        };
        cmd.arg("serve")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .kill_on_drop(true)
            .env(
                "RUST_LOG",
                std::env::var("TIDINGS_BENCH_RELAY_LOG").unwrap_or_else(|_| "warn".into()),
            );
        for key in tidings_relay::config::ENV_KEYS {
            cmd.env_remove(format!("TIDINGS_{}", key.to_uppercase()));
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let pid = child.id().context("the relay exited at once")?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(START_LIMIT, lines.next_line()).await;
        let line = match line {
            Ok(Ok(Some(line))) => line,
            _ => bail!(
                "the relay did not announce its addresses; its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
        };
        // Keep draining stdout so the relay never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let addr = parse_announcement(&line)?;
        let rss_peak = Arc::new(AtomicU64::new(0));
        let sampler = tokio::spawn(sample_rss(pid, Arc::clone(&rss_peak)));
        Ok(Self {
            addr,
            kind: Kind::Child {
                child: Box::new(child),
                pid,
                log,
            },
            rss_peak,
            sampler: Some(sampler),
            dir: None,
        })
    }

    /// The relay secret of a relay this bench started (to start more nodes with it).
    pub fn relay_key_path(&self) -> Option<PathBuf> {
        Some(self.dir.as_ref()?.path().join("data").join("relay.key"))
    }

    /// The relay's process id when it is a child process.
    pub fn pid(&self) -> Option<u32> {
        match &self.kind {
            Kind::Child { pid, .. } => Some(*pid),
            _ => None,
        }
    }

    /// Where the relay runs, for the report.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Child { pid, .. } => format!("relay binary as pid {pid} at {}", self.addr),
            Kind::InProcess(_) => format!("relay inside the bench process at {}", self.addr),
            Kind::External => format!("external relay at {}", self.addr),
        }
    }

    /// Current resident memory of the relay, in bytes.
    pub fn rss(&self) -> Option<u64> {
        proc_status_bytes(self.pid()?, "VmRSS:")
    }

    /// Highest resident memory seen: the larger of the sampled peak and the kernel's
    /// high-water mark.
    pub fn rss_peak(&self) -> Option<u64> {
        let pid = self.pid()?;
        let hwm = proc_status_bytes(pid, "VmHWM:").unwrap_or(0);
        Some(hwm.max(self.rss_peak.load(Ordering::Relaxed)))
    }

    /// CPU seconds the relay used so far.
    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds(self.pid()?)
    }

    /// Waits until the relay has been idle (under 2 % of a core) for 200 ms, between
    /// `min` and `max`; a relay that is not a child just gets `min`.
    pub async fn settle(&self, min: Duration, max: Duration) {
        let started = tokio::time::Instant::now();
        tokio::time::sleep(min).await;
        let Some(mut before) = self.cpu_seconds() else {
            return;
        };
        while started.elapsed() < max {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let Some(now) = self.cpu_seconds() else { return };
            if now - before < 0.004 {
                return;
            }
            before = now;
        }
    }

    /// The tail of the relay's log, for error reports.
    pub fn log_tail(&self) -> String {
        match &self.kind {
            Kind::Child { log, .. } => {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(20)..].join("\n")
            }
            _ => String::new(),
        }
    }

    /// Stops the relay.
    pub async fn stop(mut self) {
        if let Some(s) = self.sampler.take() {
            s.abort();
        }
        match std::mem::replace(&mut self.kind, Kind::External) {
            Kind::Child { mut child, .. } => {
                // Its data is thrown away, so there is nothing to drain or flush.
                let _ = child.start_kill();
                let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
            }
            Kind::InProcess(running) => {
                let _ = tokio::time::timeout(Duration::from_secs(20), running.shutdown()).await;
            }
            Kind::External => {}
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(s) = self.sampler.take() {
            s.abort();
        }
    }
}

/// `tidings-relay listening on grpc=ADDR admin=ADDR` → the gRPC address.
fn parse_announcement(line: &str) -> anyhow::Result<SocketAddr> {
    let rest = line
        .strip_prefix("tidings-relay listening on grpc=")
        .with_context(|| format!("unexpected first line from the relay: {line:?}"))?;
    let grpc = rest.split_whitespace().next().unwrap_or(rest);
    grpc.parse().with_context(|| format!("bad address in {line:?}"))
}

/// `--relay-bin`, then `$TIDINGS_RELAY_BIN`, then `tidings-relay` beside this executable
/// (or one level up, when this runs from `target/*/deps`).
pub fn locate_relay_bin(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_owned());
    }
    if let Some(p) = std::env::var_os("TIDINGS_RELAY_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let dir = exe.parent().context("executable without a directory")?;
    let candidates = [Some(dir), dir.parent()];
    for d in candidates.into_iter().flatten() {
        let p = d.join("tidings-relay");
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "no tidings-relay binary next to {}: build it (cargo build [--release] -p tidings-relay), \
         pass --relay-bin PATH, or use --in-process",
        dir.display()
    )
}

async fn sample_rss(pid: u32, peak: Arc<AtomicU64>) {
    let mut tick = tokio::time::interval(RSS_SAMPLE_EVERY);
    loop {
        tick.tick().await;
        match proc_status_bytes(pid, "VmRSS:") {
            Some(rss) => {
                peak.fetch_max(rss, Ordering::Relaxed);
            }
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_announcement() {
        let addr =
            parse_announcement("tidings-relay listening on grpc=127.0.0.1:4242 admin=127.0.0.1:1").unwrap();
        assert_eq!(addr, "127.0.0.1:4242".parse().unwrap());
        assert!(parse_announcement("hello").is_err());
    }
}
