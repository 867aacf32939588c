//! `tidings-bench`: the relay's load generator (issues 2 and 3, "Benchmark").
//!
//! - `mailbox`: starts the `tidings-relay` binary (or loads `--addr`), then measures
//!   acknowledged Stores/s from many clients, Retrieves/s, long-poll wake latency with many
//!   parked waiters, and the relay's resident memory.
//! - `push`: starts mock APNs and FCM in this process and the relay configured for them,
//!   subscribes many devices, then measures end-to-end pushes/s and the Store-ack →
//!   receipt latency at a fixed rate.
//! - `scaleout`: Stores/s and end-to-end pushes/s on 1 node with the embedded store, 1
//!   node on PostgreSQL and 2 nodes on PostgreSQL, as ratios, and the long-poll wake
//!   latency across nodes (issue 6).
//! - `soak`: Store, Retrieve long-polls, Subscribe churn and pushes to the mocks at once
//!   for `--duration` seconds; throughput, latency percentiles, RSS every second, errors.
//! - `ohttp`: Oblivious HTTP against direct gRPC in one run: Stores/s and Retrieve
//!   latency through the published OHTTP relay and the relay's gateway, as ratios, and
//!   the gateway's CPU per request (issue 13).
//! - `restore`: restores an account with 10 000 contacts (phrase → converged documents)
//!   and reports time, bytes fetched, merge throughput and the stored config size before
//!   and after compaction against the plain JSON size (issue 4).
//!
//! Everything talks to 127.0.0.1 only and stops by itself. Prints a table, or JSON with
//! `--json`; exits 1 when a correctness check failed (lost, duplicated or failed calls),
//! 2 when the run could not be carried out. Missed performance targets are reported, not
//! turned into failures. Build with `--release` for meaningful figures.

#[path = "../bench/mod.rs"]
mod bench;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "tidings-bench",
    version,
    about = "Load generator for the tidings relay"
)]
struct Cli {
    /// Print the report as JSON on stdout instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Slow Mode: Stores/s, Retrieves/s, long-poll wake latency, relay memory.
    Mailbox(bench::mailbox::MailboxArgs),
    /// Fast Mode: end-to-end pushes/s and push latency at a fixed rate, against mock providers.
    Push(bench::push::PushArgs),
    /// Fast Mode under callgrind: the relay's instructions per end-to-end push, by stage.
    PushProfile(bench::profile::ProfileArgs),
    /// Scale-out: Stores/s and pushes/s on embedded vs PostgreSQL with 1 and 2 nodes, cross-node wake latency.
    Scaleout(bench::scaleout::ScaleoutArgs),
    /// Config: restore of an account with 10 000 contacts, merge throughput, stored size.
    Restore(bench::restore::RestoreArgs),
    /// Oblivious HTTP: Stores/s and Retrieve latency through an OHTTP relay vs direct, gateway CPU per request.
    Ohttp(bench::ohttp::OhttpArgs),
    /// Soak: Store, long-polls, Subscribe churn and pushes at once for --duration seconds.
    Soak(bench::soak::SoakArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tidings-bench: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async move {
        match cli.scenario {
            Scenario::Mailbox(args) => bench::mailbox::run(args).await,
            Scenario::Push(args) => bench::push::run(args).await,
            Scenario::PushProfile(args) => bench::profile::run(args).await,
            Scenario::Restore(args) => bench::restore::run(args).await,
            Scenario::Scaleout(args) => bench::scaleout::run(args).await,
            Scenario::Soak(args) => bench::soak::run(args).await,
            Scenario::Ohttp(args) => bench::ohttp::run(args).await,
        }
    });
    // Parked long-polls and connections may still be winding down: do not wait for them.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(report) => {
            if json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_table());
            }
            if report.all_checks_passed() {
                ExitCode::SUCCESS
            } else {
                eprintln!("tidings-bench: some correctness checks failed (see above)");
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("tidings-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}
