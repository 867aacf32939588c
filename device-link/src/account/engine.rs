//! The config sync engine: drives the pure [`SyncPlanner`] with real Retrieve, Store and
//! Delete calls, as `config::sync` prescribes.
//!
//! One sync, under the sync gate:
//! 1. the first sync of a session reads the relay's limits and lowers the planner's
//!    message size and TTL to them;
//! 2. queued local changes are stored, oldest first, each ingested as this device's own
//!    upload and only then removed from the durable queue;
//! 3. the first sync of a session lists the whole namespace and reconciles (the planner
//!    keeps nothing across restarts); later ones retrieve after the cursor, page by page;
//! 4. the plan is executed: when it asks for a listing, the whole namespace is listed and
//!    reconciled and the plan made again; then its uploads in order, each ingested, and
//!    only if all succeeded its deletions;
//! 5. the replica and the cursor are saved.
//!
//! No lock is held across a relay call, so edits and reads go on while a sync waits.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tidings_proto::v1::{RetrieveResponse, StoredMessage};
use tonic::Code;

use crate::{
    client::{ClientError, MAX_WAIT_MS, RelayClient},
    config::{
        ConfigState, Documents,
        sync::{CONFIG_NAMESPACE, IngestReport, Plan, SyncConfig, SyncPlanner, Upload},
    },
    identity::Identity,
};

use super::{AccountError, CONFIG_BLOB, Inner, Progress, ProgressStage, RelaySettings, SyncReport};

/// Messages asked for per Retrieve page (the relay's default `max_limit`).
pub(super) const PAGE_LIMIT: u32 = 1000;
/// Hashes per Delete call (the relay's default `max_delete_hashes` is 1000).
const DELETE_BATCH: usize = 500;

/// The replica, the planner and where this session's reading of the namespace stands.
pub(super) struct ConfigEngine {
    /// This device's replica of the documents.
    pub(super) state: ConfigState,
    /// What the config namespace holds, as far as this session knows.
    pub(super) planner: SyncPlanner,
    /// The planner's thresholds follow the relay's limits.
    limits_known: bool,
    /// This session listed the whole namespace: incremental pulls may follow.
    listed: bool,
    /// Highest seq retrieved (persisted as the device state's cursor of namespace 10).
    cursor: u64,
}

impl ConfigEngine {
    /// `planner`: one that has just reconciled a full listing under the relay's limits,
    /// or `None` to list on the first sync.
    pub(super) fn new(
        identity: &Identity,
        settings: &RelaySettings,
        state: ConfigState,
        planner: Option<SyncPlanner>,
        cursor: u64,
    ) -> ConfigEngine {
        let listed = planner.is_some();
        ConfigEngine {
            state,
            planner: planner.unwrap_or_else(|| new_planner(identity, settings.sync)),
            limits_known: listed,
            listed,
            cursor,
        }
    }

    /// Merges retrieved messages and moves the cursor past them.
    fn ingest(&mut self, messages: &[StoredMessage]) -> IngestReport {
        let report = self.planner.ingest(&mut self.state, messages);
        if let Some(seq) = messages.iter().map(|m| m.seq).max() {
            self.cursor = self.cursor.max(seq);
        }
        report
    }

    /// Takes in this device's own upload once stored. The cursor moves past it only when
    /// it directly follows the cursor: then no other message can lie in between, and the
    /// next pull need not fetch it back.
    fn ingest_own(&mut self, message: &StoredMessage) {
        self.planner
            .ingest(&mut self.state, std::slice::from_ref(message));
        if message.seq == self.cursor + 1 {
            self.cursor = message.seq;
        }
    }

    /// Merges a full listing; the planner forgets what is no longer stored.
    fn reconcile(&mut self, listing: &[StoredMessage]) -> IngestReport {
        let report = self.planner.reconcile(&mut self.state, listing);
        if let Some(seq) = listing.iter().map(|m| m.seq).max() {
            self.cursor = self.cursor.max(seq);
        }
        self.listed = true;
        report
    }
}

fn new_planner(identity: &Identity, config: SyncConfig) -> SyncPlanner {
    SyncPlanner::new(*identity.config_key(), identity.account(), config)
}

/// The whole config namespace, read before a restored device writes anything.
pub(super) struct Everything {
    /// Every stored message, by seq.
    pub(super) listing: Vec<StoredMessage>,
    /// The planner thresholds under the relay's limits.
    pub(super) config: SyncConfig,
    /// Highest seq seen.
    pub(super) last_seq: u64,
    bytes: u64,
}

impl Everything {
    pub(super) fn progress(&self, stage: ProgressStage) -> Progress {
        let n = self.listing.len() as u64;
        Progress {
            stage,
            messages: n,
            total: Some(n),
            bytes: self.bytes,
        }
    }
}

/// Reads the relay's limits and lists the whole config namespace, reporting progress.
pub(super) async fn pull_everything(
    client: &RelayClient,
    identity: &Identity,
    settings: &RelaySettings,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Everything, AccountError> {
    let config = relay_sync_config(client, settings.sync).await?;
    let mut bytes = 0u64;
    let listing = list_namespace(client, identity, &mut |page: &[StoredMessage], so_far, total| {
        bytes += page.iter().map(|m| m.data.len() as u64).sum::<u64>();
        progress(Progress {
            stage: ProgressStage::Fetching,
            messages: so_far,
            total,
            bytes,
        });
    })
    .await?;
    let last_seq = listing.iter().map(|m| m.seq).max().unwrap_or(0);
    let everything = Everything {
        listing,
        config,
        last_seq,
        bytes,
    };
    progress(everything.progress(ProgressStage::Merging));
    Ok(everything)
}

/// The planner's thresholds lowered to what the relay accepts.
async fn relay_sync_config(client: &RelayClient, mut config: SyncConfig) -> Result<SyncConfig, AccountError> {
    let info = client.relay_info().await?;
    if info.max_message_bytes > 0 {
        let relay_max = usize::try_from(info.max_message_bytes).unwrap_or(usize::MAX);
        config.max_message_bytes = config.max_message_bytes.min(relay_max);
    }
    if info.max_ttl_ms > 0 {
        config.ttl_ms = config.ttl_ms.min(info.max_ttl_ms);
    }
    Ok(config)
}

/// One Retrieve page; falls back to the relay's default page size if it refuses ours.
pub(super) async fn retrieve_page(
    client: &RelayClient,
    identity: &Identity,
    namespace: i32,
    after_seq: u64,
    wait_ms: u32,
) -> Result<RetrieveResponse, ClientError> {
    match client
        .retrieve(identity, namespace, after_seq, PAGE_LIMIT, wait_ms)
        .await
    {
        Err(e) if e.code() == Some(Code::InvalidArgument) => {
            client.retrieve(identity, namespace, after_seq, 0, wait_ms).await
        }
        other => other,
    }
}

/// What a listing reports after each page: the page, the count so far and the total as far
/// as known (see [`listing_total`]).
type OnPage<'a> = dyn FnMut(&[StoredMessage], u64, Option<u64>) + Send + 'a;

/// Every stored config message, from `after_seq = 0` to the end, reporting each page to
/// `on_page`.
async fn list_namespace(
    client: &RelayClient,
    identity: &Identity,
    on_page: &mut OnPage<'_>,
) -> Result<Vec<StoredMessage>, AccountError> {
    let mut all: Vec<StoredMessage> = Vec::new();
    let mut after = 0;
    loop {
        let page = retrieve_page(client, identity, CONFIG_NAMESPACE, after, 0).await?;
        if let Some(last) = page.messages.last() {
            after = last.seq;
        }
        let done = !page.more || page.messages.is_empty();
        let so_far = (all.len() + page.messages.len()) as u64;
        on_page(
            &page.messages,
            so_far,
            listing_total(so_far, done, page.remaining),
        );
        all.extend(page.messages);
        if done {
            return Ok(all);
        }
    }
}

/// The size of a listing after a page: exact at the last page, else what is fetched plus
/// the relay's `remaining` (a lower bound where the relay caps its count, so it may grow
/// from page to page). A full page with `remaining = 0` says nothing (a relay from before
/// the field, or messages gone since the page was read): unknown.
fn listing_total(so_far: u64, done: bool, remaining: u64) -> Option<u64> {
    if done {
        Some(so_far)
    } else {
        (remaining > 0).then(|| so_far.saturating_add(remaining))
    }
}

/// Unix ms by the system clock (the relay's clock, as far as the device knows).
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Whether a refused Store can never succeed with these bytes.
fn refused_for_good(e: &ClientError, len: usize, max_message_bytes: usize) -> bool {
    match e.code() {
        Some(Code::InvalidArgument) => true,
        Some(Code::ResourceExhausted) => len > max_message_bytes,
        _ => false,
    }
}

impl Inner {
    /// Stores `data` in the config namespace and describes it as Retrieve would.
    async fn store_config(&self, data: Vec<u8>, ttl_ms: i64) -> Result<StoredMessage, ClientError> {
        let resp = self
            .client
            .store_owned(&self.identity, CONFIG_NAMESPACE, &data, ttl_ms)
            .await?;
        Ok(StoredMessage {
            hash: resp.hash,
            seq: resp.seq,
            data,
            created_ms: now_ms(),
            expires_ms: resp.expires_ms,
        })
    }

    /// Once per session: the relay's limits, and a fresh planner under them (the session's
    /// first listing fills it).
    async fn learn_relay_limits(&self) -> Result<(), AccountError> {
        if self.lock_engine().limits_known {
            return Ok(());
        }
        let config = relay_sync_config(&self.client, self.settings.sync).await?;
        let mut engine = self.lock_engine();
        if !engine.listed {
            engine.planner = new_planner(&self.identity, config);
        }
        engine.limits_known = true;
        Ok(())
    }

    /// Stores every queued config change, oldest first. Each one is ingested as this
    /// device's own upload and only then leaves the queue. Stops at the first failure
    /// that may pass (the rest stays queued, in order); a change the relay refuses for
    /// good is dropped with a warning (it is in the replica and goes out with the next
    /// snapshot). Call under the sync gate.
    pub(super) async fn flush_pending(&self) -> Result<usize, AccountError> {
        self.learn_relay_limits().await?;
        let pending = self.lock_disk().pending_uploads()?;
        let (ttl_ms, max_bytes) = {
            let engine = self.lock_engine();
            let c = engine.planner.config();
            (c.ttl_ms, c.max_message_bytes)
        };
        let mut stored = 0;
        for p in pending.into_iter().filter(|p| p.namespace == CONFIG_NAMESPACE) {
            let len = p.data.len();
            match self.store_config(p.data, ttl_ms).await {
                Ok(message) => {
                    self.lock_engine().ingest_own(&message);
                    self.lock_disk().ack_upload(p.id)?;
                    stored += 1;
                }
                Err(e) if refused_for_good(&e, len, max_bytes) => {
                    tracing::warn!(error = %e, bytes = len, "the relay refuses a queued config change; dropping it");
                    self.lock_disk().ack_upload(p.id)?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(stored)
    }

    /// Lists the whole namespace and reconciles the planner with it.
    async fn list_and_reconcile(&self, report: &mut SyncReport) -> Result<(), AccountError> {
        let listing = list_namespace(&self.client, &self.identity, &mut |_, _, _| {}).await?;
        note_fetched(report, &listing);
        let ingest = self.lock_engine().reconcile(&listing);
        report.undecryptable += ingest.undecryptable;
        Ok(())
    }

    /// Retrieves what is new after the cursor, page by page, and merges it.
    async fn pull_new(&self, report: &mut SyncReport) -> Result<(), AccountError> {
        loop {
            let after = self.lock_engine().cursor;
            let page = retrieve_page(&self.client, &self.identity, CONFIG_NAMESPACE, after, 0).await?;
            note_fetched(report, &page.messages);
            let ingest = self.lock_engine().ingest(&page.messages);
            report.undecryptable += ingest.undecryptable;
            if !page.more || page.messages.is_empty() {
                return Ok(());
            }
        }
    }

    /// Makes the plan (listing first when the planner asks) and executes it: uploads in
    /// order, each ingested, then the deletions if every upload succeeded.
    async fn compact(&self, report: &mut SyncReport) -> Result<(), AccountError> {
        let mut plan = self.make_plan();
        if plan.needs_listing {
            self.list_and_reconcile(report).await?;
            plan = self.make_plan();
        }
        report.snapshot = plan.snapshot;
        report.pruned = plan.pruned;
        if plan.pruned > 0 || plan.snapshot.is_some() {
            // The snapshot renewed this device's mark (and may have pruned): keep it.
            self.save_replica()?;
        }
        let Plan { uploads, deletes, .. } = plan;
        for Upload { data, ttl_ms } in uploads {
            let message = self.store_config(data, ttl_ms).await?;
            self.lock_engine().ingest_own(&message);
            report.uploaded += 1;
        }
        for batch in deletes.chunks(DELETE_BATCH) {
            self.client
                .delete(&self.identity, CONFIG_NAMESPACE, batch)
                .await?;
            self.lock_engine().planner.confirm_deleted(batch);
            report.deleted += batch.len();
        }
        Ok(())
    }

    fn make_plan(&self) -> Plan {
        let mut engine = self.lock_engine();
        let engine = &mut *engine;
        engine.planner.plan(&mut engine.state, now_ms())
    }

    fn save_replica(&self) -> Result<(), AccountError> {
        let engine = self.lock_engine();
        let bytes = engine.state.save();
        let cursor = engine.cursor;
        let mut disk = self.lock_disk();
        disk.put_blob(CONFIG_BLOB, &bytes)?;
        crate::notification::save_preview_index(&mut disk, &engine.state)?;
        if disk.cursor(CONFIG_NAMESPACE) != cursor {
            disk.set_cursor(CONFIG_NAMESPACE, cursor)?;
        }
        Ok(())
    }

    /// One sync (module documentation); `prefetched` are messages a long-poll already
    /// brought.
    pub(super) async fn sync_config(
        &self,
        prefetched: Vec<StoredMessage>,
    ) -> Result<SyncReport, AccountError> {
        let _gate = self.sync_gate.lock().await;
        let before = self.documents_now();
        let mut report = SyncReport {
            flushed: self.flush_pending().await?,
            ..SyncReport::default()
        };
        self.pause_flush(false);
        if !prefetched.is_empty() {
            let ingest = self.lock_engine().ingest(&prefetched);
            report.undecryptable += ingest.undecryptable;
        }
        let listed = self.lock_engine().listed;
        if listed {
            self.pull_new(&mut report).await?;
        } else {
            self.list_and_reconcile(&mut report).await?;
        }
        self.save_replica()?;
        if let Err(e) = self.compact(&mut report).await {
            tracing::warn!(error = %e, "config compaction failed; the next sync retries it");
            report.compaction_error = Some(e.to_string());
        }
        self.save_replica()?;
        report.changed = self.documents_now() != before;
        Ok(report)
    }

    fn documents_now(&self) -> Documents {
        self.lock_engine().state.documents()
    }

    /// Slow Mode: a sync, then long-polls after the cursor until another device's change
    /// arrives and is merged, or `wait_ms` passes. This device's own uploads wake the poll
    /// too; they change nothing and the wait goes on.
    pub(super) async fn sync_wait(&self, wait_ms: u32) -> Result<bool, AccountError> {
        if self.sync_config(Vec::new()).await?.changed {
            return Ok(true);
        }
        let end = Instant::now() + Duration::from_millis(u64::from(wait_ms.min(MAX_WAIT_MS)));
        loop {
            let remaining = end.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Ok(false);
            }
            let wait = u32::try_from(remaining.as_millis()).unwrap_or(MAX_WAIT_MS);
            let after = self.lock_engine().cursor;
            let page = retrieve_page(&self.client, &self.identity, CONFIG_NAMESPACE, after, wait).await?;
            if !page.messages.is_empty() && self.sync_config(page.messages).await?.changed {
                return Ok(true);
            }
        }
    }
}

fn note_fetched(report: &mut SyncReport, messages: &[StoredMessage]) {
    report.fetched += messages.len();
    report.fetched_bytes += messages.iter().map(|m| m.data.len() as u64).sum::<u64>();
}

#[cfg(test)]
mod tests {
    use super::listing_total;

    #[test]
    fn a_listing_total_is_known_from_the_first_page_the_relay_counts() {
        assert_eq!(listing_total(1000, false, 2500), Some(3500));
        assert_eq!(listing_total(3500, true, 0), Some(3500), "the last page is exact");
        assert_eq!(
            listing_total(1000, false, 0),
            None,
            "a full page without a count says nothing"
        );
        assert_eq!(listing_total(5, false, u64::MAX), Some(u64::MAX));
    }
}
