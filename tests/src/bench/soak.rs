//! `tidings-bench soak --duration <secs>` (issue 7, part 6): a mixed load held for a while,
//! to find leaks, stalls and errors that short benchmarks miss.
//!
//! One relay runs in this process with the mock APNs and FCM ([`PushRig`]), so its memory
//! is this process's. For the whole duration, at once:
//! - writers deposit messages into the public namespace of a set of accounts, each of
//!   which has one subscribed device, so every acknowledged Store must become exactly one
//!   push;
//! - readers long-poll those mailboxes (Retrieve with `wait_ms`), following the cursor;
//! - churners subscribe, re-subscribe (a rotated token) and unsubscribe devices of their
//!   own accounts, checking the `added` / `removed` answers.
//!
//! Reports throughput, latency percentiles per operation, RSS sampled every second and
//! the first errors; any unexpected error or a push lost or duplicated fails a check
//! (exit status 1).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tidings_tests::{
    Account,
    push::{Device, PushRig, subscribe_request, unsubscribe_request},
};
use tokio::time::timeout;

use super::{
    MB, describe_failures, environment_notes,
    report::Report,
    stats::{Latencies, load_average},
    unix_now,
};

/// Options of the soak run.
#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// How long to hold the load, in seconds.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Concurrent Store loops.
    #[arg(long, default_value_t = 8)]
    pub writers: usize,
    /// Concurrent long-polling readers (one mailbox each, round robin).
    #[arg(long, default_value_t = 8)]
    pub readers: usize,
    /// Concurrent subscription churn loops.
    #[arg(long, default_value_t = 4)]
    pub churners: usize,
    /// Accounts (each with one subscribed device) the Stores spread over.
    #[arg(long, default_value_t = 32)]
    pub accounts: usize,
    /// Bytes per message.
    #[arg(long, default_value_t = 512)]
    pub size: usize,
}

/// The longest any single call may take before it counts as an error.
const CALL_LIMIT: Duration = Duration::from_secs(20);
/// The long-poll of the readers.
const WAIT_MS: u32 = 1_000;
/// How long the outbox may take to drain after the load stops.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

/// Counts and the first few errors, shared by every task.
#[derive(Default)]
struct Errors {
    count: AtomicU64,
    first: Mutex<Vec<String>>,
}

impl Errors {
    fn record(&self, what: &str, e: impl std::fmt::Display) {
        self.count.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first.lock()
            && first.len() < 5
        {
            first.push(format!("{what}: {e}"));
        }
    }
}

/// Latencies of one kind of call, shared by its tasks.
#[derive(Default)]
struct Timed {
    latencies: Mutex<Latencies>,
    ok: AtomicU64,
}

impl Timed {
    fn add(&self, d: Duration) {
        self.ok.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut l) = self.latencies.lock() {
            l.push(d);
        }
    }

    fn take(&self) -> Latencies {
        self.latencies
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default()
    }
}

/// Resident memory of this process (relay, mocks and load generator), in bytes.
fn rss_bytes() -> Option<u64> {
    super::stats::proc_status_bytes(std::process::id(), "VmRSS:")
}

/// Runs the soak and reports.
pub async fn run(args: SoakArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(args.duration > 0, "--duration must be at least 1 second");
    anyhow::ensure!(args.accounts > 0, "--accounts must be at least 1");
    let load_before = load_average();
    let mut report = Report::new("soak");
    for (key, value) in [
        ("duration_s", args.duration),
        ("writers", args.writers as u64),
        ("readers", args.readers as u64),
        ("churners", args.churners as u64),
        ("accounts", args.accounts as u64),
        ("message_bytes", args.size as u64),
    ] {
        report.setting(key, value);
    }

    // Abuse limits would throttle a load generator on one address; they are tested apart.
    let rig = Arc::new(
        PushRig::builder()
            .configure(|c| c.rate_limits.enabled = false)
            .start()
            .await,
    );
    let accounts: Vec<Account> = (0..args.accounts).map(|_| Account::random()).collect();
    let mut devices = Vec::new();
    for (i, account) in accounts.iter().enumerate() {
        let device = if i % 2 == 0 { Device::apns() } else { Device::fcm() };
        let req = subscribe_request(account, &rig.relay_pub(), &[0], false, &device.registration());
        rig.try_subscribe(req)
            .await
            .map_err(|e| anyhow::anyhow!("subscribing the soak devices: {e}"))?;
        devices.push(device);
    }

    let errors = Arc::new(Errors::default());
    let stores = Arc::new(Timed::default());
    let retrieves = Arc::new(Timed::default());
    let churn = Arc::new(Timed::default());
    let received = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.duration);
    let accounts = Arc::new(accounts);
    let mut tasks = tokio::task::JoinSet::new();

    for w in 0..args.writers {
        let (rig, accounts, errors, stores) = (rig.clone(), accounts.clone(), errors.clone(), stores.clone());
        let size = args.size;
        tasks.spawn(async move {
            let mut mailbox = rig.relay().connect().await;
            let run: [u8; 8] = tidings_proto::random_bytes();
            let mut n = w as u64;
            while Instant::now() < deadline {
                let account = &accounts[(n as usize) % accounts.len()];
                let data = super::data_for(n, &run, size);
                let t = Instant::now();
                match timeout(CALL_LIMIT, mailbox.store(account.deposit(0, &data, 0))).await {
                    Ok(Ok(_)) => stores.add(t.elapsed()),
                    Ok(Err(status)) => errors.record("Store", status),
                    Err(_) => errors.record("Store", "no answer within 20 s"),
                }
                n += 1;
            }
        });
    }

    for r in 0..args.readers {
        let (rig, accounts, errors, retrieves, received) = (
            rig.clone(),
            accounts.clone(),
            errors.clone(),
            retrieves.clone(),
            received.clone(),
        );
        tasks.spawn(async move {
            let mut mailbox = rig.relay().connect().await;
            let account = &accounts[r % accounts.len()];
            let mut after = 0;
            while Instant::now() < deadline {
                let t = Instant::now();
                let call = mailbox.retrieve(account.retrieve(0, after, 0, WAIT_MS));
                match timeout(CALL_LIMIT, call).await {
                    Ok(Ok(page)) => {
                        retrieves.add(t.elapsed());
                        let page = page.into_inner();
                        if let Some(last) = page.messages.last() {
                            after = last.seq;
                        }
                        received.fetch_add(page.messages.len() as u64, Ordering::Relaxed);
                    }
                    Ok(Err(status)) => errors.record("Retrieve", status),
                    Err(_) => errors.record("Retrieve", "no answer within 20 s"),
                }
            }
        });
    }

    for _ in 0..args.churners {
        let (rig, errors, churn) = (rig.clone(), errors.clone(), churn.clone());
        tasks.spawn(async move {
            let account = Account::random();
            let mut device = Device::apns();
            while Instant::now() < deadline {
                // Subscribe (new), re-subscribe with a rotated token (update), unsubscribe.
                for (step, expect_added) in [("Subscribe", true), ("re-Subscribe", false)] {
                    let req =
                        subscribe_request(&account, &rig.relay_pub(), &[1], false, &device.registration());
                    let t = Instant::now();
                    match timeout(CALL_LIMIT, rig.try_subscribe(req)).await {
                        Ok(Ok(r)) if r.added == expect_added => churn.add(t.elapsed()),
                        Ok(Ok(r)) => {
                            errors.record(step, format!("added = {} (expected {expect_added})", r.added))
                        }
                        Ok(Err(status)) => errors.record(step, status),
                        Err(_) => errors.record(step, "no answer within 20 s"),
                    }
                    device = device.rotated();
                }
                let req = unsubscribe_request(&account, &device.device_id, unix_now());
                let t = Instant::now();
                match timeout(CALL_LIMIT, rig.try_unsubscribe(req)).await {
                    Ok(Ok(r)) if r.removed => churn.add(t.elapsed()),
                    Ok(Ok(_)) => errors.record("Unsubscribe", "removed = false (expected true)"),
                    Ok(Err(status)) => errors.record("Unsubscribe", status),
                    Err(_) => errors.record("Unsubscribe", "no answer within 20 s"),
                }
            }
        });
    }

    // RSS once a second while the load runs.
    let mut rss_samples: Vec<(u64, u64)> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while Instant::now() < deadline {
        tick.tick().await;
        if let Some(rss) = rss_bytes() {
            rss_samples.push((start.elapsed().as_secs(), rss));
        }
    }
    let load_elapsed = start.elapsed().as_secs_f64();
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            errors.record("task", e);
        }
    }

    // Every acknowledged Store must become exactly one push to its account's device.
    let drained = timeout(DRAIN_LIMIT, async {
        let store = rig.relay().store();
        loop {
            match store.outbox_stats().await {
                Ok(stats) if stats.depth == 0 => return true,
                Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(_) => return false,
            }
        }
    })
    .await
    .unwrap_or(false);
    let mut per_token: HashMap<String, u64> = HashMap::new();
    for token in rig
        .apns
        .delivered()
        .into_iter()
        .map(|r| r.token)
        .chain(rig.fcm.delivered().into_iter().map(|r| r.token))
    {
        *per_token.entry(token).or_default() += 1;
    }
    let pushed: u64 = per_token.values().sum();
    let stored = stores.ok.load(Ordering::Relaxed);
    if let Some(rss) = rss_bytes() {
        rss_samples.push((start.elapsed().as_secs(), rss));
    }

    let per_s = |n: u64| n as f64 / load_elapsed;
    let error_count = errors.count.load(Ordering::Relaxed);
    let first_errors = errors.first.lock().map(|f| f.clone()).unwrap_or_default();
    report.metric(
        "stores_per_s",
        "Stores/s (acknowledged)",
        per_s(stored),
        "1/s",
        None,
    );
    report.metric(
        "retrieves_per_s",
        "Retrieves/s (long-polls of ≤ 1 s included)",
        per_s(retrieves.ok.load(Ordering::Relaxed)),
        "1/s",
        None,
    );
    report.metric(
        "churn_per_s",
        "Subscribe/re-Subscribe/Unsubscribe per s",
        per_s(churn.ok.load(Ordering::Relaxed)),
        "1/s",
        None,
    );
    report.metric(
        "pushes_per_s",
        "pushes delivered per s",
        per_s(pushed),
        "1/s",
        None,
    );
    report.metric(
        "messages_retrieved",
        "messages read by the long-pollers",
        received.load(Ordering::Relaxed) as f64,
        "",
        None,
    );
    report.latency("store_latency", "Store latency", stores.take().summary(), None);
    report.latency(
        "retrieve_latency",
        "Retrieve latency (long-polls wait for a message or 1 s)",
        retrieves.take().summary(),
        None,
    );
    report.latency(
        "churn_latency",
        "Subscribe/Unsubscribe latency",
        churn.take().summary(),
        None,
    );
    let mb = |b: u64| b as f64 / MB;
    let first_rss = rss_samples.first().map_or(0, |s| s.1);
    let peak_rss = rss_samples.iter().map(|s| s.1).max().unwrap_or(0);
    let last_rss = rss_samples.last().map_or(0, |s| s.1);
    report.metric(
        "rss_first_mb",
        "RSS after the first second",
        mb(first_rss),
        "MB",
        None,
    );
    report.metric("rss_peak_mb", "RSS peak", mb(peak_rss), "MB", None);
    report.metric("rss_last_mb", "RSS at the end", mb(last_rss), "MB", None);
    report.note(format!(
        "RSS each second (s:MB): {}",
        rss_samples
            .iter()
            .map(|(t, b)| format!("{t}:{:.0}", mb(*b)))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    report.check(
        "no unexpected errors",
        error_count == 0,
        describe_failures(
            stores.ok.load(Ordering::Relaxed)
                + retrieves.ok.load(Ordering::Relaxed)
                + churn.ok.load(Ordering::Relaxed),
            error_count,
            first_errors.first().map(String::as_str),
        ),
    );
    report.check(
        "every acknowledged Store pushed exactly once",
        drained && pushed == stored && per_token.len() <= devices.len(),
        format!(
            "{stored} stored, {pushed} pushes delivered to {} devices{}",
            per_token.len(),
            if drained {
                ""
            } else {
                "; the outbox did not drain within 60 s"
            }
        ),
    );
    for e in first_errors.iter().skip(1) {
        report.note(format!("also: {e}"));
    }
    report.note("RSS is this process: the relay, the mock providers (which keep every request) and the load generator");
    environment_notes(&mut report, load_before);
    if let Ok(rig) = Arc::try_unwrap(rig) {
        drop(rig);
    }
    Ok(report)
}
