//! `tidings-bench ohttp`: Oblivious HTTP against direct gRPC in one run (issue 13). The
//! `tidings-relay` binary with its gateway on, the published OHTTP relay (`ohttp-relay`,
//! built beside this binary) as its own process, and device-link clients both ways:
//! acknowledged Stores/s and Retrieve latency p50/p99 through OHTTP and directly, as
//! ratios, and the CPU each request costs the relay (the gateway's share is the
//! difference) and the OHTTP relay.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, bail};
use tidings_device_link::{
    client::{ClientOptions, RelayClient, RetryPolicy},
    identity::Identity,
    ohttp::OhttpSettings,
};
use tidings_tests::ohttp::{OhttpRelay, fetch_key_config};

use super::{
    data_for, describe_failures, environment_notes,
    load::{CALL_LIMIT, Limit, Outcome, closed_loop},
    relay::{Relay, RelayArgs},
    report::{Report, Target},
    stats::cpu_seconds,
};

/// TTL of bench messages.
const BENCH_TTL_MS: i64 = 10 * 60 * 1000;

/// Options of the `ohttp` scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct OhttpArgs {
    /// Where the relay comes from (a child process: its CPU is what is measured).
    #[command(flatten)]
    pub relay: RelayArgs,
    /// The `ohttp-relay` binary (default: next to this executable).
    #[arg(long)]
    pub ohttp_relay_bin: Option<PathBuf>,
    /// Concurrent clients of the Store phases.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Concurrent clients of the Retrieve (latency) phases.
    #[arg(long, default_value_t = 4)]
    pub latency_clients: usize,
    /// HTTP/2 connections the direct clients share.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Length of each phase, in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Bytes per stored message.
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// Mailboxes the phases spread over.
    #[arg(long, default_value_t = 200)]
    pub accounts: usize,
}

/// One way to the relay: its clients, and the processes whose CPU it costs.
struct Way {
    name: &'static str,
    clients: Vec<RelayClient>,
}

/// What one phase measured, with the CPU seconds of both processes.
struct Phase {
    outcome: Outcome,
    relay_cpu_s: Option<f64>,
    ohttp_relay_cpu_s: Option<f64>,
}

impl Phase {
    fn per_call_us(cpu_s: Option<f64>, ok: u64) -> Option<f64> {
        Some(cpu_s? / ok.max(1) as f64 * 1e6)
    }
}

/// Runs the scenario and reports.
pub async fn run(args: OhttpArgs) -> anyhow::Result<Report> {
    let mut report = Report::new("ohttp");
    let load_before = super::stats::load_average();
    let gateway_port = free_port()?;
    let config =
        format!("[ohttp]\nenabled = true\nlisten = \"127.0.0.1:{gateway_port}\"\nrelays = [\"127.0.0.1\"]\n");
    let relay = Relay::start(&args.relay, &config).await?;
    let gateway = SocketAddr::from((Ipv4Addr::LOCALHOST, gateway_port));
    let ohttp_bin = locate_ohttp_relay(args.ohttp_relay_bin.as_deref())?;
    let ohttp_relay = OhttpRelay::start(&ohttp_bin, gateway).await;
    settings(&mut report, &args);
    report.note(relay.describe());
    report.note(format!(
        "OHTTP relay: {} as pid {:?} at {}, forwarding to the gateway at {gateway}",
        ohttp_bin.display(),
        ohttp_relay.pid(),
        ohttp_relay.addr()
    ));
    let result = measure(&args, &relay, &ohttp_relay, gateway, &mut report).await;
    if result.is_err() {
        eprintln!("relay log tail:\n{}", relay.log_tail());
    }
    drop(ohttp_relay);
    relay.stop().await;
    result?;
    environment_notes(&mut report, load_before);
    Ok(report)
}

fn settings(report: &mut Report, args: &OhttpArgs) {
    report.setting("clients", args.clients);
    report.setting("latency_clients", args.latency_clients);
    report.setting("connections", args.connections);
    report.setting("duration_s", args.duration);
    report.setting("size", args.size);
    report.setting("accounts", args.accounts);
}

async fn measure(
    args: &OhttpArgs,
    relay: &Relay,
    ohttp_relay: &OhttpRelay,
    gateway: SocketAddr,
    report: &mut Report,
) -> anyhow::Result<()> {
    let options = ClientOptions {
        retry: RetryPolicy::no_retry(),
        rpc_timeout: CALL_LIMIT,
        ..ClientOptions::default()
    };
    let mut direct = Vec::new();
    for _ in 0..args.connections.max(1) {
        let client = RelayClient::connect_with(&format!("http://{}", relay.addr), options.clone())
            .await
            .context("direct client")?;
        direct.push(client);
    }
    let keys = fetch_key_config(gateway).await;
    let through = RelayClient::connect_with(
        &format!("http://{gateway}"),
        ClientOptions {
            ohttp: Some(OhttpSettings {
                key_config: Some(keys),
                ..OhttpSettings::new(ohttp_relay.url())
            }),
            ..options
        },
    )
    .await
    .context("OHTTP client")?;
    let ways = [
        Way {
            name: "direct",
            clients: direct,
        },
        Way {
            name: "ohttp",
            clients: vec![through],
        },
    ];
    let accounts: Arc<Vec<Identity>> =
        Arc::new((0..args.accounts.max(1)).map(|_| Identity::create()).collect());
    let limit = Limit {
        count: None,
        duration: Duration::from_secs_f64(args.duration),
    };
    // Warm both ways up (connections, pools, the gateway's key), off the clock.
    for way in &ways {
        let warm = Limit {
            count: Some(200),
            duration: Duration::from_secs(5),
        };
        store_phase(way, &accounts, args.size, args.clients, warm, relay, ohttp_relay).await;
    }

    let mut stores = Vec::new();
    for way in &ways {
        eprintln!("[ohttp] Store phase, {}: {} clients…", way.name, args.clients);
        let phase = store_phase(way, &accounts, args.size, args.clients, limit, relay, ohttp_relay).await;
        record(report, way.name, "store", "Store", &phase);
        stores.push(phase);
    }
    let mut retrieves = Vec::new();
    for way in &ways {
        eprintln!(
            "[ohttp] Retrieve phase, {}: {} clients…",
            way.name, args.latency_clients
        );
        let phase = retrieve_phase(way, &accounts, args.latency_clients, limit, relay, ohttp_relay).await;
        record(report, way.name, "retrieve", "Retrieve", &phase);
        retrieves.push(phase);
    }

    let (direct_store, ohttp_store) = (&stores[0].outcome, &stores[1].outcome);
    report.metric(
        "store_rate_ratio",
        "Stores/s through OHTTP ÷ direct",
        ohttp_store.rate() / direct_store.rate().max(1e-9),
        "×",
        Some(Target::AtLeast(0.5)),
    );
    let (d, o) = (
        retrieves[0].outcome.latencies.summary(),
        retrieves[1].outcome.latencies.summary(),
    );
    if let (Some(d), Some(o)) = (d, o) {
        report.metric(
            "retrieve_p50_ratio",
            "Retrieve p50 through OHTTP ÷ direct",
            o.p50_ms / d.p50_ms.max(1e-9),
            "×",
            None,
        );
        report.metric(
            "retrieve_p99_ratio",
            "Retrieve p99 through OHTTP ÷ direct",
            o.p99_ms / d.p99_ms.max(1e-9),
            "×",
            None,
        );
    }
    let per_call = |p: &Phase| Phase::per_call_us(p.relay_cpu_s, p.outcome.ok);
    if let (Some(direct_us), Some(ohttp_us)) = (per_call(&stores[0]), per_call(&stores[1])) {
        report.metric(
            "gateway_cpu_us_per_store",
            "relay CPU per Store through OHTTP minus direct: the gateway's own cost",
            ohttp_us - direct_us,
            "µs",
            None,
        );
    }
    if let (Some(direct_us), Some(ohttp_us)) = (per_call(&retrieves[0]), per_call(&retrieves[1])) {
        report.metric(
            "gateway_cpu_us_per_retrieve",
            "relay CPU per Retrieve through OHTTP minus direct: the gateway's own cost",
            ohttp_us - direct_us,
            "µs",
            None,
        );
    }
    Ok(())
}

fn record(report: &mut Report, way: &str, key: &str, what: &str, phase: &Phase) {
    let o = &phase.outcome;
    report.metric(
        &format!("{way}_{key}s_per_s"),
        &format!("{what}s/s, {way}"),
        o.rate(),
        "/s",
        None,
    );
    report.latency(
        &format!("{way}_{key}_latency"),
        &format!("{what} latency, {way}"),
        o.latencies.summary(),
        None,
    );
    if let Some(us) = Phase::per_call_us(phase.relay_cpu_s, o.ok) {
        report.metric(
            &format!("{way}_{key}_relay_cpu_us"),
            &format!("relay CPU per call, {what}, {way}"),
            us,
            "µs",
            None,
        );
    }
    if let Some(us) = Phase::per_call_us(phase.ohttp_relay_cpu_s, o.ok).filter(|_| way == "ohttp") {
        report.metric(
            &format!("{way}_{key}_ohttp_relay_cpu_us"),
            &format!("OHTTP relay CPU per call, {what}"),
            us,
            "µs",
            None,
        );
    }
    report.check(
        &format!("every {what} answered, {way}"),
        o.errors == 0 && o.ok > 0,
        describe_failures(o.ok, o.errors, o.first_error.as_deref()),
    );
}

async fn store_phase(
    way: &Way,
    accounts: &Arc<Vec<Identity>>,
    size: usize,
    clients: usize,
    limit: Limit,
    relay: &Relay,
    ohttp_relay: &OhttpRelay,
) -> Phase {
    let ids: Arc<Vec<[u8; 32]>> = Arc::new(accounts.iter().map(Identity::account).collect());
    let run = tidings_proto::random_bytes::<8>();
    let pool = Arc::new(way.clients.clone());
    measured(relay, ohttp_relay, async {
        closed_loop(clients, limit, relay.pid(), move |n, client| {
            let relay_client = pool[client % pool.len()].clone();
            let account = ids[n as usize % ids.len()];
            let data = data_for(n, &run, size);
            async move {
                let reply = relay_client
                    .store(&account, 0, &data, BENCH_TTL_MS)
                    .await
                    .map_err(|e| e.to_string())?;
                if reply.duplicate {
                    return Err("unexpected duplicate".into());
                }
                Ok(1)
            }
        })
        .await
    })
    .await
}

async fn retrieve_phase(
    way: &Way,
    accounts: &Arc<Vec<Identity>>,
    clients: usize,
    limit: Limit,
    relay: &Relay,
    ohttp_relay: &OhttpRelay,
) -> Phase {
    let accounts = Arc::clone(accounts);
    let pool = Arc::new(way.clients.clone());
    measured(relay, ohttp_relay, async {
        closed_loop(clients, limit, relay.pid(), move |n, client| {
            let relay_client = pool[client % pool.len()].clone();
            let accounts = Arc::clone(&accounts);
            async move {
                let owner = &accounts[n as usize % accounts.len()];
                let page = relay_client
                    .retrieve(owner, 0, 0, 10, 0)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(page.messages.len() as u64)
            }
        })
        .await
    })
    .await
}

/// Runs `phase`, with the CPU seconds the relay and the OHTTP relay spent meanwhile.
async fn measured(relay: &Relay, ohttp_relay: &OhttpRelay, phase: impl Future<Output = Outcome>) -> Phase {
    let relay0 = relay.cpu_seconds();
    let ohttp0 = ohttp_relay.pid().and_then(cpu_seconds);
    let outcome = phase.await;
    Phase {
        relay_cpu_s: relay.cpu_seconds().zip(relay0).map(|(a, b)| a - b),
        ohttp_relay_cpu_s: ohttp_relay
            .pid()
            .and_then(cpu_seconds)
            .zip(ohttp0)
            .map(|(a, b)| a - b),
        outcome,
    }
}

/// A port free on 127.0.0.1 now, for the gateway's listener.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// `--ohttp-relay-bin`, then `ohttp-relay` beside this executable (or one level up).
fn locate_ohttp_relay(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_owned());
    }
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let dir = exe.parent().context("executable without a directory")?;
    for d in [Some(dir), dir.parent()].into_iter().flatten() {
        let p = d.join("ohttp-relay");
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "no ohttp-relay binary next to {}: build it (cargo build [--release] -p tidings-tests --bin ohttp-relay) \
         or pass --ohttp-relay-bin PATH",
        dir.display()
    )
}
