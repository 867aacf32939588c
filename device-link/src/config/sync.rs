//! The sync planner: decides, without touching the network, what a device uploads to and
//! deletes from the config namespace. An engine retrieves messages, feeds them to
//! [`SyncPlanner::ingest`], asks [`SyncPlanner::plan`] and executes the [`Plan`]: every
//! upload first, in order, and the deletions only once all uploads succeeded.
//!
//! Other devices delete messages too, and a cursor-based Retrieve never reports that, so
//! before writing a snapshot the planner asks for a full listing ([`Plan::needs_listing`]):
//! the engine retrieves the namespace from `after_seq = 0` to its end and passes it to
//! [`SyncPlanner::reconcile`]; the next plan then decides on what is really stored. A device
//! that has not seen a full listing never writes, so it never compacts (or announces itself)
//! before it has merged the account's config.
//!
//! What stays stored (docs/config-sync.md, "Stored size"): after any plan that compacts,
//! one snapshot; between compactions at most [`SyncConfig::max_deltas`] deltas totalling at
//! most [`SyncConfig::max_delta_bytes`] (the next plan compacts beyond either), plus the
//! snapshots of devices that compacted concurrently (folded by the next plan) and
//! interrupted snapshot uploads younger than [`SyncConfig::abandon_incomplete_after_ms`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use tidings_proto::v1::StoredMessage;

use super::envelope::{self, EnvelopeError, Kind, SnapshotChunk};
use super::{ConfigState, Delta, PrunePolicy, Snapshot};

/// The owner-only namespace that holds config deltas and snapshot chunks.
pub const CONFIG_NAMESPACE: i32 = 10;

const DAY_MS: i64 = 86_400_000;

/// The planner's thresholds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncConfig {
    /// The relay's message size limit (`RelayInfo.max_message_bytes`).
    pub max_message_bytes: usize,
    /// TTL of every upload; the relay's maximum (`RelayInfo.max_ttl_ms`, 30 days by default).
    pub ttl_ms: i64,
    /// Compact when more deltas than this are stored.
    pub max_deltas: usize,
    /// Compact when the stored deltas take more bytes than this.
    pub max_delta_bytes: usize,
    /// Rewrite the snapshot (and fold old deltas) once the newest snapshot or the oldest
    /// delta is this old, so everything needed to restore lives at least
    /// `ttl_ms - renew_after_ms` after a device last ran.
    pub renew_after_ms: i64,
    /// Rewrite the snapshot when this device's mark is older than this, so tombstone
    /// pruning keeps moving.
    pub mark_refresh_ms: i64,
    /// Delete the chunks of a snapshot still incomplete after this long (an interrupted upload).
    pub abandon_incomplete_after_ms: i64,
    /// When tombstones may be pruned.
    pub prune: PrunePolicy,
}

impl Default for SyncConfig {
    fn default() -> SyncConfig {
        SyncConfig {
            max_message_bytes: envelope::DEFAULT_MAX_MESSAGE_BYTES,
            ttl_ms: 30 * DAY_MS,
            max_deltas: 64,
            max_delta_bytes: 256 * 1024,
            renew_after_ms: DAY_MS,
            mark_refresh_ms: 7 * DAY_MS,
            abandon_incomplete_after_ms: DAY_MS,
            prune: PrunePolicy::default(),
        }
    }
}

/// One message to store in [`CONFIG_NAMESPACE`].
#[derive(Clone, PartialEq, Eq)]
pub struct Upload {
    /// The sealed message.
    pub data: Vec<u8>,
    /// Its time to live.
    pub ttl_ms: i64,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Upload({} bytes, ttl {} ms)", self.data.len(), self.ttl_ms)
    }
}

/// Why a plan writes a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotReason {
    /// Deltas or local data exist but no complete snapshot does.
    NoSnapshot,
    /// Several complete snapshots are stored (devices compacted concurrently).
    SeveralSnapshots,
    /// More than `max_deltas` deltas.
    TooManyDeltas,
    /// More than `max_delta_bytes` of deltas.
    TooManyDeltaBytes,
    /// The newest snapshot is older than `renew_after_ms`.
    Renew,
    /// The oldest delta is older than `renew_after_ms`.
    DeltasAging,
    /// This device has no mark yet (a newly linked device).
    Announce,
    /// This device's mark is older than `mark_refresh_ms`.
    MarkRefresh,
}

/// What to do; execute uploads in order, then — only if all succeeded — the deletions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Messages to store.
    pub uploads: Vec<Upload>,
    /// Hashes of messages to delete.
    pub deletes: Vec<[u8; 32]>,
    /// Why a snapshot is among the uploads, if one is.
    pub snapshot: Option<SnapshotReason>,
    /// Tombstones pruned from the state for this snapshot.
    pub pruned: usize,
    /// A snapshot is due but the planner's view may be stale: retrieve the whole namespace,
    /// pass it to [`SyncPlanner::reconcile`] and plan again.
    pub needs_listing: bool,
}

/// What one [`SyncPlanner::ingest`] call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// Deltas merged.
    pub deltas: usize,
    /// Snapshots completed and merged.
    pub snapshots: usize,
    /// Messages already known (redelivered).
    pub duplicates: usize,
    /// Messages that did not open or decode; kept, never deleted, left to expire.
    pub undecryptable: usize,
}

/// What the planner believes is stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Deltas stored.
    pub deltas: usize,
    /// Their bytes.
    pub delta_bytes: usize,
    /// Complete snapshots stored.
    pub snapshots: usize,
    /// Bytes of all snapshot chunks (complete or not).
    pub snapshot_bytes: usize,
    /// Messages that did not open.
    pub undecryptable: usize,
    /// Every stored config byte.
    pub total_bytes: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ItemKind {
    Delta,
    Chunk { id: [u8; 16], index: u32 },
    Undecryptable,
}

#[derive(Clone, Debug)]
struct Item {
    size: usize,
    created_ms: i64,
    expires_ms: i64,
    kind: ItemKind,
}

/// The chunks seen of one snapshot.
#[derive(Clone, Debug, Default)]
struct Assembly {
    count: u32,
    /// First payload seen per index; emptied once merged.
    data: BTreeMap<u32, Vec<u8>>,
    merged: bool,
}

/// Tracks the config namespace's messages and plans compaction. Pure: no I/O.
///
/// It keeps no state worth persisting: after a restart, retrieve the namespace from
/// `after_seq = 0` again (bounded: one snapshot and a few deltas) and ingest it.
#[derive(Clone, Debug)]
pub struct SyncPlanner {
    key: [u8; 32],
    account: [u8; 32],
    config: SyncConfig,
    items: BTreeMap<[u8; 32], Item>,
    assemblies: HashMap<[u8; 16], Assembly>,
    /// The inventory matches a full listing, and nothing was written since.
    listed: bool,
}

impl SyncPlanner {
    /// A planner for the account's config key and account key.
    pub fn new(config_key: [u8; 32], account: [u8; 32], config: SyncConfig) -> SyncPlanner {
        SyncPlanner {
            key: config_key,
            account,
            config,
            items: BTreeMap::new(),
            assemblies: HashMap::new(),
            listed: false,
        }
    }

    /// Its thresholds.
    pub fn config(&self) -> &SyncConfig {
        &self.config
    }

    /// Seals a local change for upload (several messages if it is large).
    pub fn delta_uploads(&self, delta: &Delta) -> Result<Vec<Upload>, EnvelopeError> {
        let sealed = envelope::seal_delta(&self.key, &self.account, delta, self.config.max_message_bytes)?;
        Ok(sealed
            .into_iter()
            .map(|data| Upload {
                data,
                ttl_ms: self.config.ttl_ms,
            })
            .collect())
    }

    /// Decrypts and merges retrieved messages into `state`, in any order, any number of
    /// times. Also feed it this device's own uploads once stored. Messages that do not open
    /// are counted and logged, never fatal.
    pub fn ingest(&mut self, state: &mut ConfigState, messages: &[StoredMessage]) -> IngestReport {
        let mut report = IngestReport::default();
        for m in messages {
            let hash = <[u8; 32]>::try_from(m.hash.as_slice()).unwrap_or_else(|_| {
                tidings_proto::hash::message_hash(&self.account, CONFIG_NAMESPACE.unsigned_abs(), &m.data)
            });
            if self.items.contains_key(&hash) {
                report.duplicates += 1;
                continue;
            }
            let kind = self.take_in(state, &m.data, &mut report).unwrap_or_else(|e| {
                report.undecryptable += 1;
                tracing::warn!(seq = m.seq, error = %e, "ignoring a config message that does not open");
                ItemKind::Undecryptable
            });
            let item = Item {
                size: m.data.len(),
                created_ms: m.created_ms,
                expires_ms: m.expires_ms,
                kind,
            };
            self.items.insert(hash, item);
        }
        report
    }

    /// Takes in a full listing of the namespace (every page, from `after_seq = 0` to the
    /// end): merges what is new and forgets what other devices deleted.
    pub fn reconcile(&mut self, state: &mut ConfigState, listing: &[StoredMessage]) -> IngestReport {
        let report = self.ingest(state, listing);
        let present: BTreeSet<[u8; 32]> = listing
            .iter()
            .map(|m| {
                <[u8; 32]>::try_from(m.hash.as_slice()).unwrap_or_else(|_| {
                    tidings_proto::hash::message_hash(&self.account, CONFIG_NAMESPACE.unsigned_abs(), &m.data)
                })
            })
            .collect();
        self.items.retain(|h, _| present.contains(h));
        self.forget_orphans();
        self.listed = true;
        report
    }

    fn take_in(
        &mut self,
        state: &mut ConfigState,
        data: &[u8],
        report: &mut IngestReport,
    ) -> Result<ItemKind, EnvelopeError> {
        let (kind, payload) = envelope::open(&self.key, &self.account, data)?;
        match kind {
            Kind::Delta => {
                let delta = Delta::decode(&payload).map_err(|e| match e {
                    super::ConfigError::Decode(d) => EnvelopeError::Decode(d),
                    _ => EnvelopeError::BadChunk("delta"),
                })?;
                state.merge_delta(&delta);
                report.deltas += 1;
                Ok(ItemKind::Delta)
            }
            Kind::SnapshotChunk => {
                let chunk = SnapshotChunk::decode(&payload)?;
                let kind = ItemKind::Chunk {
                    id: chunk.snapshot_id,
                    index: chunk.index,
                };
                if self.add_chunk(state, chunk)? {
                    report.snapshots += 1;
                }
                Ok(kind)
            }
        }
    }

    /// Files a chunk; merges the snapshot when it completes. True when it merged one.
    fn add_chunk(&mut self, state: &mut ConfigState, chunk: SnapshotChunk) -> Result<bool, EnvelopeError> {
        let a = self
            .assemblies
            .entry(chunk.snapshot_id)
            .or_insert_with(|| Assembly {
                count: chunk.count,
                ..Assembly::default()
            });
        if a.count != chunk.count {
            return Err(EnvelopeError::BadChunk(
                "count differs from the snapshot's other chunks",
            ));
        }
        if a.merged {
            return Ok(false);
        }
        a.data.entry(chunk.index).or_insert(chunk.data);
        if a.data.len() < a.count as usize {
            return Ok(false);
        }
        let bytes: Vec<u8> = std::mem::take(&mut a.data).into_values().flatten().collect();
        a.merged = true;
        match Snapshot::decode(&bytes) {
            Ok(snapshot) => {
                state.merge_snapshot(&snapshot);
                Ok(true)
            }
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a config snapshot that does not decode");
                let id = chunk.snapshot_id;
                for item in self.items.values_mut() {
                    if matches!(item.kind, ItemKind::Chunk { id: i, .. } if i == id) {
                        item.kind = ItemKind::Undecryptable;
                    }
                }
                Err(EnvelopeError::BadChunk("snapshot does not decode"))
            }
        }
    }

    /// Forgets messages the engine deleted.
    pub fn confirm_deleted(&mut self, hashes: &[[u8; 32]]) {
        for h in hashes {
            self.items.remove(h);
        }
        self.forget_orphans();
    }

    fn forget_orphans(&mut self) {
        let live: BTreeSet<[u8; 16]> = self
            .items
            .values()
            .filter_map(|i| match i.kind {
                ItemKind::Chunk { id, .. } => Some(id),
                _ => None,
            })
            .collect();
        self.assemblies.retain(|id, _| live.contains(id));
    }

    /// What is stored, as far as this planner knows.
    pub fn inventory(&self) -> Inventory {
        let mut inv = Inventory::default();
        for item in self.items.values() {
            inv.total_bytes += item.size;
            match item.kind {
                ItemKind::Delta => {
                    inv.deltas += 1;
                    inv.delta_bytes += item.size;
                }
                ItemKind::Chunk { .. } => inv.snapshot_bytes += item.size,
                ItemKind::Undecryptable => inv.undecryptable += 1,
            }
        }
        inv.snapshots = self.snapshot_groups().values().filter(|g| g.complete).count();
        inv
    }

    fn snapshot_groups(&self) -> HashMap<[u8; 16], Group> {
        let mut groups: HashMap<[u8; 16], Group> = HashMap::new();
        for (hash, item) in &self.items {
            if let ItemKind::Chunk { id, index } = item.kind {
                let g = groups.entry(id).or_default();
                g.hashes.push(*hash);
                g.indexes.insert(index);
                g.newest_ms = g.newest_ms.max(item.created_ms);
            }
        }
        for (id, g) in &mut groups {
            let a = self.assemblies.get(id);
            g.merged = a.is_some_and(|a| a.merged);
            g.complete = g.merged && a.is_some_and(|a| g.indexes.len() == a.count as usize);
        }
        groups
    }

    /// Decides what to upload and delete at `now_ms` (Unix ms, the relay's clock as far as
    /// the device knows it).
    pub fn plan(&mut self, state: &mut ConfigState, now_ms: i64) -> Plan {
        self.items.retain(|_, i| i.expires_ms > now_ms);
        self.forget_orphans();
        let groups = self.snapshot_groups();
        let mut plan = Plan::default();
        // Chunks of a snapshot that can no longer be put together are of use to nobody.
        for g in groups.values() {
            let stale = g.newest_ms < now_ms.saturating_sub(self.config.abandon_incomplete_after_ms);
            if (g.merged && !g.complete) || (!g.merged && stale) {
                plan.deletes.extend(&g.hashes);
            }
        }
        let Some(reason) = self.reason(state, now_ms, &groups) else {
            return plan;
        };
        if !self.listed {
            plan.needs_listing = true;
            return plan;
        }
        self.listed = false;
        plan.pruned = state.compact(&self.config.prune);
        match envelope::seal_snapshot(
            &self.key,
            &self.account,
            &state.snapshot(),
            self.config.max_message_bytes,
        ) {
            Ok(chunks) => {
                let ttl_ms = self.config.ttl_ms;
                plan.uploads = chunks.into_iter().map(|data| Upload { data, ttl_ms }).collect();
                plan.snapshot = Some(reason);
                // Everything merged is in the snapshot just written.
                plan.deletes.extend(
                    self.items
                        .iter()
                        .filter(|(_, i)| i.kind == ItemKind::Delta)
                        .map(|(h, _)| *h),
                );
                for g in groups.values().filter(|g| g.complete) {
                    plan.deletes.extend(&g.hashes);
                }
            }
            Err(e) => tracing::warn!(error = %e, "config snapshot too large to store"),
        }
        plan.deletes.sort_unstable();
        plan.deletes.dedup();
        plan
    }

    fn reason(
        &self,
        state: &ConfigState,
        now_ms: i64,
        groups: &HashMap<[u8; 16], Group>,
    ) -> Option<SnapshotReason> {
        let c = &self.config;
        let complete: Vec<&Group> = groups.values().filter(|g| g.complete).collect();
        let deltas: Vec<&Item> = self
            .items
            .values()
            .filter(|i| i.kind == ItemKind::Delta)
            .collect();
        let delta_bytes: usize = deltas.iter().map(|i| i.size).sum();
        let older_than = |t: i64| t < now_ms.saturating_sub(c.renew_after_ms);
        let mark = state.replica().marks.0.get(&state.device()).map(|m| m.clock_ms);
        let now = u64::try_from(now_ms).unwrap_or(0);
        let refresh = u64::try_from(c.mark_refresh_ms).unwrap_or(0);
        if complete.is_empty() {
            return (!deltas.is_empty() || !state.replica().is_empty() || mark.is_none())
                .then_some(SnapshotReason::NoSnapshot);
        }
        if complete.len() > 1 {
            Some(SnapshotReason::SeveralSnapshots)
        } else if deltas.len() > c.max_deltas {
            Some(SnapshotReason::TooManyDeltas)
        } else if delta_bytes > c.max_delta_bytes {
            Some(SnapshotReason::TooManyDeltaBytes)
        } else if complete.iter().all(|g| older_than(g.newest_ms)) {
            Some(SnapshotReason::Renew)
        } else if deltas.iter().any(|i| older_than(i.created_ms)) {
            Some(SnapshotReason::DeltasAging)
        } else if mark.is_none() {
            Some(SnapshotReason::Announce)
        } else if mark.is_some_and(|m| m.saturating_add(refresh) < now) {
            Some(SnapshotReason::MarkRefresh)
        } else {
            None
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Group {
    hashes: Vec<[u8; 32]>,
    indexes: BTreeSet<u32>,
    newest_ms: i64,
    merged: bool,
    complete: bool,
}

#[cfg(test)]
mod tests {
    use super::super::{Contact, DeviceId};
    use super::*;

    const KEY: [u8; 32] = [3; 32];
    const ACCOUNT: [u8; 32] = [4; 32];
    const T0: i64 = 1_700_000_000_000;

    /// A stand-in for the relay namespace: assigns seqs, hashes, expiry.
    #[derive(Default)]
    struct Mailbox {
        seq: u64,
        stored: BTreeMap<[u8; 32], StoredMessage>,
    }

    impl Mailbox {
        fn store(&mut self, u: &Upload, now_ms: i64) -> StoredMessage {
            self.seq += 1;
            let hash = tidings_proto::hash::message_hash(&ACCOUNT, 10, &u.data);
            let m = StoredMessage {
                hash: hash.to_vec(),
                seq: self.seq,
                data: u.data.clone(),
                created_ms: now_ms,
                expires_ms: now_ms + u.ttl_ms,
            };
            self.stored.entry(hash).or_insert(m).clone()
        }

        fn execute(&mut self, planner: &mut SyncPlanner, state: &mut ConfigState, plan: &Plan, now_ms: i64) {
            let stored: Vec<StoredMessage> = plan.uploads.iter().map(|u| self.store(u, now_ms)).collect();
            planner.ingest(state, &stored);
            for h in &plan.deletes {
                self.stored.remove(h);
            }
            planner.confirm_deleted(&plan.deletes);
        }

        fn all(&self) -> Vec<StoredMessage> {
            let mut v: Vec<StoredMessage> = self.stored.values().cloned().collect();
            v.sort_by_key(|m| m.seq);
            v
        }
    }

    fn device(n: u8) -> (ConfigState, SyncPlanner) {
        let mut s = ConfigState::new(DeviceId([n; 16]));
        s.set_physical_time(Some(T0 as u64));
        (s, SyncPlanner::new(KEY, ACCOUNT, SyncConfig::default()))
    }

    fn contact(i: usize) -> Contact {
        Contact {
            account_id: format!("01{i:04}"),
            name: format!("Contact {i}"),
            ..Contact::default()
        }
    }

    fn plan_listed(p: &mut SyncPlanner, s: &mut ConfigState, mb: &Mailbox, now_ms: i64) -> Plan {
        let plan = p.plan(s, now_ms);
        if !plan.needs_listing {
            return plan;
        }
        p.reconcile(s, &mb.all());
        p.plan(s, now_ms)
    }

    #[test]
    fn compacts_past_the_delta_limit_and_deletes_only_what_it_merged() {
        let (mut a, mut pa) = device(1);
        let mut mb = Mailbox::default();
        for i in 0..=pa.config().max_deltas {
            let d = a.add_contact(&contact(i)).expect("valid");
            for u in pa.delta_uploads(&d).expect("fits") {
                let m = mb.store(&u, T0);
                pa.ingest(&mut a, &[m]);
            }
        }
        // A message under some other key: never merged, never deleted.
        let junk = mb.store(
            &Upload {
                data: vec![1; 300],
                ttl_ms: 1_000_000,
            },
            T0,
        );
        assert_eq!(pa.ingest(&mut a, std::slice::from_ref(&junk)).undecryptable, 1);
        let plan = pa.plan(&mut a, T0);
        assert!(plan.needs_listing && plan.uploads.is_empty() && plan.deletes.is_empty());
        pa.reconcile(&mut a, &mb.all());
        let plan = pa.plan(&mut a, T0);
        assert_eq!(plan.snapshot, Some(SnapshotReason::NoSnapshot));
        assert_eq!(plan.deletes.len(), pa.config().max_deltas + 1);
        assert!(!plan.deletes.iter().any(|h| h.as_slice() == junk.hash.as_slice()));
        mb.execute(&mut pa, &mut a, &plan, T0);
        assert_eq!(pa.inventory().snapshots, 1);
        assert_eq!(pa.inventory().deltas, 0);
        // A second device restores from the snapshot alone.
        let (mut b, mut pb) = device(2);
        let r = pb.reconcile(&mut b, &mb.all());
        assert_eq!((r.snapshots, r.undecryptable), (1, 1));
        assert_eq!(b.documents(), a.documents());
        // Its first plan announces it; afterwards there is nothing to do.
        let plan = pb.plan(&mut b, T0 + 10);
        assert_eq!(plan.snapshot, Some(SnapshotReason::Announce));
        mb.execute(&mut pb, &mut b, &plan, T0 + 10);
        pa.ingest(&mut a, &mb.all());
        assert_eq!(plan_listed(&mut pa, &mut a, &mb, T0 + 20), Plan::default());
        assert!(b.replica().marks.0.contains_key(&a.device()));
        assert!(a.replica().marks.0.contains_key(&b.device()));
    }

    #[test]
    fn nothing_is_written_without_a_full_listing() {
        let (mut a, mut pa) = device(1);
        a.set_display_name("x").expect("valid");
        let plan = pa.plan(&mut a, T0);
        assert!(plan.needs_listing && plan.uploads.is_empty());
        pa.reconcile(&mut a, &[]);
        assert!(pa.plan(&mut a, T0).snapshot.is_some());
    }

    #[test]
    fn renews_the_snapshot_before_it_gets_old() {
        let (mut a, mut pa) = device(1);
        let mut mb = Mailbox::default();
        a.set_display_name("x").expect("valid");
        let plan = plan_listed(&mut pa, &mut a, &mb, T0);
        mb.execute(&mut pa, &mut a, &plan, T0);
        assert_eq!(
            plan_listed(&mut pa, &mut a, &mb, T0 + DAY_MS - 1),
            Plan::default()
        );
        let later = T0 + DAY_MS + 1;
        let plan = plan_listed(&mut pa, &mut a, &mb, later);
        assert_eq!(plan.snapshot, Some(SnapshotReason::Renew));
        let old: Vec<[u8; 32]> = mb.stored.keys().copied().collect();
        assert_eq!(plan.deletes, old);
        mb.execute(&mut pa, &mut a, &plan, later);
        assert!(
            mb.stored
                .values()
                .all(|m| m.expires_ms == later + pa.config().ttl_ms)
        );
    }

    #[test]
    fn incomplete_snapshots_wait_then_are_abandoned() {
        let (mut a, _) = device(1);
        for i in 0..800 {
            a.add_contact(&contact(i)).expect("valid");
        }
        let small = SyncConfig {
            max_message_bytes: 4_096,
            ..SyncConfig::default()
        };
        let mut p_small = SyncPlanner::new(KEY, ACCOUNT, small);
        p_small.reconcile(&mut a, &[]);
        let plan = p_small.plan(&mut a, T0);
        assert!(plan.uploads.len() > 3, "chunked: {}", plan.uploads.len());
        let (mut b, mut pb) = device(2);
        let mut mb = Mailbox::default();
        let partial: Vec<StoredMessage> = plan.uploads[1..].iter().map(|u| mb.store(u, T0)).collect();
        assert_eq!(pb.ingest(&mut b, &partial).snapshots, 0);
        assert!(b.contacts().is_empty());
        assert!(
            pb.plan(&mut b, T0 + 1_000).deletes.is_empty(),
            "a recent upload may still complete"
        );
        assert_eq!(pb.plan(&mut b, T0 + 2 * DAY_MS).deletes.len(), partial.len());
    }

    #[test]
    fn garbage_is_counted_never_fatal() {
        let (mut a, mut pa) = device(1);
        let msgs: Vec<StoredMessage> = [vec![], vec![1], vec![0; 40], vec![1; 41], vec![1; 5_000]]
            .into_iter()
            .map(|data| StoredMessage {
                data,
                ..StoredMessage::default()
            })
            .collect();
        let r = pa.ingest(&mut a, &msgs);
        assert_eq!(r.undecryptable, 5);
        assert!(a.replica().is_empty());
        // A valid envelope around a payload that is not a delta.
        let bad = envelope::seal(&KEY, &ACCOUNT, Kind::Delta, &[0xff; 20], 65_536).expect("fits");
        let r = pa.ingest(
            &mut a,
            &[StoredMessage {
                data: bad,
                ..StoredMessage::default()
            }],
        );
        assert_eq!(r.undecryptable, 1);
    }
}
