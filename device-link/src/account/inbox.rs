//! Messages to the account (namespace 0): the Retrieve cursor and a bounded, persisted
//! set of message hashes already handed to the app, so a message delivered by a push is
//! not returned again by [`super::Account::receive`].

use std::collections::{HashSet, VecDeque};

use tidings_proto::v1::{PushNotification, StoredMessage};

use crate::state::{DeviceState, StateError};

use super::{AccountError, Inner, MESSAGE_NAMESPACE, engine::PAGE_LIMIT};

/// The device-state blob that holds the seen hashes, oldest first.
const SEEN_BLOB: &str = "inbox-seen";
/// How many hashes are remembered. A message is redelivered only if it is still stored
/// (14 days by default) and this many newer ones came after it.
pub const SEEN_CAPACITY: usize = 4096;
const HASH_LEN: usize = 32;

/// A message sent to this account.
#[derive(Clone, Debug, PartialEq, Eq)]
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
}

impl ReceivedMessage {
    fn from_stored(m: StoredMessage) -> Option<ReceivedMessage> {
        Some(ReceivedMessage {
            hash: m.hash.as_slice().try_into().ok()?,
            seq: m.seq,
            data: m.data,
            created_ms: m.created_ms,
            expires_ms: m.expires_ms,
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
        }
    }
}

/// The hashes handed to the app, bounded to [`SEEN_CAPACITY`], oldest dropped first.
#[derive(Debug, Default)]
pub(super) struct Inbox {
    order: VecDeque<[u8; 32]>,
    set: HashSet<[u8; 32]>,
}

impl Inbox {
    /// Loads the saved hashes (none when there is no blob or it is damaged).
    pub(super) fn load(disk: &DeviceState) -> Result<Inbox, StateError> {
        let mut inbox = Inbox::default();
        if let Some(bytes) = disk.get_blob(SEEN_BLOB)? {
            for chunk in bytes.chunks_exact(HASH_LEN) {
                let mut h = [0u8; HASH_LEN];
                h.copy_from_slice(chunk);
                inbox.insert(h);
            }
        }
        Ok(inbox)
    }

    fn save(&self, disk: &mut DeviceState) -> Result<(), StateError> {
        let bytes: Vec<u8> = self.order.iter().flatten().copied().collect();
        disk.put_blob(SEEN_BLOB, &bytes)
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

    /// Keeps the messages not seen before (and not repeated within `messages`), and
    /// remembers them.
    fn admit(&mut self, messages: Vec<ReceivedMessage>) -> Vec<ReceivedMessage> {
        messages.into_iter().filter(|m| self.insert(m.hash)).collect()
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.order.len()
    }
}

/// Drops the seen hashes (the account they belonged to signed out).
pub(super) fn forget(disk: &mut DeviceState) -> Result<(), StateError> {
    disk.delete_blob(SEEN_BLOB)
}

impl Inner {
    /// Filters out messages already handed to the app, remembers the rest and saves.
    pub(super) fn keep_unseen(
        &self,
        messages: Vec<ReceivedMessage>,
    ) -> Result<Vec<ReceivedMessage>, AccountError> {
        let mut inbox = self.lock_inbox();
        let fresh = inbox.admit(messages);
        if !fresh.is_empty() {
            inbox.save(&mut self.lock_disk())?;
        }
        Ok(fresh)
    }

    pub(super) async fn receive(&self, wait_ms: u32) -> Result<Vec<ReceivedMessage>, AccountError> {
        let start = self.lock_disk().cursor(MESSAGE_NAMESPACE);
        let mut after = start;
        let mut wait = wait_ms;
        let mut fetched = Vec::new();
        loop {
            let page = self
                .client
                .retrieve(&self.identity, MESSAGE_NAMESPACE, after, PAGE_LIMIT, wait)
                .await?;
            wait = 0;
            if let Some(last) = page.messages.last() {
                after = after.max(last.seq);
            }
            fetched.extend(page.messages.into_iter().filter_map(ReceivedMessage::from_stored));
            if !page.more {
                break;
            }
        }
        let mut inbox = self.lock_inbox();
        let fresh = inbox.admit(fetched);
        let mut disk = self.lock_disk();
        if !fresh.is_empty() {
            inbox.save(&mut disk)?;
        }
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

    fn msg(n: u8) -> ReceivedMessage {
        ReceivedMessage {
            hash: [n; 32],
            seq: u64::from(n),
            data: vec![n],
            created_ms: 0,
            expires_ms: 0,
        }
    }

    #[test]
    fn each_message_is_admitted_once() {
        let mut inbox = Inbox::default();
        assert_eq!(inbox.admit(vec![msg(1), msg(2), msg(1)]), vec![msg(1), msg(2)]);
        assert_eq!(inbox.admit(vec![msg(2), msg(3)]), vec![msg(3)]);
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
    fn the_seen_set_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let mut disk = DeviceState::open(dir.path(), &[1; 32]).unwrap();
        let mut inbox = Inbox::default();
        inbox.admit(vec![msg(1), msg(2)]);
        inbox.save(&mut disk).unwrap();
        let mut again = Inbox::load(&disk).unwrap();
        assert!(again.admit(vec![msg(1), msg(2)]).is_empty());
        forget(&mut disk).unwrap();
        assert_eq!(Inbox::load(&disk).unwrap().len(), 0);
    }
}
