//! CPU time per operation of every process of a `scaleout` run, and the capacity model
//! built from it (issue 16).
//!
//! The kernel's per-process accounting (`/proc/PID/stat` utime + stime) is sampled before
//! and after each phase for:
//!
//! - each relay node (a child process);
//! - PostgreSQL: the backends serving the relays (a backend's process title names its
//!   client's port, matched against the relays' sockets) plus the server's own processes
//!   (postmaster, WAL writer, checkpointer, background writer, autovacuum); backends of
//!   other clients of the same server (other work on this machine) are left out;
//! - the mock providers, which run on their own runtime whose threads are named
//!   [`MOCK_THREADS`] (`/proc/self/task/TID/stat`);
//! - the load generator: this process minus the mocks' threads.
//!
//! From the CPU time per acknowledged Store and per push of one node and of two nodes,
//! [`model`] predicts what N relay nodes in front of one PostgreSQL primary would reach if
//! every process had a core of its own (N = 1, 2, 4, 8): the relays' share grows with N,
//! PostgreSQL's does not, and what a second node adds per operation on top of the first
//! (each node hears every other node's arrivals) is extrapolated linearly.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::time::Instant;

use super::report::{Report, Target};

/// The thread name of the mock providers' runtime.
pub const MOCK_THREADS: &str = "bench-mocks";

/// CPU seconds (user + system) of the `/proc` stat file at `path` (a process or a thread).
fn stat_seconds(path: &str) -> Option<(String, f64)> {
    let stat = std::fs::read_to_string(path).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux userspace ABI.
    Some((comm, (utime + stime) / 100.0))
}

/// The local TCP ports of every socket the processes `pids` hold.
fn local_ports(pids: &[u32]) -> HashSet<u16> {
    let mut inodes = HashSet::new();
    for pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path()) {
                let link = link.to_string_lossy();
                if let Some(inode) = link.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
                    inodes.insert(inode.to_owned());
                }
            }
        }
    }
    let mut ports = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(inode)) = (fields.get(1), fields.get(9)) else {
                continue;
            };
            if !inodes.contains(*inode) {
                continue;
            }
            if let Some(port) = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
            {
                ports.insert(port);
            }
        }
    }
    ports
}

/// Who a `postgres` process works for, from its process title.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PgRole {
    /// A backend of one of the relays, or a process of the server itself.
    Ours,
    /// A backend of some other client.
    Other,
}

/// `postgres: 15/main: user db 127.0.0.1(54321) idle` names its client's port; the
/// server's own processes (`… walwriter`, the postmaster) name none.
fn pg_role(title: &str, relay_ports: &HashSet<u16>) -> PgRole {
    if title.contains("[local]") {
        return PgRole::Other;
    }
    let client_port = title.rfind(')').and_then(|close| {
        let open = title[..close].rfind('(')?;
        title[open + 1..close].parse::<u16>().ok()
    });
    match client_port {
        Some(port) if relay_ports.contains(&port) => PgRole::Ours,
        Some(_) => PgRole::Other,
        None => PgRole::Ours,
    }
}

/// One reading of every process's CPU seconds.
#[derive(Debug, Clone)]
pub struct Sample {
    at: Instant,
    relays: Vec<f64>,
    /// pid → CPU seconds of the PostgreSQL processes counted as ours.
    postgres: HashMap<u32, f64>,
    /// The same for other clients' backends (reported, never counted).
    postgres_other: HashMap<u32, f64>,
    mocks: f64,
    process: f64,
}

/// Reads the CPU time of the relays `relay_pids`, PostgreSQL, the mocks and this process.
pub fn sample(relay_pids: &[u32]) -> Sample {
    let relays = relay_pids
        .iter()
        .map(|pid| stat_seconds(&format!("/proc/{pid}/stat")).map_or(0.0, |(_, s)| s))
        .collect();
    let ports = local_ports(relay_pids);
    let (mut postgres, mut postgres_other) = (HashMap::new(), HashMap::new());
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Some((comm, secs)) = stat_seconds(&format!("/proc/{pid}/stat")) else {
                continue;
            };
            if comm != "postgres" {
                continue;
            }
            let title = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            match pg_role(&title, &ports) {
                PgRole::Ours => postgres.insert(pid, secs),
                PgRole::Other => postgres_other.insert(pid, secs),
            };
        }
    }
    let mut mocks = 0.0;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let path = format!("{}/stat", task.path().display());
            if let Some((comm, secs)) = stat_seconds(&path)
                && comm.starts_with(MOCK_THREADS)
            {
                mocks += secs;
            }
        }
    }
    Sample {
        at: Instant::now(),
        relays,
        postgres,
        postgres_other,
        mocks,
        process: stat_seconds("/proc/self/stat").map_or(0.0, |(_, s)| s),
    }
}

/// CPU seconds each process spent between two samples.
#[derive(Debug, Clone, Default)]
pub struct Spent {
    /// Wall seconds between the samples.
    pub wall: f64,
    /// Each relay node.
    pub relays: Vec<f64>,
    /// PostgreSQL, for the relays (see the module docs).
    pub postgres: f64,
    /// PostgreSQL backends of other clients (left out of every figure).
    pub postgres_other: f64,
    /// The mock providers.
    pub mocks: f64,
    /// The load generator (this process without the mocks).
    pub bench: f64,
}

/// What the processes spent from `before` to `after`. A PostgreSQL process that started
/// in between counts from zero (all its time is the phase's); one that ended in between
/// is lost (its time went to the postmaster's children's account).
pub fn spent(before: &Sample, after: &Sample) -> Spent {
    let grown = |b: &HashMap<u32, f64>, a: &HashMap<u32, f64>| -> f64 {
        a.iter()
            .map(|(pid, s)| (s - b.get(pid).copied().unwrap_or(0.0)).max(0.0))
            .sum()
    };
    let mocks = (after.mocks - before.mocks).max(0.0);
    Spent {
        wall: after.at.duration_since(before.at).as_secs_f64(),
        relays: after
            .relays
            .iter()
            .zip(&before.relays)
            .map(|(a, b)| (a - b).max(0.0))
            .collect(),
        postgres: grown(&before.postgres, &after.postgres),
        postgres_other: grown(&before.postgres_other, &after.postgres_other),
        mocks,
        bench: (after.process - before.process - mocks).max(0.0),
    }
}

/// CPU microseconds per operation of each kind of process.
#[derive(Debug, Clone, Copy, Default)]
pub struct PerOp {
    /// All relay nodes together.
    pub relays: f64,
    pub postgres: f64,
    pub mocks: f64,
    pub bench: f64,
}

impl PerOp {
    /// `spent` over `ops` operations.
    pub fn of(spent: &Spent, ops: f64) -> PerOp {
        let us = |s: f64| s * 1e6 / ops.max(1.0);
        PerOp {
            relays: us(spent.relays.iter().sum()),
            postgres: us(spent.postgres),
            mocks: us(spent.mocks),
            bench: us(spent.bench),
        }
    }
}

/// Records the CPU figures of one phase of one setup.
pub fn report_phase(
    report: &mut Report,
    key: &str,
    label: &str,
    what: &str,
    spent: &Spent,
    ops: f64,
) -> PerOp {
    let per = PerOp::of(spent, ops);
    for (i, node) in spent.relays.iter().enumerate() {
        report.metric(
            &format!("cpu_us_per_{what}_{key}_relay{i}"),
            &format!("{label}: relay node {} CPU per {what}", i + 1),
            node * 1e6 / ops.max(1.0),
            "µs",
            None,
        );
    }
    if spent.relays.len() > 1 {
        report.metric(
            &format!("cpu_us_per_{what}_{key}_relays"),
            &format!("{label}: all relay nodes' CPU per {what}"),
            per.relays,
            "µs",
            None,
        );
    }
    let rows = [
        (
            "postgres",
            "PostgreSQL CPU (the relays' backends + server processes)",
            per.postgres,
        ),
        ("mocks", "mock providers' CPU", per.mocks),
        ("bench", "load generator's CPU", per.bench),
    ];
    for (name, what_label, value) in rows {
        if name == "postgres" && key.starts_with("embedded") {
            continue;
        }
        report.metric(
            &format!("cpu_us_per_{what}_{key}_{name}"),
            &format!("{label}: {what_label} per {what}"),
            value,
            "µs",
            None,
        );
    }
    if spent.postgres_other > 0.05 * spent.wall {
        report.note(format!(
            "{label}, {what} phase: other PostgreSQL clients used {:.2} cores meanwhile (left out)",
            spent.postgres_other / spent.wall.max(1e-9)
        ));
    }
    per
}

/// What N nodes would reach, per operation kind.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub nodes: u32,
    /// Operations per second with a core for each relay node and for PostgreSQL.
    pub rate: f64,
    /// What saturates first among the relays and PostgreSQL.
    pub limit: &'static str,
    /// The load generator's and the mocks' bound (the test rig, not the deployment).
    pub rig_rate: f64,
    pub rig_limit: &'static str,
}

/// The prediction for `nodes` nodes from the per-operation CPU of one node (`one`) and of
/// two (`two`). See the module docs.
pub fn predict(one: &PerOp, two: &PerOp, nodes: u32) -> Prediction {
    let n = f64::from(nodes);
    let relays = one.relays + (n - 1.0) * (two.relays - one.relays).max(0.0);
    let postgres = one.postgres + (n - 1.0) * (two.postgres - one.postgres).max(0.0);
    let per_core = |us: f64| 1e6 / us.max(1e-9);
    let (relay_rate, pg_rate) = (n * per_core(relays), per_core(postgres));
    let (rate, limit) = if relay_rate <= pg_rate {
        (relay_rate, "the relay nodes saturate")
    } else {
        (pg_rate, "PostgreSQL saturates")
    };
    let (bench_rate, mocks_rate) = (per_core(two.bench), per_core(two.mocks));
    let (rig_rate, rig_limit) = if bench_rate <= mocks_rate {
        (bench_rate, "load generator")
    } else {
        (mocks_rate, "mock providers")
    };
    Prediction {
        nodes,
        rate,
        limit,
        rig_rate,
        rig_limit,
    }
}

/// The smallest node count at which PostgreSQL, not the relays, is the limit.
pub fn postgres_bound_from(one: &PerOp, two: &PerOp) -> Option<u32> {
    (1..=256).find(|&n| predict(one, two, n).limit == "PostgreSQL saturates")
}

/// Reports the model for one operation kind (`what`: "store" or "push").
pub fn model(report: &mut Report, what: &str, one: &PerOp, two: &PerOp) {
    let whats = if what.ends_with('h') {
        format!("{what}es")
    } else {
        format!("{what}s")
    };
    let mut text = format!(
        "capacity model, {whats} (a core for each relay node and for PostgreSQL; per op: \
         1 node {:.0} µs relay + {:.0} µs PostgreSQL, 2 nodes {:.0} µs relays + {:.0} µs PostgreSQL):",
        one.relays, one.postgres, two.relays, two.postgres
    );
    let base = predict(one, two, 1).rate;
    for nodes in [1, 2, 4, 8] {
        let p = predict(one, two, nodes);
        let _ = write!(
            text,
            " {nodes} node{}: {:.0}/s ({:.2}×, {} first);",
            if nodes == 1 { "" } else { "s" },
            p.rate,
            p.rate / base.max(1e-9),
            p.limit
        );
        report.metric(
            &format!("model_{whats}_per_s_{nodes}nodes"),
            &format!("model: {whats}/s, {nodes} relay node(s) + 1 PostgreSQL primary, a core each"),
            p.rate,
            "/s",
            None,
        );
    }
    let two_nodes = predict(one, two, 2).rate / base.max(1e-9);
    report.metric(
        &format!("model_{whats}_2nodes_ratio"),
        &format!("model: {whats}/s, 2 nodes ÷ 1 node (a core each)"),
        two_nodes,
        "×",
        Some(Target::AtLeast(1.8)),
    );
    match postgres_bound_from(one, two) {
        Some(n) => {
            let _ = write!(text, " PostgreSQL's core is the limit from {n} nodes on;");
        }
        None => text.push_str(" PostgreSQL's core is not the limit up to 256 nodes;"),
    }
    let rig = predict(one, two, 1);
    let _ = write!(
        text,
        " the test rig itself ({}) saturates a core at {:.0} {whats}/s",
        rig.rig_limit, rig.rig_rate
    );
    report.note(text);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_are_told_apart_by_their_client_port() {
        let ours = HashSet::from([54321u16]);
        assert_eq!(
            pg_role(
                "postgres: 15/main: postgres postgres 127.0.0.1(54321) idle",
                &ours
            ),
            PgRole::Ours
        );
        assert_eq!(
            pg_role(
                "postgres: 15/main: postgres postgres 127.0.0.1(1234) INSERT",
                &ours
            ),
            PgRole::Other
        );
        assert_eq!(
            pg_role("postgres: 15/main: postgres postgres [local] idle", &ours),
            PgRole::Other
        );
        assert_eq!(pg_role("postgres: 15/main: walwriter ", &ours), PgRole::Ours);
        assert_eq!(
            pg_role(
                "/usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql/15/main",
                &ours
            ),
            PgRole::Ours
        );
    }

    #[test]
    fn this_process_is_sampled() {
        let s = sample(&[std::process::id()]);
        assert_eq!(s.relays.len(), 1);
        assert!(s.process >= s.mocks);
        let later = sample(&[std::process::id()]);
        let d = spent(&s, &later);
        assert!(d.wall >= 0.0 && d.bench >= 0.0);
    }

    #[test]
    fn the_model_scales_relays_until_postgres_binds() {
        let one = PerOp {
            relays: 100.0,
            postgres: 25.0,
            mocks: 5.0,
            bench: 20.0,
        };
        let two = PerOp { relays: 110.0, ..one };
        let p1 = predict(&one, &two, 1);
        assert_eq!(p1.limit, "the relay nodes saturate");
        assert!((p1.rate - 10_000.0).abs() < 1e-6);
        let p2 = predict(&one, &two, 2);
        assert!((p2.rate - 2.0 * 1e6 / 110.0).abs() < 1e-6);
        let p8 = predict(&one, &two, 8);
        assert_eq!(p8.limit, "PostgreSQL saturates");
        assert!((p8.rate - 40_000.0).abs() < 1e-6);
        assert_eq!(postgres_bound_from(&one, &two), Some(7));
        assert_eq!(p1.rig_limit, "load generator");
    }
}
