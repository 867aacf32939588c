//! `tidings-bench mailbox`: Slow Mode figures of issue 2 — durable Stores/s from many
//! clients, Retrieves/s, long-poll wake latency with many parked waiters, relay memory.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use ed25519_dalek::SigningKey;
use tidings_proto::{
    sign,
    v1::{RetrieveRequest, StoreRequest},
};
use tokio::{sync::oneshot, task::JoinHandle};

use super::{
    MB, data_for, describe_failures, environment_notes,
    load::{Limit, Outcome, Sampler, closed_loop},
    pool::Pool,
    relay::{Relay, RelayArgs},
    report::{Report, Target},
    stats::{CpuMeter, Latencies},
    unix_now,
};

/// TTL of bench messages: long enough for the run, short enough that a shared relay
/// (`--addr`) sweeps them soon after.
const BENCH_TTL_MS: i64 = 10 * 60 * 1000;
/// How long a woken waiter may take before it counts as missed.
const WAKE_LIMIT: Duration = Duration::from_secs(5);
/// Stop waking this long before the parked polls would end by themselves.
const WAKE_MARGIN: Duration = Duration::from_secs(5);
/// Waiters per connection when `--waiter-connections` is 0.
const WAITERS_PER_CONNECTION: usize = 500;

/// Options of the `mailbox` scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct MailboxArgs {
    /// Where the relay comes from.
    #[command(flatten)]
    pub relay: RelayArgs,
    /// Load a relay already running at this address instead of starting one.
    #[arg(long, conflicts_with_all = ["relay_bin", "in_process"])]
    pub addr: Option<SocketAddr>,
    /// Concurrent clients of the Store and Retrieve phases.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// HTTP/2 connections those clients share.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Calls per phase (Stores, then Retrieves); default: as many as fit in --duration.
    #[arg(long)]
    pub count: Option<u64>,
    /// Longest time of each of the Store and Retrieve phases, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Bytes per stored message.
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// Mailboxes the Store and Retrieve phases spread over.
    #[arg(long, default_value_t = 1000)]
    pub accounts: usize,
    /// `limit` of each Retrieve.
    #[arg(long, default_value_t = 10)]
    pub retrieve_limit: u32,
    /// Long-polls parked on distinct accounts (0 skips the wake phase).
    #[arg(long, default_value_t = 10_000)]
    pub waiters: usize,
    /// How many of them are woken, one at a time, to measure the wake latency.
    #[arg(long, default_value_t = 1000)]
    pub wakes: usize,
    /// Connections carrying the parked waiters (0: one per 500 waiters, at least 4).
    #[arg(long, default_value_t = 0)]
    pub waiter_connections: usize,
    /// `wait_ms` of the parked long-polls.
    #[arg(long, default_value_t = 60_000)]
    pub wait_ms: u32,
}

/// Runs the scenario and reports.
pub async fn run(args: MailboxArgs) -> anyhow::Result<Report> {
    let mut report = Report::new("mailbox");
    let load_before = super::stats::load_average();
    let relay = match args.addr {
        Some(addr) => Relay::external(addr),
        None => Relay::start(&args.relay, "").await?,
    };
    settings(&mut report, &args);
    report.note(relay.describe());
    let result = measure(&args, &relay, &mut report).await;
    if let Some(peak) = relay.rss_peak() {
        report.metric(
            "relay_rss_peak_mb",
            "relay RSS, peak of the run",
            peak as f64 / MB,
            "MB",
            Some(Target::Below(300.0)),
        );
    }
    if result.is_err() {
        eprintln!("relay log tail:\n{}", relay.log_tail());
    }
    relay.stop().await;
    result?;
    environment_notes(&mut report, load_before);
    Ok(report)
}

fn settings(report: &mut Report, args: &MailboxArgs) {
    report.setting("clients", args.clients);
    report.setting("connections", args.connections);
    report.setting("count", args.count);
    report.setting("duration_s", args.duration);
    report.setting("size", args.size);
    report.setting("accounts", args.accounts);
    report.setting("waiters", args.waiters);
    report.setting("wakes", args.wakes.min(args.waiters));
}

async fn measure(args: &MailboxArgs, relay: &Relay, report: &mut Report) -> anyhow::Result<()> {
    let pool = Pool::connect(relay.addr, args.connections).await?;
    let accounts: Arc<Vec<SigningKey>> = Arc::new(
        (0..args.accounts.max(1))
            .map(|_| SigningKey::from_bytes(&tidings_proto::random_bytes()))
            .collect(),
    );
    let limit = Limit {
        count: args.count,
        duration: Duration::from_secs_f64(args.duration),
    };

    eprintln!(
        "[mailbox] Store phase: {} clients over {} connections…",
        args.clients,
        pool.len()
    );
    let stores = store_phase(&pool, &accounts, args, limit, relay.pid()).await;
    report.metric(
        "stores_per_s",
        "acknowledged Stores/s",
        stores.rate(),
        "/s",
        Some(Target::AtLeast(10_000.0)),
    );
    report.latency("store_latency", "Store latency", stores.latencies.summary(), None);
    report.cpu("store", "Store phase", stores.cpu);
    check_outcome(report, "every Store acknowledged", &stores);

    eprintln!("[mailbox] Retrieve phase…");
    let retrieves = retrieve_phase(&pool, &accounts, args, limit, relay.pid()).await;
    report.metric("retrieves_per_s", "Retrieves/s", retrieves.rate(), "/s", None);
    report.metric(
        "retrieved_messages_per_s",
        "messages retrieved/s",
        retrieves.item_rate(),
        "/s",
        None,
    );
    report.latency(
        "retrieve_latency",
        "Retrieve latency",
        retrieves.latencies.summary(),
        None,
    );
    report.cpu("retrieve", "Retrieve phase", retrieves.cpu);
    check_outcome(report, "every Retrieve answered", &retrieves);
    report.check(
        "Retrieves return the stored messages",
        stores.ok == 0 || retrieves.items > 0,
        format!("{} messages in {} answers", retrieves.items, retrieves.ok),
    );
    if let Some(rss) = relay.rss() {
        report.metric(
            "relay_rss_after_load_mb",
            "relay RSS after Store+Retrieve",
            rss as f64 / MB,
            "MB",
            None,
        );
    }
    drop(pool);

    if args.waiters > 0 {
        wake_phase(args, relay, report).await?;
    }
    Ok(())
}

fn check_outcome(report: &mut Report, what: &str, o: &Outcome) {
    report.check(
        what,
        o.errors == 0 && o.ok > 0,
        describe_failures(o.ok, o.errors, o.first_error.as_deref()),
    );
}

pub(super) async fn store_phase(
    pool: &Pool,
    accounts: &Arc<Vec<SigningKey>>,
    args: &MailboxArgs,
    limit: Limit,
    relay_pid: Option<u32>,
) -> Outcome {
    let ids: Arc<Vec<[u8; 32]>> = Arc::new(accounts.iter().map(|k| k.verifying_key().to_bytes()).collect());
    let (pool, size) = (pool.clone(), args.size);
    // Unique bytes per run, so re-running against the same relay never hits `duplicate`.
    let run = tidings_proto::random_bytes::<8>();
    closed_loop(args.clients, limit, relay_pid, move |n, client| {
        let mut mailbox = pool.mailbox(client);
        let request = StoreRequest {
            account: ids[n as usize % ids.len()].to_vec(),
            namespace: 0,
            data: data_for(n, &run, size),
            ttl_ms: BENCH_TTL_MS,
            ..Default::default()
        };
        async move {
            let reply = mailbox.store(request).await.map_err(|s| s.to_string())?;
            if reply.get_ref().duplicate {
                return Err("unexpected duplicate".into());
            }
            Ok(1)
        }
    })
    .await
}

async fn retrieve_phase(
    pool: &Pool,
    accounts: &Arc<Vec<SigningKey>>,
    args: &MailboxArgs,
    limit: Limit,
    relay_pid: Option<u32>,
) -> Outcome {
    // Signed once per account: a signature over (account, namespace, ts) stays valid for
    // the relay's clock window, so the clients spend their time on calls, not on Ed25519.
    let requests: Arc<Vec<RetrieveRequest>> = Arc::new(
        accounts
            .iter()
            .map(|k| signed_retrieve(k, 0, args.retrieve_limit, 0))
            .collect(),
    );
    let pool = pool.clone();
    closed_loop(args.clients, limit, relay_pid, move |n, client| {
        let mut mailbox = pool.mailbox(client);
        let request = requests[n as usize % requests.len()].clone();
        async move {
            let reply = mailbox.retrieve(request).await.map_err(|s| s.to_string())?;
            Ok(reply.get_ref().messages.len() as u64)
        }
    })
    .await
}

fn signed_retrieve(key: &SigningKey, after_seq: u64, limit: u32, wait_ms: u32) -> RetrieveRequest {
    let account = key.verifying_key().to_bytes();
    let ts = unix_now();
    RetrieveRequest {
        account: account.to_vec(),
        namespace: 0,
        after_seq,
        limit,
        wait_ms,
        ts,
        signature: sign::sign(key, &sign::retrieve_bytes(&account, 0, ts)).to_vec(),
    }
}

/// What a parked long-poll answered, and when.
pub(super) struct WaiterReply {
    at: Instant,
    result: Result<usize, String>,
}

/// Tallies of the wake phase.
#[derive(Default)]
pub(super) struct Wakes {
    after_ack: Latencies,
    from_send: Latencies,
    before_ack: usize,
    missed: usize,
    empty: usize,
    errors: usize,
    store_errors: usize,
    first_error: Option<String>,
    not_attempted: usize,
}

async fn wake_phase(args: &MailboxArgs, relay: &Relay, report: &mut Report) -> anyhow::Result<()> {
    let connections = match args.waiter_connections {
        0 => (args.waiters / WAITERS_PER_CONNECTION).max(4),
        n => n,
    };
    report.setting("waiter_connections", connections);
    let waiter_pool = Pool::connect(relay.addr, connections).await?;
    let keys: Vec<SigningKey> = (0..args.waiters)
        .map(|_| SigningKey::from_bytes(&tidings_proto::random_bytes()))
        .collect();
    let rss_before = relay.rss();

    eprintln!(
        "[mailbox] parking {} long-polls over {connections} connections…",
        args.waiters
    );
    let parked_at = Instant::now();
    let meter = CpuMeter::start(relay.pid());
    let (tasks, mut replies) = park(&waiter_pool, &keys, args.wait_ms);
    relay
        .settle(Duration::from_secs(1), Duration::from_secs(20))
        .await;
    let park_time = parked_at.elapsed();
    let park_cpu = meter.stop();

    let mut early = 0;
    let mut early_error = None;
    for slot in &mut replies {
        if let Some(reply) = slot.as_mut().and_then(|rx| rx.try_recv().ok()) {
            early += 1;
            if let Err(e) = reply.result {
                early_error.get_or_insert(e);
            }
            *slot = None;
        }
    }
    report.check(
        "every long-poll stays parked until woken",
        early == 0,
        match &early_error {
            Some(e) => format!("{early} returned early; first error: {e}"),
            None => format!("{early} returned early"),
        },
    );
    let rss_parked = relay.rss();
    if let (Some(parked), Some(before)) = (rss_parked, rss_before) {
        report.metric(
            "relay_rss_parked_mb",
            "relay RSS with waiters parked",
            parked as f64 / MB,
            "MB",
            Some(Target::Below(300.0)),
        );
        let per = parked.saturating_sub(before) as f64 / args.waiters.max(1) as f64;
        report.metric(
            "relay_bytes_per_waiter",
            "relay memory per parked waiter",
            per / 1024.0,
            "KiB",
            None,
        );
    }
    report.metric(
        "park_seconds",
        "time to park all waiters",
        park_time.as_secs_f64(),
        "s",
        None,
    );
    report.cpu("park", "parking", park_cpu);

    let wake_count = args.wakes.min(args.waiters);
    eprintln!("[mailbox] waking {wake_count} waiters one at a time…");
    let deadline = parked_at + Duration::from_millis(u64::from(args.wait_ms)).saturating_sub(WAKE_MARGIN);
    let pool = Pool::connect(relay.addr, 1).await?;
    let sample = Sampler::new().sample(args.waiters, wake_count);
    let mut w = Wakes::default();
    let mut sampled = vec![false; args.waiters];
    for &i in &sample {
        sampled[i] = true;
        if Instant::now() >= deadline {
            w.not_attempted += 1;
            continue;
        }
        let Some(rx) = replies[i].take() else { continue };
        wake_one(&pool, &keys[i], i, rx, &mut w).await;
    }

    // A parked poll that answered without its own message was woken by someone else's.
    let stray = replies
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| !sampled[*i])
        .filter_map(|(_, slot)| slot.as_mut().and_then(|rx| rx.try_recv().ok()))
        .count();
    for t in &tasks {
        t.abort();
    }
    report_wakes(report, &w, wake_count, stray);
    Ok(())
}

/// Starts one long-poll per key; each answers on its own channel when it returns.
pub(super) fn park(
    pool: &Pool,
    keys: &[SigningKey],
    wait_ms: u32,
) -> (Vec<JoinHandle<()>>, Vec<Option<oneshot::Receiver<WaiterReply>>>) {
    let mut tasks = Vec::with_capacity(keys.len());
    let mut replies = Vec::with_capacity(keys.len());
    let limit = Duration::from_millis(u64::from(wait_ms)) + Duration::from_secs(10);
    for (i, key) in keys.iter().enumerate() {
        let (tx, rx) = oneshot::channel();
        let mut mailbox = pool.mailbox(i);
        let request = signed_retrieve(key, 0, 1, wait_ms);
        tasks.push(tokio::spawn(async move {
            let result = match tokio::time::timeout(limit, mailbox.retrieve(request)).await {
                Ok(Ok(reply)) => Ok(reply.get_ref().messages.len()),
                Ok(Err(status)) => Err(status.to_string()),
                Err(_) => Err("the long-poll outlived its wait_ms".to_owned()),
            };
            let _ = tx.send(WaiterReply {
                at: Instant::now(),
                result,
            });
        }));
        replies.push(Some(rx));
    }
    (tasks, replies)
}

/// Stores one message to waiter `i`'s mailbox and times its long-poll's answer.
pub(super) async fn wake_one(
    pool: &Pool,
    key: &SigningKey,
    i: usize,
    rx: oneshot::Receiver<WaiterReply>,
    w: &mut Wakes,
) {
    let mut mailbox = pool.mailbox(0);
    let request = StoreRequest {
        account: key.verifying_key().to_bytes().to_vec(),
        namespace: 0,
        data: format!("wake {i}").into_bytes(),
        ttl_ms: BENCH_TTL_MS,
        ..Default::default()
    };
    let sent = Instant::now();
    if let Err(status) = mailbox.store(request).await {
        w.store_errors += 1;
        w.first_error.get_or_insert(status.to_string());
        return;
    }
    let acked = Instant::now();
    let reply = match tokio::time::timeout(WAKE_LIMIT, rx).await {
        Ok(Ok(reply)) => reply,
        _ => {
            w.missed += 1;
            return;
        }
    };
    match reply.result {
        Ok(0) => w.empty += 1,
        Ok(_) => {
            if reply.at < acked {
                w.before_ack += 1;
            }
            w.after_ack.push(reply.at.saturating_duration_since(acked));
            w.from_send.push(reply.at.duration_since(sent));
        }
        Err(e) => {
            w.errors += 1;
            w.first_error.get_or_insert(e);
        }
    }
}

pub(super) fn report_wakes(report: &mut Report, w: &Wakes, wake_count: usize, stray: usize) {
    report.latency(
        "wake_after_ack",
        "long-poll wake, Store ack → waiter reply",
        w.after_ack.summary(),
        Some(10.0),
    );
    report.latency(
        "wake_from_send",
        "long-poll wake, Store sent → waiter reply",
        w.from_send.summary(),
        None,
    );
    report.note(format!(
        "{} of {} waiter replies arrived before the Store's own acknowledgement (counted as 0 ms)",
        w.before_ack,
        w.after_ack.len()
    ));
    let failed = w.missed + w.empty + w.errors + w.store_errors;
    let mut detail = format!(
        "{} woken with their message; {} missed (> {WAKE_LIMIT:?}), {} empty, {} failed, {} Store errors, {} not attempted (wait_ms ran out)",
        w.after_ack.len(),
        w.missed,
        w.empty,
        w.errors,
        w.store_errors,
        w.not_attempted
    );
    if let Some(e) = &w.first_error {
        detail.push_str(&format!("; first error: {e}"));
    }
    report.check(
        "every woken waiter gets its message",
        failed == 0 && w.after_ack.len() + w.not_attempted == wake_count && w.not_attempted < wake_count,
        detail,
    );
    report.check(
        "no waiter wakes for another mailbox",
        stray == 0,
        format!("{stray} unsampled waiters answered"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_retrieve_verifies() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let r = signed_retrieve(&key, 3, 10, 500);
        let account: [u8; 32] = r.account.as_slice().try_into().unwrap();
        let bytes = sign::retrieve_bytes(&account, 0, r.ts);
        assert!(sign::verify(&account, &bytes, &r.signature).is_ok());
        assert_eq!((r.after_seq, r.limit, r.wait_ms), (3, 10, 500));
    }
}
