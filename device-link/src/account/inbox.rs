//! Messages to the account (namespace 0), delivered at least once.
//!
//! A message fetched by polling, carried by a push, or found in the delivery journal is
//! written to the device state as *pending* before anything else happens: before the
//! Retrieve cursor moves past it and before the app hears of it. It stays pending, across
//! crashes and restarts, until the app acknowledges it ([`super::Account::ack`]). So a
//! crash between receipt and acknowledgement, a listener that throws, or no listener at
//! all only means the message is offered again by [`super::Account::pending_messages`].
//!
//! A bounded, persisted set of hashes already admitted keeps a message from being admitted
//! twice (a push and a poll of the same message): pending hashes always count as seen,
//! acknowledged ones for the last [`SEEN_CAPACITY`] messages.
//!
//! Pending messages are kept in batches, one sealed blob each (`inbox-pending-ID`, ID in
//! admission order), so admitting a page costs one write and acknowledging costs a write
//! per batch touched, never a rewrite of everything pending.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use tidings_proto::v1::{PushNotification, StoredMessage};

use crate::state::{DeviceState, StateError};

use super::{AccountError, Inner, MESSAGE_NAMESPACE, engine::PAGE_LIMIT};

/// The device-state blob that holds the seen hashes, oldest first.
const SEEN_BLOB: &str = "inbox-seen";
/// Prefix of the blobs holding pending batches; the rest of the name is the batch id.
const PENDING_PREFIX: &str = "inbox-pending-";
/// How many acknowledged hashes are remembered. A message is admitted again only if it is
/// still stored (14 days by default), and this many newer ones were acknowledged after it.
pub const SEEN_CAPACITY: usize = 4096;
const HASH_LEN: usize = 32;
/// Version byte of a pending batch blob.
const BATCH_VERSION: u8 = 1;
/// hash ‖ seq ‖ created ‖ expires ‖ source ‖ be32 len: the fixed part of a record.
const RECORD_HEAD: usize = HASH_LEN + 8 + 8 + 8 + 1 + 4;

/// How a message reached this install first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// By polling the mailbox.
    Poll,
    /// Inside a push handled by the app (or fetched because a push announced it).
    Push,
    /// Inside a push the notification extension processed (read from the delivery journal).
    Extension,
}

impl Source {
    fn to_byte(self) -> u8 {
        match self {
            Source::Poll => 0,
            Source::Push => 1,
            Source::Extension => 2,
        }
    }

    fn from_byte(b: u8) -> Option<Source> {
        match b {
            0 => Some(Source::Poll),
            1 => Some(Source::Push),
            2 => Some(Source::Extension),
            _ => None,
        }
    }
}

/// A message sent to this account.
#[derive(Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The relay's hash of it (`H(account ‖ be32(0) ‖ data)`), unique per message.
    pub hash: [u8; 32],
    /// Its position in the mailbox.
    pub seq: u64,
    /// What the sender deposited.
    pub data: Vec<u8>,
    /// When the relay stored it (Unix ms).
    pub created_ms: i64,
    /// When the relay drops it (Unix ms).
    pub expires_ms: i64,
    /// How it reached this install first.
    pub source: Source,
}

impl std::fmt::Debug for ReceivedMessage {
    // The data is the sender's (encrypted, presumably); its size is enough for a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceivedMessage")
            .field("seq", &self.seq)
            .field("data_len", &self.data.len())
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl ReceivedMessage {
    fn from_stored(m: StoredMessage) -> Option<ReceivedMessage> {
        Some(ReceivedMessage {
            hash: m.hash.as_slice().try_into().ok()?,
            seq: m.seq,
            data: m.data,
            created_ms: m.created_ms,
            expires_ms: m.expires_ms,
            source: Source::Poll,
        })
    }

    /// The message a push carried (`data_omitted` unset).
    pub(super) fn from_push(note: &PushNotification) -> ReceivedMessage {
        let mut hash = [0u8; HASH_LEN];
        // The relay always sends 32 bytes; anything else cannot match a real message.
        if note.hash.len() == HASH_LEN {
            hash.copy_from_slice(&note.hash);
        }
        ReceivedMessage {
            hash,
            seq: note.seq,
            data: note.data.clone(),
            created_ms: note.created_ms,
            expires_ms: note.expires_ms,
            source: Source::Push,
        }
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.hash);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.created_ms.to_be_bytes());
        out.extend_from_slice(&self.expires_ms.to_be_bytes());
        out.push(self.source.to_byte());
        // A message is at most the relay's limit (a few MiB): it fits 32 bits.
        let len = u32::try_from(self.data.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&self.data);
    }

    /// One record from the front of `bytes`, and the rest.
    fn decode(bytes: &[u8]) -> Option<(ReceivedMessage, &[u8])> {
        if bytes.len() < RECORD_HEAD {
            return None;
        }
        let (head, rest) = bytes.split_at(RECORD_HEAD);
        let be64 = |at: usize| -> [u8; 8] {
            let mut b = [0u8; 8];
            b.copy_from_slice(&head[at..at + 8]);
            b
        };
        let mut hash = [0u8; HASH_LEN];
        hash.copy_from_slice(&head[..HASH_LEN]);
        let source = Source::from_byte(head[56])?;
        let mut len = [0u8; 4];
        len.copy_from_slice(&head[57..61]);
        let len = usize::try_from(u32::from_be_bytes(len)).ok()?;
        if rest.len() < len {
            return None;
        }
        let (data, rest) = rest.split_at(len);
        let message = ReceivedMessage {
            hash,
            seq: u64::from_be_bytes(be64(32)),
            created_ms: i64::from_be_bytes(be64(40)),
            expires_ms: i64::from_be_bytes(be64(48)),
            source,
            data: data.to_vec(),
        };
        Some((message, rest))
    }
}

fn encode_batch(messages: &[ReceivedMessage]) -> Vec<u8> {
    let size: usize = messages.iter().map(|m| RECORD_HEAD + m.data.len()).sum();
    let mut out = Vec::with_capacity(1 + size);
    out.push(BATCH_VERSION);
    for m in messages {
        m.encode_into(&mut out);
    }
    out
}

fn decode_batch(bytes: &[u8]) -> Option<Vec<ReceivedMessage>> {
    let (&version, mut rest) = bytes.split_first()?;
    if version != BATCH_VERSION {
        return None;
    }
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (m, tail) = ReceivedMessage::decode(rest)?;
        out.push(m);
        rest = tail;
    }
    Some(out)
}

fn batch_name(id: u64) -> String {
    format!("{PENDING_PREFIX}{id:020}")
}

/// Admitted hashes (bounded) and the pending messages, by batch.
#[derive(Debug, Default)]
pub(super) struct Inbox {
    order: VecDeque<[u8; 32]>,
    set: HashSet<[u8; 32]>,
    /// Pending messages by batch id, each batch in admission order.
    pending: BTreeMap<u64, Vec<ReceivedMessage>>,
    /// Which batch holds each pending hash.
    pending_at: HashMap<[u8; 32], u64>,
    next_batch: u64,
}

impl Inbox {
    /// Loads the saved hashes and pending batches. A damaged seen-set is started afresh
    /// (it only prevents duplicates); a damaged pending batch is an error, since it holds
    /// messages the app has not acknowledged.
    pub(super) fn load(disk: &DeviceState) -> Result<Inbox, StateError> {
        let mut inbox = Inbox::default();
        if let Some(bytes) = disk.get_blob(SEEN_BLOB)? {
            for chunk in bytes.chunks_exact(HASH_LEN) {
                let mut h = [0u8; HASH_LEN];
                h.copy_from_slice(chunk);
                inbox.insert(h);
            }
        }
        for name in disk.blob_names(PENDING_PREFIX)? {
            let Some(id) = name
                .strip_prefix(PENDING_PREFIX)
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let Some(bytes) = disk.get_blob(&name)? else {
                continue;
            };
            let messages = decode_batch(&bytes).ok_or_else(|| StateError::Corrupt(name.clone()))?;
            for m in &messages {
                inbox.pending_at.insert(m.hash, id);
            }
            inbox.pending.insert(id, messages);
            inbox.next_batch = inbox.next_batch.max(id + 1);
        }
        Ok(inbox)
    }

    fn save_seen(&self, disk: &mut DeviceState) -> Result<(), StateError> {
        let bytes: Vec<u8> = self.order.iter().flatten().copied().collect();
        disk.put_blob(SEEN_BLOB, &bytes)
    }

    fn known(&self, hash: &[u8; 32]) -> bool {
        self.set.contains(hash) || self.pending_at.contains_key(hash)
    }

    /// Remembers `hash`; false when it was known already.
    fn insert(&mut self, hash: [u8; 32]) -> bool {
        if !self.set.insert(hash) {
            return false;
        }
        self.order.push_back(hash);
        while self.order.len() > SEEN_CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }

    /// The messages not admitted before (nor repeated within `messages`).
    fn unseen(&self, messages: Vec<ReceivedMessage>) -> Vec<ReceivedMessage> {
        let mut batch = HashSet::new();
        messages
            .into_iter()
            .filter(|m| !self.known(&m.hash) && batch.insert(m.hash))
            .collect()
    }

    /// Admits `fresh` (already filtered by [`Inbox::unseen`]): writes them as one pending
    /// batch, then remembers their hashes. The write comes first, so a failure leaves the
    /// inbox as it was and the caller does not move its cursor.
    fn admit(&mut self, fresh: &[ReceivedMessage], disk: &mut DeviceState) -> Result<(), StateError> {
        if fresh.is_empty() {
            return Ok(());
        }
        let id = self.next_batch;
        disk.put_blob(&batch_name(id), &encode_batch(fresh))?;
        self.next_batch += 1;
        for m in fresh {
            self.pending_at.insert(m.hash, id);
            self.insert(m.hash);
        }
        self.pending.insert(id, fresh.to_vec());
        // Losing this write only costs duplicate detection for acknowledged messages; the
        // pending batch above already holds these hashes.
        self.save_seen(disk)
    }

    /// Every pending message, oldest admitted first.
    pub(super) fn pending(&self) -> Vec<ReceivedMessage> {
        self.pending.values().flatten().cloned().collect()
    }

    /// Drops the pending messages with these hashes; returns how many were pending. Each
    /// touched batch is rewritten (or removed when emptied) before the next is touched.
    fn ack(&mut self, hashes: &[[u8; 32]], disk: &mut DeviceState) -> Result<usize, StateError> {
        let mut by_batch: BTreeMap<u64, HashSet<[u8; 32]>> = BTreeMap::new();
        for h in hashes {
            if let Some(id) = self.pending_at.get(h) {
                by_batch.entry(*id).or_default().insert(*h);
            }
        }
        let mut acked = 0;
        for (id, gone) in by_batch {
            let Some(batch) = self.pending.get(&id) else {
                continue;
            };
            let rest: Vec<ReceivedMessage> = batch
                .iter()
                .filter(|m| !gone.contains(&m.hash))
                .cloned()
                .collect();
            if rest.is_empty() {
                disk.delete_blob(&batch_name(id))?;
                self.pending.remove(&id);
            } else {
                disk.put_blob(&batch_name(id), &encode_batch(&rest))?;
                self.pending.insert(id, rest);
            }
            for h in &gone {
                self.pending_at.remove(h);
                // Acknowledged: it stays seen, so a late push does not offer it again.
                self.insert(*h);
            }
            acked += gone.len();
        }
        if acked > 0 {
            self.save_seen(disk)?;
        }
        Ok(acked)
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.order.len()
    }
}

/// Drops the seen hashes and pending messages (the account they belonged to signed out).
pub(super) fn forget(disk: &mut DeviceState) -> Result<(), StateError> {
    for name in disk.blob_names(PENDING_PREFIX)? {
        disk.delete_blob(&name)?;
    }
    disk.delete_blob(SEEN_BLOB)
}

impl Inner {
    /// Admits the messages not admitted before as pending, durably; returns them.
    pub(super) fn keep_unseen(
        &self,
        messages: Vec<ReceivedMessage>,
    ) -> Result<Vec<ReceivedMessage>, AccountError> {
        let mut inbox = self.lock_inbox();
        let fresh = inbox.unseen(messages);
        inbox.admit(&fresh, &mut self.lock_disk())?;
        Ok(fresh)
    }

    /// Every pending message, oldest first.
    pub(super) fn pending_messages(&self) -> Vec<ReceivedMessage> {
        self.lock_inbox().pending()
    }

    /// Acknowledges pending messages; returns how many were pending.
    pub(super) fn ack(&self, hashes: &[[u8; 32]]) -> Result<usize, AccountError> {
        let mut inbox = self.lock_inbox();
        Ok(inbox.ack(hashes, &mut self.lock_disk())?)
    }

    pub(super) async fn receive(&self, wait_ms: u32) -> Result<Vec<ReceivedMessage>, AccountError> {
        let start = self.lock_disk().cursor(MESSAGE_NAMESPACE);
        let mut after = start;
        let mut wait = wait_ms;
        let mut fresh = Vec::new();
        loop {
            let page = self
                .client
                .retrieve(&self.identity, MESSAGE_NAMESPACE, after, PAGE_LIMIT, wait)
                .await?;
            wait = 0;
            let more = page.more;
            if let Some(last) = page.messages.last() {
                after = after.max(last.seq);
            }
            let fetched = page
                .messages
                .into_iter()
                .filter_map(ReceivedMessage::from_stored)
                .collect();
            // Each page is made durable before the cursor moves past it.
            fresh.extend(self.admit_and_advance(fetched, after)?);
            if !more {
                break;
            }
        }
        Ok(fresh)
    }

    /// Admits a fetched page as pending, then moves the cursor to `after`.
    fn admit_and_advance(
        &self,
        fetched: Vec<ReceivedMessage>,
        after: u64,
    ) -> Result<Vec<ReceivedMessage>, AccountError> {
        let mut inbox = self.lock_inbox();
        let fresh = inbox.unseen(fetched);
        let mut disk = self.lock_disk();
        inbox.admit(&fresh, &mut disk)?;
        // Another receive may have gone further meanwhile: the cursor never goes back.
        if after > disk.cursor(MESSAGE_NAMESPACE) {
            disk.set_cursor(MESSAGE_NAMESPACE, after)?;
        }
        Ok(fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn msg(n: u8) -> ReceivedMessage {
        ReceivedMessage {
            hash: [n; 32],
            seq: u64::from(n),
            data: vec![n; usize::from(n)],
            created_ms: i64::from(n) * 1000,
            expires_ms: -1,
            source: Source::Poll,
        }
    }

    fn admit(
        inbox: &mut Inbox,
        disk: &mut DeviceState,
        messages: Vec<ReceivedMessage>,
    ) -> Vec<ReceivedMessage> {
        let fresh = inbox.unseen(messages);
        inbox.admit(&fresh, disk).unwrap();
        fresh
    }

    #[test]
    fn each_message_is_admitted_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut disk = DeviceState::open(dir.path(), &[1; 32]).unwrap();
        let mut inbox = Inbox::default();
        assert_eq!(
            admit(&mut inbox, &mut disk, vec![msg(1), msg(2), msg(1)]),
            vec![msg(1), msg(2)]
        );
        assert_eq!(admit(&mut inbox, &mut disk, vec![msg(2), msg(3)]), vec![msg(3)]);
        assert_eq!(inbox.pending(), vec![msg(1), msg(2), msg(3)]);
    }

    #[test]
    fn the_seen_set_is_bounded_and_forgets_the_oldest() {
        let mut inbox = Inbox::default();
        for i in 0..SEEN_CAPACITY + 10 {
            let mut h = [0u8; 32];
            h[..8].copy_from_slice(&(i as u64).to_be_bytes());
            assert!(inbox.insert(h));
        }
        assert_eq!(inbox.len(), SEEN_CAPACITY);
        assert!(inbox.insert([0; 32]), "the oldest was forgotten");
        let mut newest = [0u8; 32];
        newest[..8].copy_from_slice(&((SEEN_CAPACITY + 9) as u64).to_be_bytes());
        assert!(!inbox.insert(newest));
    }

    #[test]
    fn pending_messages_survive_reopening_until_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let mut disk = DeviceState::open(dir.path(), &[1; 32]).unwrap();
        let mut inbox = Inbox::default();
        admit(&mut inbox, &mut disk, vec![msg(1), msg(2)]);
        admit(&mut inbox, &mut disk, vec![msg(3)]);
        drop(inbox);
        // A "crash": nothing but the disk survives.
        let mut again = Inbox::load(&disk).unwrap();
        assert_eq!(again.pending(), vec![msg(1), msg(2), msg(3)]);
        assert!(
            admit(&mut again, &mut disk, vec![msg(1), msg(3)]).is_empty(),
            "pending counts as seen"
        );
        assert_eq!(again.ack(&[[2; 32], [3; 32], [9; 32]], &mut disk).unwrap(), 2);
        assert_eq!(
            again.ack(&[[2; 32]], &mut disk).unwrap(),
            0,
            "acknowledging twice is harmless"
        );
        let mut third = Inbox::load(&disk).unwrap();
        assert_eq!(third.pending(), vec![msg(1)]);
        assert!(
            admit(&mut third, &mut disk, vec![msg(2), msg(3)]).is_empty(),
            "acknowledged stays seen"
        );
        assert_eq!(
            disk.blob_names(PENDING_PREFIX).unwrap().len(),
            1,
            "the emptied batch is gone"
        );
        forget(&mut disk).unwrap();
        let empty = Inbox::load(&disk).unwrap();
        assert_eq!((empty.len(), empty.pending().len()), (0, 0));
    }

    #[test]
    fn more_pending_than_the_seen_capacity_is_still_deduplicated() {
        let dir = tempfile::tempdir().unwrap();
        let mut disk = DeviceState::open(dir.path(), &[1; 32]).unwrap();
        let mut inbox = Inbox::default();
        let many: Vec<ReceivedMessage> = (0..SEEN_CAPACITY + 100)
            .map(|i| {
                let mut m = msg(0);
                m.hash[..8].copy_from_slice(&(i as u64).to_be_bytes());
                m
            })
            .collect();
        assert_eq!(admit(&mut inbox, &mut disk, many.clone()).len(), many.len());
        assert!(admit(&mut inbox, &mut disk, many).is_empty());
    }

    #[test]
    fn a_damaged_pending_batch_is_an_error_not_a_silent_loss() {
        let dir = tempfile::tempdir().unwrap();
        let mut disk = DeviceState::open(dir.path(), &[1; 32]).unwrap();
        disk.put_blob(&batch_name(7), &[BATCH_VERSION, 1, 2, 3]).unwrap();
        assert!(matches!(Inbox::load(&disk), Err(StateError::Corrupt(_))));
    }

    #[test]
    fn debug_shows_no_message_data() {
        let mut m = msg(3);
        m.data = b"secret words".to_vec();
        let shown = format!("{m:?}");
        assert!(!shown.contains("secret") && !shown.contains("115"), "{shown}");
    }

    proptest! {
        #[test]
        fn batches_round_trip(
            messages in proptest::collection::vec(
                (any::<[u8; 32]>(), any::<u64>(), any::<i64>(), any::<i64>(), 0u8..3,
                 proptest::collection::vec(any::<u8>(), 0..64)),
                0..8,
            )
        ) {
            let messages: Vec<ReceivedMessage> = messages
                .into_iter()
                .map(|(hash, seq, created_ms, expires_ms, source, data)| ReceivedMessage {
                    hash, seq, created_ms, expires_ms, data,
                    source: Source::from_byte(source).unwrap(),
                })
                .collect();
            prop_assert_eq!(decode_batch(&encode_batch(&messages)), Some(messages));
        }

        #[test]
        fn garbage_batches_do_not_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_batch(&bytes);
        }
    }
}
