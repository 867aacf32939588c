//! `tidings-bench push-profile`: where each end-to-end push's instructions go (issue 17).
//!
//! Timings on a shared 2-core machine move by ±10 % between runs; instruction counts
//! under `valgrind --tool=callgrind` repeat for the same binary and input, so a change to
//! the push path shows as a difference of a few per cent here where a throughput figure
//! could not show it. The relay binary runs under callgrind with instrumentation off; the
//! providers are started, devices subscribed and a warm-up phase pushed (connections, OAuth
//! token, caches) before instrumentation is switched on (`callgrind_control -i on`) for one
//! phase of `--count` Stores, each to one device; once every push has arrived, the counts
//! are dumped (`callgrind_control -d`) and read back with `callgrind_annotate --inclusive`.
//!
//! The report gives the relay's instructions per end-to-end push, in all and by stage
//! ([`STAGES`]): the inclusive count of the functions that make up each stage, summed and
//! divided by the pushes delivered. Stages are matched by symbol name, and async code
//! runs wherever a task is polled, so a stage is "the instructions spent inside these
//! functions", not a wall-clock span; their sum need not be the total (the runtime, the
//! kernel boundary and allocator calls made outside any stage are the rest). The
//! exactly-once check of the ordinary push bench runs on the profiled phase too.
//!
//! `scripts/push-profile.sh` runs it at its usual size; the output format is described in
//! README.md, "Where a push's CPU goes".

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, bail};

use super::{
    environment_notes,
    load::Limit,
    pool::Pool,
    push::{self, PushArgs},
    relay::Relay,
    report::Report,
};

/// One stage of a push and the functions (demangled symbol prefixes) whose inclusive
/// instruction counts make it up.
pub struct Stage {
    /// The stage's key in the report.
    pub key: &'static str,
    /// What it covers.
    pub label: &'static str,
    /// A function counts if its name starts with one of these. Each is an entry point of
    /// its stage: none may call another one (that would count the callee twice).
    pub entries: &'static [&'static str],
    /// Functions called inside `entries` that belong to a later stage, subtracted.
    pub minus: &'static [&'static str],
}

/// The stages of an end-to-end push, in the order a push passes them. The names are the
/// relay's own functions and those of the libraries it calls them through (hyper, h2,
/// tokio); a rename shows as a stage falling to zero, which the scenario refuses.
pub const STAGES: &[Stage] = &[
    Stage {
        key: "grpc",
        label: "gRPC Store: HTTP/2 server, decode, validation, answer",
        // The connection task reads and writes frames; each request runs as its own stream
        // task. Both are spawned futures (polled through the task harness), so neither is
        // ever inlined away, as hyper's `Server::poll` inside the connection task can be.
        entries: &[
            "tonic::transport::server::serve_connection::",
            "<hyper::proto::h2::server::H2Stream<",
        ],
        minus: &[],
    },
    Stage {
        key: "store_write",
        label: "store writer: message, fan-out to push jobs, commit, log sync",
        entries: &["tidings_relay::store::redb::writer::Writer::run"],
        minus: &["tidings_relay::store::redb::ops::finish_job"],
    },
    Stage {
        key: "claim",
        label: "outbox claim: due jobs read and opened",
        entries: &["tidings_relay::store::redb::ops::due_jobs"],
        minus: &[],
    },
    Stage {
        key: "payload",
        label: "payload: registration opened, push encrypted",
        entries: &[
            "tidings_relay::registration::open_at_rest",
            "tidings_relay::notifier::payload::encrypt",
        ],
        minus: &[],
    },
    Stage {
        key: "provider",
        label: "provider request: JSON, HTTP/2 client, connection task, response",
        entries: &[
            "tidings_relay::notifier::payload::send_now::",
            "<hyper::proto::h2::client::H2ClientFuture<",
        ],
        minus: &["tidings_relay::notifier::payload::encrypt"],
    },
    Stage {
        key: "outcome",
        label: "outcome commit: job removed, pushed marker (writer thread)",
        entries: &["tidings_relay::store::redb::ops::finish_job"],
        minus: &[],
    },
];

/// Options of the `push-profile` scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct ProfileArgs {
    /// The push bench's options; `--count` is the number of profiled Stores.
    #[command(flatten)]
    pub push: PushArgs,
    /// Stores pushed before collection starts, to warm connections and caches.
    #[arg(long, default_value_t = 200)]
    pub warmup: u64,
    /// The valgrind binary.
    #[arg(long, default_value = "valgrind")]
    pub valgrind: PathBuf,
    /// Keep the callgrind dump here (default: in the relay's temp dir, deleted after).
    #[arg(long)]
    pub keep: Option<PathBuf>,
}

/// Runs the scenario and reports.
pub async fn run(mut args: ProfileArgs) -> anyhow::Result<Report> {
    let mut report = Report::new("push-profile");
    let load_before = super::stats::load_average();
    let count = args
        .push
        .count
        .context("--count: the number of profiled Stores is required")?;
    report.setting("count", count);
    report.setting("devices", args.push.devices);
    report.setting("clients", args.push.clients);
    report.setting("warmup", args.warmup);
    let out_dir = tempfile::Builder::new()
        .prefix("tidings-push-profile")
        .tempdir()
        .context("cannot create a temp dir for the dump")?;
    let dump_base = out_dir.path().join("callgrind.out");
    args.push.relay.wrapper = vec![
        args.valgrind.display().to_string(),
        "--tool=callgrind".into(),
        "--instr-atstart=no".into(),
        format!("--callgrind-out-file={}.%p", dump_base.display()),
    ];
    eprintln!("[push-profile] starting the mock providers and the relay under callgrind…");
    let providers = push::start_providers(&args.push).await?;
    let relay = Relay::start(&args.push.relay, &providers.config).await?;
    let pid = relay.pid().context("the profiled relay is a child process")?;
    report.note(format!("{} under {}", relay.describe(), args.valgrind.display()));
    let result = measure(&args, count, &relay, pid, &providers, &dump_base, &mut report).await;
    if result.is_err() {
        eprintln!("relay log tail:\n{}", relay.log_tail());
    }
    relay.stop().await;
    providers.shutdown().await;
    if let (Some(keep), Ok(dump)) = (&args.keep, &result) {
        std::fs::copy(dump, keep).with_context(|| format!("cannot copy the dump to {}", keep.display()))?;
        report.note(format!("callgrind dump kept at {}", keep.display()));
    }
    result?;
    environment_notes(&mut report, load_before);
    Ok(report)
}

async fn measure(
    args: &ProfileArgs,
    count: u64,
    relay: &Relay,
    pid: u32,
    providers: &push::Providers,
    dump_base: &Path,
    report: &mut Report,
) -> anyhow::Result<PathBuf> {
    let pool = Pool::connect(relay.addr, args.push.connections).await?;
    let devices = Arc::new(push::make_devices_over(
        args.push.devices.max(1),
        &args.push.services,
        providers,
    ));
    push::subscribe_all(&args.push, &pool, &devices, relay, report).await?;
    let phase_limit = |n: u64| Limit {
        count: Some(n),
        duration: Duration::from_secs(3600),
    };
    if args.warmup > 0 {
        eprintln!("[push-profile] warm-up: {} Stores…", args.warmup);
        push::push_phase(
            &args.push,
            &pool,
            &devices,
            relay,
            providers,
            phase_limit(args.warmup),
        )
        .await?;
        providers.clear();
        relay
            .settle(Duration::from_millis(500), Duration::from_secs(30))
            .await;
    }
    callgrind_control(pid, "--instr=on")?;
    eprintln!("[push-profile] profiled phase: {count} Stores…");
    let phase = push::push_phase(&args.push, &pool, &devices, relay, providers, phase_limit(count)).await?;
    // The pushes have all arrived, but their outcomes are committed after the receipt:
    // let the relay finish them, so they are inside the dump.
    relay
        .settle(Duration::from_millis(500), Duration::from_secs(30))
        .await;
    callgrind_control(pid, "--dump=profiled")?;
    callgrind_control(pid, "--instr=off")?;
    push::check_matched(report, "profiled phase", &phase.matched, phase.acked);
    let dump = first_dump(dump_base, pid).await?;
    let costs = annotate(&dump)?;
    report_costs(report, &costs, phase.matched.delivered as u64);
    Ok(dump)
}

fn callgrind_control(pid: u32, what: &str) -> anyhow::Result<()> {
    run_tool(Command::new("callgrind_control").arg(what).arg(pid.to_string())).map(drop)
}

/// Runs one of valgrind's tools and answers its standard output; a failure says what the
/// tool printed on standard error.
fn run_tool(command: &mut Command) -> anyhow::Result<String> {
    let tool = command.get_program().to_string_lossy().into_owned();
    let out = command
        .output()
        .with_context(|| format!("cannot run {tool} (valgrind's tools)"))?;
    if !out.status.success() {
        bail!("{tool} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The dump `callgrind_control -d` wrote: `<base>.<pid>.1`.
async fn first_dump(base: &Path, pid: u32) -> anyhow::Result<PathBuf> {
    let dump = PathBuf::from(format!("{}.{pid}.1", base.display()));
    // The dump is written by the relay's process after the command returns.
    for _ in 0..100 {
        if dump.exists() {
            return Ok(dump);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("callgrind wrote no dump at {}", dump.display())
}

/// Instruction counts of a dump: the total, and the inclusive count of every function.
#[derive(Debug, Default, PartialEq)]
pub struct Costs {
    /// Every instruction collected.
    pub total: u64,
    /// Demangled function name → inclusive instructions.
    pub inclusive: BTreeMap<String, u64>,
    /// Demangled function name → exclusive (self) instructions.
    pub exclusive: BTreeMap<String, u64>,
}

fn annotate(dump: &Path) -> anyhow::Result<Costs> {
    let run = |inclusive: bool| {
        run_tool(
            Command::new("callgrind_annotate")
                .arg(format!("--inclusive={}", if inclusive { "yes" } else { "no" }))
                .arg("--threshold=100")
                .arg(dump),
        )
    };
    let inclusive = run(true)?;
    let exclusive = run(false)?;
    let (total, inclusive) = parse_annotate(&inclusive);
    let (_, exclusive) = parse_annotate(&exclusive);
    Ok(Costs {
        total,
        inclusive,
        exclusive,
    })
}

/// Reads `callgrind_annotate` output: `PROGRAM TOTALS` and the lines
/// `  1,234 (12.34%)  file:function [object]` (the object part optional). A function listed
/// more than once (one entry per file it was found in) is summed.
pub fn parse_annotate(text: &str) -> (u64, BTreeMap<String, u64>) {
    let mut total = 0;
    let mut costs = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        let Some((count, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(count) = count.replace(',', "").parse::<u64>() else {
            continue;
        };
        let rest = rest.trim_start();
        // "(12.34%)" comes before the name in annotate 3.19; older versions omit it.
        let rest = match rest.strip_prefix('(') {
            Some(r) => r.split_once(')').map_or(r, |(_, after)| after).trim_start(),
            None => rest,
        };
        if rest.starts_with("PROGRAM TOTALS") {
            total = count;
            continue;
        }
        let Some((_file, function)) = rest.split_once(':') else {
            continue;
        };
        let function = match function.rfind(" [") {
            Some(at) if function.ends_with(']') => &function[..at],
            _ => function,
        };
        *costs.entry(function.to_owned()).or_insert(0) += count;
    }
    (total, costs)
}

/// The inclusive instructions of a stage: the sum over the functions its entries name.
/// The inclusive instructions of a stage: the sum over the functions its entries name,
/// less those of its `minus` functions (never below zero).
pub fn stage_cost(stage: &Stage, inclusive: &BTreeMap<String, u64>) -> u64 {
    let sum = |prefixes: &[&str]| -> u64 {
        inclusive
            .iter()
            .filter(|(name, _)| prefixes.iter().any(|p| name.starts_with(p)))
            .map(|(_, c)| c)
            .sum()
    };
    sum(stage.entries).saturating_sub(sum(stage.minus))
}

fn report_costs(report: &mut Report, costs: &Costs, pushes: u64) {
    let per_push = |n: u64| n as f64 / pushes.max(1) as f64;
    report.metric(
        "instructions_per_push",
        "relay instructions per end-to-end push (callgrind, all threads)",
        per_push(costs.total),
        "instr",
        None,
    );
    let mut staged = 0;
    for stage in STAGES {
        let cost = stage_cost(stage, &costs.inclusive);
        staged += cost;
        report.metric(
            &format!("instructions_per_push_{}", stage.key),
            &format!("… {}", stage.label),
            per_push(cost),
            "instr",
            None,
        );
        report.check(
            &format!("stage {} found in the profile", stage.key),
            cost > 0,
            if cost > 0 {
                "its functions ran".to_owned()
            } else {
                format!("no function named {:?} ran: renamed?", stage.entries)
            },
        );
    }
    report.metric(
        "instructions_per_push_rest",
        "… the rest (runtime, timers, allocator and syscalls outside every stage)",
        per_push(costs.total.saturating_sub(staged)),
        "instr",
        None,
    );
    let mut top: Vec<(&String, &u64)> = costs.exclusive.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1));
    let lines: Vec<String> = top
        .iter()
        .take(15)
        .map(|(name, n)| format!("{:.0} {}", per_push(**n), short(name)))
        .collect();
    report.note(format!(
        "top functions by own instructions per push: {}",
        lines.join("; ")
    ));
}

/// A symbol without its generic arguments, for the report.
fn short(name: &str) -> String {
    // `<A as B>::f` names say which impl: keep them whole.
    if name.starts_with('<') {
        return name.to_owned();
    }
    let mut out = String::new();
    let mut depth = 0usize;
    for ch in name.chars() {
        match ch {
            '<' => {
                if depth == 0 && !out.is_empty() && !out.ends_with("::") {
                    out.push_str("<…>");
                }
                depth += 1;
            }
            '>' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(ch),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
--------------------------------------------------------------------------------
Ir
--------------------------------------------------------------------------------
1,000,000 (100.0%)  PROGRAM TOTALS

--------------------------------------------------------------------------------
Ir                 file:function
--------------------------------------------------------------------------------
  600,000 (60.00%)  ???:tidings_relay::push::fcm::Fcm::send::{{closure}} [/x/tidings-relay]
  250,000 (25.00%)  ???:tidings_relay::notifier::payload::seal [/x/tidings-relay]
   50,000 ( 5.00%)  /rustc/abc/library/core/src/ptr/mod.rs:tidings_relay::push::fcm::Fcm::send::{{closure}} [/x/tidings-relay]
    1,000 ( 0.10%)  ???:memcpy
";

    #[test]
    fn annotate_output_is_read_with_totals_and_summed_duplicates() {
        let (total, costs) = parse_annotate(SAMPLE);
        assert_eq!(total, 1_000_000);
        assert_eq!(costs["tidings_relay::push::fcm::Fcm::send::{{closure}}"], 650_000);
        assert_eq!(costs["tidings_relay::notifier::payload::seal"], 250_000);
        assert_eq!(costs["memcpy"], 1_000);
        assert_eq!(costs.len(), 3);
    }

    #[test]
    fn a_stage_sums_its_entries_less_what_belongs_to_a_later_stage() {
        let costs: BTreeMap<String, u64> = [
            ("tidings_relay::notifier::payload::send_now::{{closure}}", 900),
            ("tidings_relay::notifier::payload::encrypt", 150),
            (
                "<hyper::proto::h2::client::H2ClientFuture<B,T,E> as core::future::Future>::poll",
                300,
            ),
            ("tidings_relay::registration::open_at_rest", 50),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let stage = |key: &str| STAGES.iter().find(|s| s.key == key).expect("stage");
        assert_eq!(stage_cost(stage("provider"), &costs), 900 + 300 - 150);
        assert_eq!(stage_cost(stage("payload"), &costs), 150 + 50);
        assert_eq!(stage_cost(stage("claim"), &costs), 0);
    }

    #[test]
    fn symbols_are_shortened_without_generics() {
        assert_eq!(
            short("<tidings_proto::v1::mailbox_server::MailboxServer<T> as tower_service::Service<X>>::call"),
            "<tidings_proto::v1::mailbox_server::MailboxServer<T> as tower_service::Service<X>>::call"
        );
        assert_eq!(
            short("hashbrown::map::HashMap<K,V>::insert"),
            "hashbrown::map::HashMap<…>::insert"
        );
    }
}
