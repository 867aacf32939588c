//! `tidings-bench scaleout`: the scale-out figures of issue 6, in one run so their ratios
//! mean something on a noisy machine — acknowledged Stores/s and end-to-end pushes/s on
//! one node with the embedded store, one node on PostgreSQL and two nodes on PostgreSQL
//! (clients spread over both), each as a ratio to the embedded store; and the long-poll
//! wake latency across nodes (waiters parked on node A, each woken by a Store through
//! node B, which reaches A through PostgreSQL's LISTEN/NOTIFY).
//!
//! It reuses the `mailbox` Store phase and the `push` subscribe and throughput phases,
//! against fresh relays (the built binary), fresh mock providers and, for PostgreSQL, a
//! fresh schema per setup (`TIDINGS_TEST_POSTGRES_URL`, default the local server).
//!
//! Around each phase it reads the CPU time of every process (each relay node, PostgreSQL,
//! the mocks, the load generator: see [`capacity`]) and reports it per acknowledged Store
//! and per push; from the one-node and two-node figures it predicts what N nodes in front
//! of one PostgreSQL primary would reach with a core per process, and what saturates
//! first. The mocks run on a runtime of their own so that their CPU time is their own.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use ed25519_dalek::SigningKey;
use tidings_relay::store::postgres::testing::TestSchema;

use super::{
    capacity::{self, PerOp},
    environment_notes,
    load::Limit,
    mailbox::{self, MailboxArgs},
    pool::Pool,
    push::{self, PushArgs},
    relay::{Relay, RelayArgs},
    report::Report,
};

/// Options of the `scaleout` scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct ScaleoutArgs {
    /// Where the relays come from.
    #[command(flatten)]
    pub relay: RelayArgs,
    /// Concurrent clients of the Store and push phases.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// HTTP/2 connections those clients share (spread over the nodes).
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Seconds of each setup's Store phase.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Bytes per stored message.
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// Mailboxes the Store phase spreads over.
    #[arg(long, default_value_t = 1000)]
    pub accounts: usize,
    /// Subscribed devices of each setup's push phase (one account each, half APNs, half FCM).
    #[arg(long, default_value_t = 2000)]
    pub devices: usize,
    /// Messages of each setup's push phase.
    #[arg(long, default_value_t = 4000)]
    pub pushes: u64,
    /// The relays' `[push] concurrency` (default: the relay's own default).
    #[arg(long)]
    pub push_concurrency: Option<u32>,
    /// Long-polls parked on node A for the cross-node wake latency (0 skips it).
    #[arg(long, default_value_t = 500)]
    pub waiters: usize,
    /// Longest wait for a push phase's pushes to arrive, in seconds.
    #[arg(long, default_value_t = 120.0)]
    pub drain_timeout: f64,
}

/// One deployment shape under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    Embedded,
    Postgres { nodes: usize },
}

impl Setup {
    const ALL: [Setup; 3] = [
        Setup::Embedded,
        Setup::Postgres { nodes: 1 },
        Setup::Postgres { nodes: 2 },
    ];

    fn key(self) -> String {
        match self {
            Setup::Embedded => "embedded_1node".to_owned(),
            Setup::Postgres { nodes: 1 } => "postgres_1node".to_owned(),
            Setup::Postgres { nodes } => format!("postgres_{nodes}nodes"),
        }
    }

    fn label(self) -> String {
        match self {
            Setup::Embedded => "1 node, embedded store".to_owned(),
            Setup::Postgres { nodes: 1 } => "1 node, PostgreSQL".to_owned(),
            Setup::Postgres { nodes } => format!("{nodes} nodes, PostgreSQL"),
        }
    }

    fn nodes(self) -> usize {
        match self {
            Setup::Embedded => 1,
            Setup::Postgres { nodes } => nodes,
        }
    }
}

/// What one setup measured.
struct Figures {
    stores_per_s: f64,
    pushes_per_s: f64,
    /// CPU per acknowledged Store and per push of each process.
    per_store: PerOp,
    per_push: PerOp,
}

/// Runs the scenario and reports.
pub async fn run(args: ScaleoutArgs) -> anyhow::Result<Report> {
    let mut report = Report::new("scaleout");
    let load_before = super::stats::load_average();
    settings(&mut report, &args);
    let mut figures = Vec::new();
    for setup in Setup::ALL {
        eprintln!("[scaleout] {}…", setup.label());
        figures.push((setup, run_setup(&args, setup, &mut report).await?));
    }
    let Some((_, base)) = figures.first() else {
        anyhow::bail!("no setup ran");
    };
    let (base_stores, base_pushes) = (base.stores_per_s, base.pushes_per_s);
    for (setup, f) in &figures[1..] {
        report.metric(
            &format!("stores_ratio_{}", setup.key()),
            &format!("Stores/s, {} ÷ embedded", setup.label()),
            f.stores_per_s / base_stores.max(1e-9),
            "×",
            None,
        );
        report.metric(
            &format!("pushes_ratio_{}", setup.key()),
            &format!("pushes/s, {} ÷ embedded", setup.label()),
            f.pushes_per_s / base_pushes.max(1e-9),
            "×",
            None,
        );
    }
    let per_setup = |nodes: usize| {
        figures
            .iter()
            .find(|(s, _)| *s == Setup::Postgres { nodes })
            .map(|(_, f)| f)
    };
    if let (Some(one), Some(two)) = (per_setup(1), per_setup(2)) {
        capacity::model(&mut report, "store", &one.per_store, &two.per_store);
        capacity::model(&mut report, "push", &one.per_push, &two.per_push);
    }
    report.note(
        "every relay, PostgreSQL, the mock providers and the clients share this machine's cores: \
         a second node adds processes, not hardware (the capacity model gives each its own)",
    );
    environment_notes(&mut report, load_before);
    Ok(report)
}

fn settings(report: &mut Report, args: &ScaleoutArgs) {
    report.setting("clients", args.clients);
    report.setting("connections", args.connections);
    report.setting("store_duration_s", args.duration);
    report.setting("size", args.size);
    report.setting("accounts", args.accounts);
    report.setting("devices", args.devices);
    report.setting("pushes", args.pushes);
    report.setting("waiters", args.waiters);
    if let Some(c) = args.push_concurrency {
        report.setting("push_concurrency", c);
    }
}

fn push_args(args: &ScaleoutArgs) -> PushArgs {
    PushArgs {
        relay: args.relay.clone(),
        devices: args.devices.max(1),
        services: push::default_services(),
        // A fixed number of pushes, however long they take.
        duration: 3600.0,
        count: Some(args.pushes.max(1)),
        clients: args.clients,
        connections: args.connections,
        // The push scenario's fixed-rate latency phase is not run here.
        rate: 1,
        seconds: 1.0,
        size: 64,
        want_data: true,
        push_concurrency: args.push_concurrency,
        tls: false,
        drain_timeout: args.drain_timeout,
    }
}

/// Starts the setup's relays (and schema, and providers), measures, stops everything.
async fn run_setup(args: &ScaleoutArgs, setup: Setup, report: &mut Report) -> anyhow::Result<Figures> {
    let schema = match setup {
        Setup::Embedded => None,
        Setup::Postgres { .. } => Some(
            TestSchema::create("tidings-bench scaleout")
                .await
                .context("PostgreSQL is not reachable (set TIDINGS_TEST_POSTGRES_URL)")?,
        ),
    };
    let pargs = push_args(args);
    let mocks = MockRuntime::start(pargs.clone()).await?;
    let providers = &mocks.providers;
    let storage = schema.as_ref().map_or(String::new(), |s| {
        format!(
            "[storage]\nbackend = \"postgres\"\npostgres_url = \"{}\"\n\n",
            s.url()
        )
    });
    let config = format!("{storage}{}", providers.config);
    let mut nodes = vec![Relay::start(&args.relay, &config).await?];
    for _ in 1..setup.nodes() {
        let key = nodes[0].relay_key_path();
        nodes.push(Relay::start_sharing_key(&args.relay, &config, key.as_deref()).await?);
    }
    report.note(format!(
        "{}: {} (1-minute load average at its start: {})",
        setup.label(),
        nodes.iter().map(Relay::describe).collect::<Vec<_>>().join("; "),
        super::stats::load_average().map_or("?".to_owned(), |l| format!("{l:.2}"))
    ));
    let result = measure(args, setup, &nodes, providers, report).await;
    if result.is_err() {
        for node in &nodes {
            eprintln!("relay log tail ({}):\n{}", node.describe(), node.log_tail());
        }
    }
    for node in nodes {
        node.stop().await;
    }
    mocks.shutdown().await;
    // Dropped last: the relays have let go of the schema.
    drop(schema);
    result
}

async fn measure(
    args: &ScaleoutArgs,
    setup: Setup,
    nodes: &[Relay],
    providers: &push::Providers,
    report: &mut Report,
) -> anyhow::Result<Figures> {
    let (key, label) = (setup.key(), setup.label());
    let addrs: Vec<_> = nodes.iter().map(|n| n.addr).collect();
    let pool = Pool::connect_spread(&addrs, args.connections).await?;
    // The CPU figures of the reused phases are node A's only; `capacity` reads them all.
    let node_a = &nodes[0];
    let pids: Vec<u32> = nodes.iter().filter_map(Relay::pid).collect();

    let margs = MailboxArgs {
        relay: args.relay.clone(),
        addr: None,
        clients: args.clients,
        connections: args.connections,
        count: None,
        duration: args.duration,
        size: args.size,
        accounts: args.accounts,
        retrieve_limit: 10,
        waiters: 0,
        wakes: 0,
        waiter_connections: 0,
        wait_ms: 60_000,
    };
    let accounts: Arc<Vec<SigningKey>> = Arc::new(
        (0..args.accounts.max(1))
            .map(|_| SigningKey::from_bytes(&tidings_proto::random_bytes()))
            .collect(),
    );
    let limit = Limit {
        count: None,
        duration: Duration::from_secs_f64(args.duration),
    };
    eprintln!("[scaleout] {label}: Stores for {} s…", args.duration);
    let before = capacity::sample(&pids);
    let stores = mailbox::store_phase(&pool, &accounts, &margs, limit, node_a.pid()).await;
    let store_cpu = capacity::spent(&before, &capacity::sample(&pids));
    let per_store = capacity::report_phase(report, &key, &label, "store", &store_cpu, stores.ok as f64);
    report.metric(
        &format!("stores_per_s_{key}"),
        &format!("{label}: acknowledged Stores/s"),
        stores.rate(),
        "/s",
        None,
    );
    report.latency(
        &format!("store_latency_{key}"),
        &format!("{label}: Store latency"),
        stores.latencies.summary(),
        None,
    );
    report.check(
        &format!("{label}: every Store acknowledged"),
        stores.errors == 0 && stores.ok > 0,
        super::describe_failures(stores.ok, stores.errors, stores.first_error.as_deref()),
    );

    eprintln!(
        "[scaleout] {label}: {} pushes to {} devices…",
        args.pushes, args.devices
    );
    let pargs = push_args(args);
    let devices = Arc::new(push::make_devices(pargs.devices));
    let mut phase = Report::new("push");
    push::subscribe_all(&pargs, &pool, &devices, node_a, &mut phase).await?;
    let before = capacity::sample(&pids);
    push::throughput_phase(&pargs, &pool, &devices, node_a, providers, &mut phase).await?;
    let push_cpu = capacity::spent(&before, &capacity::sample(&pids));
    // Every Store goes to one device: the checks below say whether each was pushed once.
    let per_push = capacity::report_phase(
        report,
        &key,
        &label,
        "push",
        &push_cpu,
        pargs.count.unwrap_or(1) as f64,
    );
    let pushes_per_s = phase
        .metrics
        .iter()
        .find(|m| m.key == "pushes_per_s")
        .map(|m| m.value)
        .context("the push phase reported no pushes/s")?;
    report.metric(
        &format!("pushes_per_s_{key}"),
        &format!("{label}: end-to-end pushes/s"),
        pushes_per_s,
        "/s",
        None,
    );
    for check in phase.checks {
        report.check(&format!("{label}: {}", check.what), check.ok, check.detail);
    }

    if nodes.len() >= 2 && args.waiters > 0 {
        cross_node_wakes(args, &nodes[0], &nodes[1], report).await?;
    }
    Ok(Figures {
        stores_per_s: stores.rate(),
        pushes_per_s,
        per_store,
        per_push,
    })
}

/// The mock providers on a runtime of their own, whose threads are named
/// [`capacity::MOCK_THREADS`], so that their CPU time is told from the load generator's.
struct MockRuntime {
    runtime: tokio::runtime::Runtime,
    providers: push::Providers,
}

impl MockRuntime {
    async fn start(pargs: PushArgs) -> anyhow::Result<MockRuntime> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(capacity::MOCK_THREADS)
            .enable_all()
            .build()
            .context("cannot start the mocks' runtime")?;
        let providers = runtime
            .spawn(async move { push::start_providers(&pargs).await })
            .await
            .context("the mocks' start ended abnormally")??;
        Ok(MockRuntime { runtime, providers })
    }

    async fn shutdown(self) {
        let MockRuntime { runtime, providers } = self;
        if let Err(e) = runtime.spawn(providers.shutdown()).await {
            eprintln!("[scaleout] stopping the mocks ended abnormally: {e}");
        }
        // Dropping a runtime may not block inside another one.
        runtime.shutdown_background();
    }
}

/// Parks `--waiters` long-polls on node A and wakes each with a Store through node B.
async fn cross_node_wakes(
    args: &ScaleoutArgs,
    a: &Relay,
    b: &Relay,
    report: &mut Report,
) -> anyhow::Result<()> {
    const WAIT_MS: u32 = 60_000;
    eprintln!(
        "[scaleout] parking {} long-polls on node A, waking each through node B…",
        args.waiters
    );
    let on_a = Pool::connect(a.addr, 4).await?;
    let on_b = Pool::connect(b.addr, 1).await?;
    let keys: Vec<SigningKey> = (0..args.waiters)
        .map(|_| SigningKey::from_bytes(&tidings_proto::random_bytes()))
        .collect();
    let (tasks, mut replies) = mailbox::park(&on_a, &keys, WAIT_MS);
    a.settle(Duration::from_secs(1), Duration::from_secs(20)).await;
    let parked_at = std::time::Instant::now();
    let mut wakes = mailbox::Wakes::default();
    for (i, key) in keys.iter().enumerate() {
        // Leave the polls a margin before their wait_ms ends by itself.
        if parked_at.elapsed() > Duration::from_millis(u64::from(WAIT_MS / 2)) {
            break;
        }
        let Some(rx) = replies[i].take() else { continue };
        mailbox::wake_one(&on_b, key, i, rx, &mut wakes).await;
    }
    let not_attempted = replies.iter().filter(|r| r.is_some()).count();
    for t in &tasks {
        t.abort();
    }
    let mut phase = Report::new("wake");
    mailbox::report_wakes(&mut phase, &wakes, args.waiters, 0);
    for m in phase.metrics {
        report.metric(
            &format!("cross_node_{}", m.key),
            &format!("2 nodes, waiter on A, Store via B: {}", m.label),
            m.value,
            &m.unit,
            m.target,
        );
    }
    for check in phase.checks {
        report.check(
            &format!("cross-node wake: {}", check.what),
            check.ok,
            check.detail,
        );
    }
    report.note(format!(
        "cross-node wake: {not_attempted} waiters not woken (the half of wait_ms for wakes ran out)"
    ));
    Ok(())
}
