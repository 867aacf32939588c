//! `tidings-bench restore`: the config figures of issue 4 — restoring an account with
//! 10 000 contacts (phrase → converged documents) with the relay on the same host, bytes
//! fetched, merge throughput, and the stored config size before and after compaction
//! against the plain JSON size of the documents.
//!
//! 1. An account's contacts are added one at a time, each uploaded as its own delta and
//!    never compacted: the worst case a restore can meet.
//! 2. Device B restores from those deltas with [`Account::restore`]; its first sync
//!    compacts them into one snapshot.
//! 3. Device C restores from the compacted namespace: the normal case, and the target.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use tidings_device_link::{
    account::{Account, Progress, ProgressStage},
    client::{ClientOptions, RelayClient, StoredMessage},
    config::{
        ConfigState, Contact, DeviceId, Documents,
        sync::{CONFIG_NAMESPACE, SyncConfig, SyncPlanner},
    },
    identity::Identity,
};
use tokio::task::JoinSet;

use super::{
    environment_notes,
    relay::{Relay, RelayArgs},
    report::{Report, Target},
};

/// Any 32 bytes: the bench's state directories are thrown away.
const STATE_KEY: [u8; 32] = [0x42; 32];
const KB: f64 = 1_000.0;

/// Options of the `restore` scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    /// Where the relay comes from.
    #[command(flatten)]
    pub relay: RelayArgs,
    /// Use a relay already running at this address instead of starting one.
    #[arg(long, conflicts_with_all = ["relay_bin", "in_process"])]
    pub addr: Option<std::net::SocketAddr>,
    /// Contacts in the account.
    #[arg(long, default_value_t = 10_000)]
    pub contacts: usize,
    /// Stores in flight while uploading the one-contact deltas.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
}

/// Runs the scenario.
pub async fn run(args: RestoreArgs) -> anyhow::Result<Report> {
    let mut report = Report::new("restore");
    let load_before = super::stats::load_average();
    let relay = match args.addr {
        Some(addr) => Relay::external(addr),
        None => Relay::start(&args.relay, "").await?,
    };
    report.setting("contacts", args.contacts as u64);
    report.setting("concurrency", args.concurrency as u64);
    report.note(relay.describe());
    let result = measure(&args, &format!("http://{}", relay.addr), &mut report).await;
    if result.is_err() {
        eprintln!("relay log tail:\n{}", relay.log_tail());
    }
    relay.stop().await;
    result?;
    environment_notes(&mut report, load_before);
    Ok(report)
}

/// A contact like a real one: a 66-character account id, a name, some nicknames and mutes.
fn contact(i: usize) -> Contact {
    Contact {
        account_id: format!(
            "01{:064x}",
            (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
        ),
        name: format!("Contact number {i}"),
        nickname: i.is_multiple_of(5).then(|| format!("nick {i}")),
        approved: !i.is_multiple_of(3),
        blocked: i.is_multiple_of(101),
        muted_until: i.is_multiple_of(17).then_some(1_900_000_000_000 + i as u64),
    }
}

async fn measure(args: &RestoreArgs, url: &str, report: &mut Report) -> anyhow::Result<()> {
    let client = RelayClient::connect_with(url, ClientOptions::default())
        .await
        .context("cannot connect to the relay")?;
    let identity = Identity::create();

    // 1. The account, built up one contact at a time and never compacted.
    let (documents, upload_time) = upload_one_delta_per_contact(&client, &identity, args).await?;
    let plain = serde_json::to_vec(&documents)?.len();
    let (before_count, before_bytes) = stored(&client, &identity).await?;
    report.metric(
        "plain_json_kb",
        "plain JSON of the documents",
        plain as f64 / KB,
        "kB",
        None,
    );
    report.metric(
        "stored_before_kb",
        "stored config before compaction (one delta per contact)",
        before_bytes as f64 / KB,
        "kB",
        None,
    );
    report.metric(
        "stored_before_ratio",
        "  the same, as a multiple of the plain JSON",
        before_bytes as f64 / plain as f64,
        "x",
        None,
    );
    report.note(format!(
        "{before_count} one-contact deltas uploaded in {:.1} s",
        upload_time.as_secs_f64()
    ));

    // Merge throughput: open, decode and merge every delta into an empty replica.
    let listing = list(&client, &identity).await?;
    let merge = time_merge(&identity, &listing);
    report.metric(
        "merge_deltas_per_s",
        "merge throughput (open + decode + merge)",
        listing.len() as f64 / merge.as_secs_f64(),
        "deltas/s",
        None,
    );

    // 2. B restores from the deltas; its first sync compacts them.
    let b = timed_restore(url, &identity, &documents).await?;
    b.record(report, "deltas", "from uncompacted deltas", None);
    let (after_count, after_bytes) = stored(&client, &identity).await?;
    ensure!(
        after_count < before_count,
        "B's first sync did not compact ({after_count} messages stored)"
    );
    report.metric(
        "stored_after_kb",
        "stored config after compaction",
        after_bytes as f64 / KB,
        "kB",
        None,
    );
    report.metric(
        "stored_after_ratio",
        "  the same, as a multiple of the plain JSON",
        after_bytes as f64 / plain as f64,
        "x",
        Some(Target::Below(2.0)),
    );
    report.note(format!(
        "after compaction: {after_count} messages (snapshot chunks)"
    ));

    // Opening and merging the snapshot alone.
    let listing = list(&client, &identity).await?;
    let merge = time_merge(&identity, &listing);
    report.metric(
        "merge_snapshot_ms",
        "open + reassemble + merge the snapshot",
        merge.as_secs_f64() * 1000.0,
        "ms",
        None,
    );

    // 3. C restores from the compacted namespace: the figure the target is for.
    let c = timed_restore(url, &identity, &documents).await?;
    c.record(
        report,
        "snapshot",
        "from the compacted snapshot",
        Some(Target::Below(1000.0)),
    );
    report.check(
        "restored documents equal the account's",
        b.converged && c.converged,
        format!("B: {}, C: {}", b.converged, c.converged),
    );
    Ok(())
}

/// Adds every contact on a bare replica and stores each change as its own delta.
async fn upload_one_delta_per_contact(
    client: &RelayClient,
    identity: &Identity,
    args: &RestoreArgs,
) -> anyhow::Result<(Documents, Duration)> {
    let mut state = ConfigState::new(DeviceId::random());
    let planner = SyncPlanner::new(*identity.config_key(), identity.account(), SyncConfig::default());
    let mut messages = Vec::with_capacity(args.contacts);
    for i in 0..args.contacts {
        let delta = state.add_contact(&contact(i))?;
        for upload in planner.delta_uploads(&delta)? {
            messages.push(upload);
        }
    }
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    let ttl = planner.config().ttl_ms;
    let mut queue = messages.into_iter();
    loop {
        while tasks.len() < args.concurrency.max(1) {
            let Some(upload) = queue.next() else { break };
            let (client, identity) = (client.clone(), identity.clone());
            tasks.spawn(async move {
                client
                    .store_owned(&identity, CONFIG_NAMESPACE, &upload.data, ttl)
                    .await
            });
        }
        match tasks.join_next().await {
            Some(result) => {
                result
                    .context("an upload task panicked")?
                    .context("a Store failed")?;
            }
            None => break,
        }
    }
    Ok((state.documents(), started.elapsed()))
}

/// Every stored config message.
async fn list(client: &RelayClient, identity: &Identity) -> anyhow::Result<Vec<StoredMessage>> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = client
            .retrieve(identity, CONFIG_NAMESPACE, after, 1000, 0)
            .await?;
        if let Some(last) = page.messages.last() {
            after = last.seq;
        }
        all.extend(page.messages);
        if !page.more {
            return Ok(all);
        }
    }
}

/// How many config messages are stored, and their bytes.
async fn stored(client: &RelayClient, identity: &Identity) -> anyhow::Result<(usize, usize)> {
    let all = list(client, identity).await?;
    Ok((all.len(), all.iter().map(|m| m.data.len()).sum()))
}

fn time_merge(identity: &Identity, listing: &[StoredMessage]) -> Duration {
    let mut state = ConfigState::new(DeviceId::random());
    let mut planner = SyncPlanner::new(*identity.config_key(), identity.account(), SyncConfig::default());
    let started = Instant::now();
    planner.reconcile(&mut state, listing);
    started.elapsed()
}

/// One device's restore, timed.
struct Restored {
    /// Phrase → documents merged and saved (progress stage `Done`).
    to_documents: Duration,
    /// The whole `Account::restore`, including the first sync (announcement, compaction).
    total: Duration,
    /// Config bytes fetched before the documents were complete.
    bytes: u64,
    messages: u64,
    converged: bool,
}

impl Restored {
    fn record(&self, report: &mut Report, key: &str, label: &str, target: Option<Target>) {
        report.metric(
            &format!("restore_{key}_ms"),
            &format!("restore {label}: phrase -> converged documents"),
            self.to_documents.as_secs_f64() * 1000.0,
            "ms",
            target,
        );
        report.metric(
            &format!("restore_{key}_total_ms"),
            "  whole restore incl. first sync (announce / compact)",
            self.total.as_secs_f64() * 1000.0,
            "ms",
            None,
        );
        report.metric(
            &format!("restore_{key}_fetched_kb"),
            &format!("  fetched ({} messages)", self.messages),
            self.bytes as f64 / KB,
            "kB",
            None,
        );
    }
}

async fn timed_restore(url: &str, identity: &Identity, expected: &Documents) -> anyhow::Result<Restored> {
    let dir = tempfile::tempdir().context("a temp dir for the device state")?;
    let done: Arc<Mutex<Option<(Instant, Progress)>>> = Arc::default();
    let seen = Arc::clone(&done);
    let started = Instant::now();
    let account = Account::restore(dir.path(), &STATE_KEY, url, identity.phrase(), move |p| {
        if p.stage == ProgressStage::Done {
            *seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((Instant::now(), p));
        }
    })
    .await
    .context("the restore failed")?;
    let total = started.elapsed();
    let Some((at, progress)) = *done.lock().unwrap_or_else(std::sync::PoisonError::into_inner) else {
        bail!("the restore never reported Done");
    };
    Ok(Restored {
        to_documents: at.duration_since(started),
        total,
        bytes: progress.bytes,
        messages: progress.messages,
        converged: account.documents() == *expected,
    })
}
