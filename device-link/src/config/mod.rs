//! The account's config documents — `profile`, `contacts`, `conversations`, `settings` —
//! as a state-based CRDT that converges whatever order devices see each other's changes
//! in, and their encrypted sync through the mailbox (docs/config-sync.md).
//!
//! [`ConfigState`] is one device's replica plus its clock: every mutation applies locally
//! and returns the [`Delta`] to upload; [`ConfigState::merge_delta`] and
//! [`ConfigState::merge_snapshot`] take in other devices' changes. [`envelope`] seals them
//! for the relay and [`sync`] plans uploads, compaction and deletions.

pub mod change;
pub mod contacts;
pub mod conversations;
pub mod crdt;
pub mod envelope;
pub mod hlc;
pub mod profile;
pub mod settings;
pub mod sync;
mod wire;

use std::collections::BTreeMap;

use prost::Message;
use serde::Serialize;
use tidings_proto::v1 as pb;

pub use change::Change;
pub use contacts::{Contact, ContactUpdate, ContactsDoc};
pub use conversations::{Conversation, ConversationUpdate, ConversationsDoc};
use crdt::{Entry, EntryMap, Lww, Mark, Marks, MaxReg, Record};
pub use hlc::{DeviceId, Hlc, HlcClock, Stamp};
pub use profile::{Avatar, Profile, ProfileDoc};
pub use settings::{NotificationMode, Previews, Settings, SettingsDoc};

/// Longest display name, contact name or nickname, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest account id or conversation id (a map key), in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// Longest avatar URL, in bytes.
pub const MAX_URL_BYTES: usize = 2048;
/// Longest avatar key, in bytes.
pub const MAX_AVATAR_KEY_BYTES: usize = 64;

/// What can go wrong with config documents.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// An input exceeds its limit.
    #[error("{field} is {len} bytes long; at most {max} are allowed")]
    TooLong {
        /// Which input.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A map key is empty.
    #[error("{field} must not be empty")]
    Empty {
        /// Which input.
        field: &'static str,
    },
    /// A config message is not valid protobuf.
    #[error("config message does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    /// Saved local state is unreadable.
    #[error("saved config state is corrupt: {0}")]
    Corrupt(&'static str),
}

fn check_len(field: &'static str, len: usize, max: usize) -> Result<(), ConfigError> {
    if len > max {
        return Err(ConfigError::TooLong { field, len, max });
    }
    Ok(())
}

fn check_key(field: &'static str, key: &str) -> Result<(), ConfigError> {
    if key.is_empty() {
        return Err(ConfigError::Empty { field });
    }
    check_len(field, key.len(), MAX_KEY_BYTES)
}

/// All four documents as the app shows them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Documents {
    /// Document `profile`.
    pub profile: Profile,
    /// Document `contacts`, sorted by account id.
    pub contacts: Vec<Contact>,
    /// Document `conversations`, sorted by id.
    pub conversations: Vec<Conversation>,
    /// Document `settings`.
    pub settings: Settings,
}

/// The joinable state: the four documents with every register, the device marks and the
/// floor. Deltas are partial replicas (no marks, floor 0); snapshots are whole ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replica {
    /// Document `profile`.
    pub profile: ProfileDoc,
    /// Document `contacts`.
    pub contacts: ContactsDoc,
    /// Document `conversations`.
    pub conversations: ConversationsDoc,
    /// Document `settings`.
    pub settings: SettingsDoc,
    /// What each device vouched its state contained (bounds tombstone pruning).
    pub marks: Marks,
    /// The state is complete below this wall time: a merge takes registers below the
    /// greater floor only from the side that has it, so pruned deletions stay pruned.
    pub floor_ms: u64,
}

impl Replica {
    /// Joins `other` into `self`. Commutative, associative and idempotent.
    pub fn merge(&mut self, other: &Replica) {
        let floor = self.floor_ms.max(other.floor_ms);
        if self.floor_ms < floor {
            self.drop_below(floor);
        }
        let min_wall = if other.floor_ms < floor { floor } else { 0 };
        self.profile.join(&other.profile, min_wall);
        crdt::join_map(&mut self.contacts, &other.contacts, min_wall);
        crdt::join_map(&mut self.conversations, &other.conversations, min_wall);
        self.settings.join(&other.settings, min_wall);
        self.marks.join(&other.marks);
        self.floor_ms = floor;
        self.marks.drop_below(floor);
    }

    /// Drops every register below `floor_ms` (the lower side of a merge does this).
    fn drop_below(&mut self, floor_ms: u64) {
        self.profile.drop_below(floor_ms);
        crdt::drop_map_below(&mut self.contacts, floor_ms);
        crdt::drop_map_below(&mut self.conversations, floor_ms);
        self.settings.drop_below(floor_ms);
        self.marks.drop_below(floor_ms);
    }

    /// Raises the floor to `prune_before` and removes the hidden entries (tombstones)
    /// entirely below it. Returns how many entries went.
    pub fn prune(&mut self, prune_before: u64) -> usize {
        if prune_before <= self.floor_ms {
            return 0;
        }
        self.floor_ms = prune_before;
        self.marks.drop_below(prune_before);
        crdt::prune_map(&mut self.contacts, prune_before)
            + crdt::prune_map(&mut self.conversations, prune_before)
    }

    /// The greatest clock reading anywhere in the state, for the local clock to observe.
    pub fn max_hlc(&self) -> Hlc {
        let stamps = [
            self.profile.max_stamp(),
            crdt::map_max_stamp(&self.contacts),
            crdt::map_max_stamp(&self.conversations),
            self.settings.max_stamp(),
        ];
        let walls = Hlc {
            wall_ms: self.marks.max_wall().max(self.floor_ms),
            counter: 0,
        };
        stamps.into_iter().flatten().map(|s| s.hlc).fold(walls, Hlc::max)
    }

    /// Holds no register, mark or floor.
    pub fn is_empty(&self) -> bool {
        *self == Replica::default()
    }

    /// The documents as shown.
    pub fn documents(&self) -> Documents {
        Documents {
            profile: self.profile.read(),
            contacts: self
                .contacts
                .iter()
                .filter_map(|(k, e)| contacts::read(k, e))
                .collect(),
            conversations: self
                .conversations
                .iter()
                .filter_map(|(k, e)| conversations::read(k, e))
                .collect(),
            settings: self.settings.read(),
        }
    }

    fn documents_out(&self) -> pb::ConfigDocuments {
        pb::ConfigDocuments {
            profile: self.profile.to_proto(),
            contacts: self
                .contacts
                .iter()
                .map(|(k, e)| contacts::entry_out(k, e))
                .collect(),
            conversations: self
                .conversations
                .iter()
                .map(|(k, e)| conversations::entry_out(k, e))
                .collect(),
            settings: self.settings.to_proto(),
        }
    }

    /// Documents from the wire (floor 0, no marks). Repeated keys join; registers without
    /// a usable stamp are ignored.
    fn documents_in(p: Option<&pb::ConfigDocuments>) -> Replica {
        let Some(p) = p else { return Replica::default() };
        fn add<R: Record>(map: &mut EntryMap<R>, key: &str, e: Entry<R>) {
            if !e.is_empty() {
                let mut one = BTreeMap::new();
                one.insert(key.to_owned(), e);
                crdt::join_map(map, &one, 0);
            }
        }
        let mut r = Replica {
            profile: ProfileDoc::from_proto(p.profile.as_ref()),
            settings: SettingsDoc::from_proto(p.settings.as_ref()),
            ..Replica::default()
        };
        for c in &p.contacts {
            add(&mut r.contacts, &c.account_id, contacts::entry_in(c));
        }
        for c in &p.conversations {
            add(&mut r.conversations, &c.id, conversations::entry_in(c));
        }
        r
    }

    fn snapshot_out(&self) -> pb::ConfigSnapshot {
        pb::ConfigSnapshot {
            documents: Some(self.documents_out()),
            floor_ms: self.floor_ms,
            marks: wire::marks_out(&self.marks),
        }
    }

    fn snapshot_in(p: &pb::ConfigSnapshot) -> Replica {
        let mut r = Replica::documents_in(p.documents.as_ref());
        r.marks = wire::marks_in(&p.marks);
        r.floor_ms = p.floor_ms;
        // A snapshot straight from a writer has nothing below its floor except live
        // registers; normalise anyway so that equal states compare equal.
        r.marks.drop_below(r.floor_ms);
        r
    }

    /// The number of independently splittable parts: profile+settings, then each entry.
    fn parts(&self) -> usize {
        usize::from(!self.profile.is_empty() || !self.settings.is_empty())
            + self.contacts.len()
            + self.conversations.len()
    }
}

/// A change: only the registers one or more mutations wrote. Upload it, merge it anywhere.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delta {
    replica: Replica,
}

impl Delta {
    /// Wraps the registers of a change (marks and floor are not part of a delta).
    fn from_replica(mut replica: Replica) -> Delta {
        replica.marks = Marks::default();
        replica.floor_ms = 0;
        Delta { replica }
    }

    /// Writes nothing (the mutation changed nothing).
    pub fn is_empty(&self) -> bool {
        self.replica.is_empty()
    }

    /// Folds `other` in, so several changes upload as one.
    pub fn merge(&mut self, other: &Delta) {
        self.replica.merge(&other.replica);
    }

    /// The registers, as a partial replica.
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// The `tidings.v1.ConfigDelta` encoding.
    pub fn encode(&self) -> Vec<u8> {
        pb::ConfigDelta {
            documents: Some(self.replica.documents_out()),
        }
        .encode_to_vec()
    }

    /// Decodes a `tidings.v1.ConfigDelta`.
    pub fn decode(bytes: &[u8]) -> Result<Delta, ConfigError> {
        let p = pb::ConfigDelta::decode(bytes)?;
        Ok(Delta {
            replica: Replica::documents_in(p.documents.as_ref()),
        })
    }

    /// Splits into two non-empty deltas whose merge is `self`; `None` when it is one part.
    pub fn split(&self) -> Option<(Delta, Delta)> {
        let parts = self.replica.parts();
        if parts < 2 {
            return None;
        }
        let mut left = self.replica.clone();
        let mut right = Replica::default();
        let mut keep = parts / 2;
        if !left.profile.is_empty() || !left.settings.is_empty() {
            keep -= 1;
        }
        let contacts_kept = keep.min(left.contacts.len());
        if let Some(k) = left.contacts.keys().nth(contacts_kept).cloned() {
            right.contacts = left.contacts.split_off(&k);
        }
        let convs_kept = keep - contacts_kept;
        if let Some(k) = left.conversations.keys().nth(convs_kept).cloned() {
            right.conversations = left.conversations.split_off(&k);
        }
        Some((Delta { replica: left }, Delta { replica: right }))
    }
}

/// A device's whole replica, documents, marks and floor, as written to the relay.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    replica: Replica,
}

impl Snapshot {
    /// The replica it carries.
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// The `tidings.v1.ConfigSnapshot` encoding.
    pub fn encode(&self) -> Vec<u8> {
        self.replica.snapshot_out().encode_to_vec()
    }

    /// Decodes a `tidings.v1.ConfigSnapshot`.
    pub fn decode(bytes: &[u8]) -> Result<Snapshot, ConfigError> {
        Ok(Snapshot {
            replica: Replica::snapshot_in(&pb::ConfigSnapshot::decode(bytes)?),
        })
    }
}

/// When tombstones may go: see docs/config-sync.md, "Pruning".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrunePolicy {
    /// Tombstones must be this much older than the horizon every device vouched for.
    pub margin_ms: u64,
    /// A device whose mark is older than this no longer holds pruning back.
    pub retire_after_ms: u64,
}

impl Default for PrunePolicy {
    fn default() -> PrunePolicy {
        const DAY: u64 = 86_400_000;
        PrunePolicy {
            margin_ms: 7 * DAY,
            retire_after_ms: 60 * DAY,
        }
    }
}

/// Version byte of [`ConfigState::save`]'s format.
const SAVE_VERSION: u8 = 1;
/// version(1) ‖ device(16) ‖ be64(wall_ms) ‖ be32(counter).
const SAVE_HEADER: usize = 1 + 16 + 8 + 4;

/// One device's config: the replica, its hybrid logical clock and its device id.
#[derive(Clone, Debug)]
pub struct ConfigState {
    replica: Replica,
    clock: HlcClock,
    device: DeviceId,
    fixed_time: Option<u64>,
}

impl ConfigState {
    /// An empty state for `device`. A new device must merge the account's config before it
    /// uploads anything of its own (merging can never lose data, but an empty device that
    /// compacts first has nothing to offer).
    pub fn new(device: DeviceId) -> ConfigState {
        ConfigState {
            replica: Replica::default(),
            clock: HlcClock::new(),
            device,
            fixed_time: None,
        }
    }

    /// This device's id.
    pub fn device(&self) -> DeviceId {
        self.device
    }

    /// The replica (every register, marks, floor).
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// The clock's latest reading.
    pub fn clock(&self) -> Hlc {
        self.clock.last()
    }

    /// Pins the physical clock to `ms` (`None`: the system clock). For tests and for apps
    /// that keep their own trusted time.
    pub fn set_physical_time(&mut self, ms: Option<u64>) {
        self.fixed_time = ms;
    }

    fn stamp(&mut self) -> Stamp {
        let hlc = match self.fixed_time {
            Some(ms) => self.clock.now_at(ms),
            None => self.clock.now(),
        };
        Stamp {
            hlc,
            device: self.device,
        }
    }

    fn apply(&mut self, change: Replica) -> Delta {
        let delta = Delta::from_replica(change);
        self.replica.merge(&delta.replica);
        delta
    }

    fn apply_contact(&mut self, account_id: &str, entry: Option<Entry<contacts::ContactFields>>) -> Delta {
        let mut change = Replica::default();
        if let Some(e) = entry {
            change.contacts.insert(account_id.to_owned(), e);
        }
        self.apply(change)
    }

    fn apply_conversation(
        &mut self,
        id: &str,
        entry: Option<Entry<conversations::ConversationFields>>,
    ) -> Delta {
        let mut change = Replica::default();
        if let Some(e) = entry {
            change.conversations.insert(id.to_owned(), e);
        }
        self.apply(change)
    }

    /// Sets the display name.
    pub fn set_display_name(&mut self, name: &str) -> Result<Delta, ConfigError> {
        check_len("display name", name.len(), MAX_NAME_BYTES)?;
        if self
            .replica
            .profile
            .display_name
            .as_ref()
            .is_some_and(|r| r.value == name)
        {
            return Ok(Delta::default());
        }
        let mut change = Replica::default();
        change.profile.display_name = Some(Lww::new(self.stamp(), name.to_owned()));
        Ok(self.apply(change))
    }

    /// Sets (or with `None` removes) the avatar.
    pub fn set_avatar(&mut self, avatar: Option<Avatar>) -> Result<Delta, ConfigError> {
        if let Some(a) = &avatar {
            check_len("avatar url", a.url.len(), MAX_URL_BYTES)?;
            check_len("avatar key", a.key.len(), MAX_AVATAR_KEY_BYTES)?;
        }
        if self.replica.profile.read().avatar == avatar {
            return Ok(Delta::default());
        }
        let mut change = Replica::default();
        change.profile.avatar = Some(Lww::new(self.stamp(), avatar));
        Ok(self.apply(change))
    }

    fn check_contact(c: &Contact) -> Result<(), ConfigError> {
        check_key("account id", &c.account_id)?;
        check_len("contact name", c.name.len(), MAX_NAME_BYTES)?;
        check_len(
            "nickname",
            c.nickname.as_ref().map_or(0, String::len),
            MAX_NAME_BYTES,
        )
    }

    /// Adds `contact`, or replaces every field of the contact with its account id.
    pub fn add_contact(&mut self, contact: &Contact) -> Result<Delta, ConfigError> {
        Self::check_contact(contact)?;
        if self.contact(&contact.account_id).as_ref() == Some(contact) {
            return Ok(Delta::default());
        }
        let entry = contacts::whole(self.stamp(), contact);
        Ok(self.apply_contact(&contact.account_id, Some(entry)))
    }

    fn upsert_contact(&mut self, id: &str, u: &ContactUpdate, create: bool) -> Result<Delta, ConfigError> {
        check_key("account id", id)?;
        let current = self.contact(id);
        check_len(
            "contact name",
            u.name.as_ref().map_or(0, String::len),
            MAX_NAME_BYTES,
        )?;
        check_len(
            "nickname",
            u.nickname
                .as_ref()
                .and_then(Option::as_ref)
                .map_or(0, String::len),
            MAX_NAME_BYTES,
        )?;
        let stamp = self.stamp();
        let entry = contacts::update(id, current, stamp, u, create);
        Ok(self.apply_contact(id, entry))
    }

    /// Changes some fields of a contact; a contact not shown is created whole (defaults
    /// plus `update`).
    pub fn update_contact(&mut self, account_id: &str, update: &ContactUpdate) -> Result<Delta, ConfigError> {
        self.upsert_contact(account_id, update, true)
    }

    /// Deletes a contact (a tombstone until every device has seen it).
    pub fn remove_contact(&mut self, account_id: &str) -> Delta {
        if self.contact(account_id).is_none() {
            return Delta::default();
        }
        let entry = Entry {
            exists: Some(Lww::new(self.stamp(), false)),
            ..Entry::default()
        };
        self.apply_contact(account_id, Some(entry))
    }

    /// Blocks an account, creating its contact when there is none.
    pub fn block(&mut self, account_id: &str) -> Result<Delta, ConfigError> {
        self.upsert_contact(
            account_id,
            &ContactUpdate {
                blocked: Some(true),
                ..ContactUpdate::default()
            },
            true,
        )
    }

    /// Unblocks a contact; nothing happens when there is no such contact.
    pub fn unblock(&mut self, account_id: &str) -> Delta {
        let u = ContactUpdate {
            blocked: Some(false),
            ..ContactUpdate::default()
        };
        self.upsert_contact(account_id, &u, false).unwrap_or_default()
    }

    /// Mutes a contact's notifications until `until_ms` (`None`: unmute), creating the
    /// contact when there is none.
    pub fn set_muted_until(&mut self, account_id: &str, until_ms: Option<u64>) -> Result<Delta, ConfigError> {
        self.upsert_contact(
            account_id,
            &ContactUpdate {
                muted_until: Some(until_ms.filter(|&t| t != 0)),
                ..ContactUpdate::default()
            },
            true,
        )
    }

    fn upsert_conversation(&mut self, id: &str, u: &ConversationUpdate) -> Result<Delta, ConfigError> {
        check_key("conversation id", id)?;
        let current = self.conversation(id);
        let kept_read = self
            .replica
            .conversations
            .get(id)
            .and_then(|e| e.fields.last_read.as_ref())
            .map(MaxReg::value);
        let stamp = self.stamp();
        let entry = conversations::update(id, current, kept_read, stamp, u);
        Ok(self.apply_conversation(id, entry))
    }

    /// Marks every message up to `up_to_ms` read (the marker never goes back) and clears
    /// "marked unread".
    pub fn mark_read(&mut self, conversation: &str, up_to_ms: u64) -> Result<Delta, ConfigError> {
        let unread = self.conversation(conversation).is_some_and(|c| c.marked_unread);
        self.upsert_conversation(
            conversation,
            &ConversationUpdate {
                last_read_ms: Some(up_to_ms),
                marked_unread: unread.then_some(false),
                ..ConversationUpdate::default()
            },
        )
    }

    /// Shows a conversation as unread.
    pub fn mark_unread(&mut self, conversation: &str) -> Result<Delta, ConfigError> {
        self.upsert_conversation(
            conversation,
            &ConversationUpdate {
                marked_unread: Some(true),
                ..ConversationUpdate::default()
            },
        )
    }

    /// Pins or unpins a conversation.
    pub fn set_pinned(&mut self, conversation: &str, pinned: bool) -> Result<Delta, ConfigError> {
        self.upsert_conversation(
            conversation,
            &ConversationUpdate {
                pinned: Some(pinned),
                ..Default::default()
            },
        )
    }

    /// Sets a conversation's order among pinned ones (greater first).
    pub fn set_priority(&mut self, conversation: &str, priority: i32) -> Result<Delta, ConfigError> {
        self.upsert_conversation(
            conversation,
            &ConversationUpdate {
                priority: Some(priority),
                ..ConversationUpdate::default()
            },
        )
    }

    /// Deletes a conversation's state (a tombstone until every device has seen it). Its
    /// read marker survives, since "read up to" stays true.
    pub fn remove_conversation(&mut self, conversation: &str) -> Delta {
        if self.conversation(conversation).is_none() {
            return Delta::default();
        }
        let entry = Entry {
            exists: Some(Lww::new(self.stamp(), false)),
            ..Entry::default()
        };
        self.apply_conversation(conversation, Some(entry))
    }

    /// Chooses Fast or Slow Mode for the account.
    pub fn set_notification_mode(&mut self, mode: NotificationMode) -> Delta {
        if self.settings().notification_mode == mode && self.replica.settings.notification_mode.is_some() {
            return Delta::default();
        }
        let mut change = Replica::default();
        change.settings.notification_mode = Some(Lww::new(self.stamp(), SettingsDoc::mode_value(mode)));
        self.apply(change)
    }

    /// Sets what notifications show.
    pub fn set_previews(&mut self, previews: Previews) -> Delta {
        if self
            .replica
            .settings
            .previews
            .as_ref()
            .is_some_and(|r| r.value == previews)
        {
            return Delta::default();
        }
        let mut change = Replica::default();
        change.settings.previews = Some(Lww::new(self.stamp(), previews));
        self.apply(change)
    }

    /// The profile.
    pub fn profile(&self) -> Profile {
        self.replica.profile.read()
    }

    /// One contact, if shown.
    pub fn contact(&self, account_id: &str) -> Option<Contact> {
        self.replica
            .contacts
            .get(account_id)
            .and_then(|e| contacts::read(account_id, e))
    }

    /// Every contact shown, sorted by account id.
    pub fn contacts(&self) -> Vec<Contact> {
        self.replica.documents().contacts
    }

    /// One conversation, if shown.
    pub fn conversation(&self, id: &str) -> Option<Conversation> {
        self.replica
            .conversations
            .get(id)
            .and_then(|e| conversations::read(id, e))
    }

    /// Every conversation shown, sorted by id.
    pub fn conversations(&self) -> Vec<Conversation> {
        self.replica
            .conversations
            .iter()
            .filter_map(|(k, e)| conversations::read(k, e))
            .collect()
    }

    /// The settings.
    pub fn settings(&self) -> Settings {
        self.replica.settings.read()
    }

    /// All four documents as shown.
    pub fn documents(&self) -> Documents {
        self.replica.documents()
    }

    /// Takes in another device's change. Idempotent; order does not matter.
    pub fn merge_delta(&mut self, delta: &Delta) {
        self.clock.observe(delta.replica.max_hlc());
        self.replica.merge(&delta.replica);
    }

    /// Takes in another device's whole state. Idempotent; order does not matter.
    pub fn merge_snapshot(&mut self, snapshot: &Snapshot) {
        self.clock.observe(snapshot.replica.max_hlc());
        self.replica.merge(&snapshot.replica);
    }

    /// The whole replica as it is now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            replica: self.replica.clone(),
        }
    }

    /// Prepares the replica for a snapshot: renews this device's mark (what it vouches to
    /// contain) and prunes the tombstones that every device has passed by `policy.margin_ms`.
    /// Returns how many entries were pruned. Call it only when the device has merged
    /// everything stored in the config namespace.
    pub fn compact(&mut self, policy: &PrunePolicy) -> usize {
        let clock = self.stamp().hlc.wall_ms;
        let me = self.device;
        let mut known: Vec<DeviceId> = self
            .replica
            .marks
            .0
            .iter()
            .filter(|(d, m)| **d != me && m.clock_ms.saturating_add(policy.retire_after_ms) >= clock)
            .map(|(d, _)| *d)
            .collect();
        let seen = known
            .iter()
            .map(|d| (*d, self.replica.marks.0.get(d).map_or(0, |m| m.clock_ms)))
            .chain(std::iter::once((me, clock)))
            .collect();
        self.replica.marks.0.insert(
            me,
            Mark {
                clock_ms: clock,
                seen,
            },
        );
        known.push(me);
        let horizon = self.replica.marks.horizon(&known);
        self.replica.prune(horizon.saturating_sub(policy.margin_ms))
    }

    /// The state for local persistence: version(1) ‖ device(16) ‖ be64(clock wall_ms) ‖
    /// be32(clock counter) ‖ `tidings.v1.ConfigSnapshot`. Holds account data: store it
    /// encrypted.
    pub fn save(&self) -> Vec<u8> {
        let last = self.clock.last();
        let mut out = Vec::with_capacity(SAVE_HEADER + 64);
        out.push(SAVE_VERSION);
        out.extend_from_slice(&self.device.0);
        out.extend_from_slice(&last.wall_ms.to_be_bytes());
        out.extend_from_slice(&last.counter.to_be_bytes());
        self.replica.snapshot_out().encode(&mut out).unwrap_or_default();
        out
    }

    /// Reads what [`ConfigState::save`] wrote. The clock resumes after everything in it, so
    /// a clock that went back while the app was closed never repeats a stamp.
    pub fn load(bytes: &[u8]) -> Result<ConfigState, ConfigError> {
        if bytes.len() < SAVE_HEADER {
            return Err(ConfigError::Corrupt("too short"));
        }
        if bytes[0] != SAVE_VERSION {
            return Err(ConfigError::Corrupt("unknown version"));
        }
        let device = DeviceId::from_slice(&bytes[1..17]).ok_or(ConfigError::Corrupt("device id"))?;
        let wall_ms = u64::from_be_bytes(
            bytes[17..25]
                .try_into()
                .map_err(|_| ConfigError::Corrupt("clock"))?,
        );
        let counter = u32::from_be_bytes(
            bytes[25..29]
                .try_into()
                .map_err(|_| ConfigError::Corrupt("clock"))?,
        );
        let replica = Replica::snapshot_in(&pb::ConfigSnapshot::decode(&bytes[SAVE_HEADER..])?);
        let mut clock = HlcClock::resume(Hlc { wall_ms, counter });
        clock.observe(replica.max_hlc());
        Ok(ConfigState {
            replica,
            clock,
            device,
            fixed_time: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(n: u8) -> ConfigState {
        let mut s = ConfigState::new(DeviceId([n; 16]));
        s.set_physical_time(Some(1_000));
        s
    }

    fn ada() -> Contact {
        Contact {
            account_id: "01ada".into(),
            name: "Ada".into(),
            approved: true,
            ..Contact::default()
        }
    }

    #[test]
    fn mutations_apply_locally_and_return_their_delta() {
        let mut a = device(1);
        let d = a.set_display_name("Ada").expect("short");
        assert!(!d.is_empty());
        assert_eq!(a.profile().display_name, "Ada");
        assert!(
            a.set_display_name("Ada").expect("short").is_empty(),
            "no change, no delta"
        );
        let mut b = device(2);
        b.merge_delta(&Delta::decode(&d.encode()).expect("decodes"));
        assert_eq!(b.profile().display_name, "Ada");
    }

    #[test]
    fn limits_are_enforced() {
        let mut a = device(1);
        assert!(matches!(
            a.set_display_name(&"x".repeat(MAX_NAME_BYTES + 1)),
            Err(ConfigError::TooLong { .. })
        ));
        assert!(matches!(a.block(""), Err(ConfigError::Empty { .. })));
        assert!(a.mark_read(&"c".repeat(MAX_KEY_BYTES + 1), 1).is_err());
    }

    #[test]
    fn contact_lifecycle() {
        let mut a = device(1);
        a.add_contact(&ada()).expect("valid");
        a.update_contact(
            "01ada",
            &ContactUpdate {
                nickname: Some(Some("A".into())),
                ..Default::default()
            },
        )
        .expect("valid");
        a.set_muted_until("01ada", Some(5_000)).expect("valid");
        let c = a.contact("01ada").expect("shown");
        assert_eq!((c.nickname.as_deref(), c.muted_until), (Some("A"), Some(5_000)));
        a.block("01ada").expect("valid");
        assert!(a.contact("01ada").is_some_and(|c| c.blocked));
        a.unblock("01ada");
        assert!(a.contact("01ada").is_some_and(|c| !c.blocked));
        assert!(
            a.unblock("01nobody").is_empty(),
            "unblocking a stranger creates nothing"
        );
        assert!(!a.remove_contact("01ada").is_empty());
        assert!(a.contact("01ada").is_none());
        assert!(a.remove_contact("01ada").is_empty());
        a.block("01ada").expect("valid");
        let c = a.contact("01ada").expect("re-created whole");
        assert!(
            c.blocked && c.name.is_empty() && c.nickname.is_none(),
            "a re-creation starts from defaults"
        );
    }

    #[test]
    fn conversation_lifecycle() {
        let mut a = device(1);
        a.mark_unread("c1").expect("valid");
        assert!(a.conversation("c1").is_some_and(|c| c.marked_unread));
        a.mark_read("c1", 500).expect("valid");
        let c = a.conversation("c1").expect("shown");
        assert!(!c.marked_unread && c.last_read_ms == 500);
        assert!(a.mark_read("c1", 100).expect("valid").is_empty());
        a.set_pinned("c1", true).expect("valid");
        a.set_priority("c1", 3).expect("valid");
        assert!(a.conversation("c1").is_some_and(|c| c.pinned && c.priority == 3));
        a.remove_conversation("c1");
        assert!(a.conversation("c1").is_none());
        a.set_pinned("c1", false).expect("valid");
        assert_eq!(
            a.conversation("c1").map(|c| c.last_read_ms),
            Some(500),
            "the read marker survives"
        );
    }

    #[test]
    fn settings_change() {
        let mut a = device(1);
        assert_eq!(a.settings(), Settings::default());
        assert!(!a.set_notification_mode(NotificationMode::Fast).is_empty());
        assert!(a.set_notification_mode(NotificationMode::Fast).is_empty());
        a.set_previews(Previews {
            show_sender: false,
            show_content: false,
        });
        assert_eq!(a.settings().notification_mode, NotificationMode::Fast);
        assert!(!a.settings().previews.show_sender);
    }

    #[test]
    fn a_newer_edit_beats_a_concurrent_delete_and_brings_back_the_whole_record() {
        let mut a = device(1);
        let create = a.add_contact(&ada()).expect("valid");
        let mut b = device(2);
        b.merge_delta(&create);
        let del = a.remove_contact("01ada");
        b.set_physical_time(Some(2_000));
        let edit = b.update_contact(
            "01ada",
            &ContactUpdate {
                nickname: Some(Some("L".into())),
                ..Default::default()
            },
        );
        let edit = edit.expect("valid");
        a.merge_delta(&edit);
        b.merge_delta(&del);
        assert_eq!(a.documents(), b.documents());
        let c = a.contact("01ada").expect("the edit is newer");
        assert_eq!((c.name.as_str(), c.nickname.as_deref()), ("Ada", Some("L")));
    }

    #[test]
    fn an_edit_without_its_create_shows_nothing() {
        let mut a = device(1);
        let create = a.add_contact(&ada()).expect("valid");
        let edit = a.block("01ada").expect("valid");
        let mut b = device(2);
        b.merge_delta(&edit);
        assert!(b.contact("01ada").is_none(), "half a record is never shown");
        b.merge_delta(&create);
        assert!(b.contact("01ada").is_some_and(|c| c.blocked && c.name == "Ada"));
    }

    #[test]
    fn save_and_load_round_trip_and_the_clock_never_repeats() {
        let mut a = device(1);
        a.add_contact(&ada()).expect("valid");
        a.set_physical_time(Some(9_000));
        a.mark_read("c", 7).expect("valid");
        let mut b = ConfigState::load(&a.save()).expect("loads");
        assert_eq!(b.replica(), a.replica());
        assert_eq!(b.device(), a.device());
        b.set_physical_time(Some(10));
        let d = b.set_display_name("later").expect("valid");
        assert!(d.replica().max_hlc() > a.clock());
        assert!(ConfigState::load(&[1, 2, 3]).is_err());
    }

    #[test]
    fn split_deltas_merge_back_to_the_whole() {
        let mut a = device(1);
        let mut d = a.set_display_name("x").expect("valid");
        for i in 0..5 {
            d.merge(&a.block(&format!("01{i}")).expect("valid"));
            d.merge(&a.mark_read(&format!("c{i}"), i).expect("valid"));
        }
        let (l, r) = d.split().expect("many parts");
        assert!(!l.is_empty() && !r.is_empty());
        let mut back = l.clone();
        back.merge(&r);
        assert_eq!(back, d);
        let one = a.block("01solo").expect("valid");
        assert!(one.split().is_none());
    }

    #[test]
    fn snapshots_round_trip_with_marks_and_floor() {
        let mut a = device(1);
        a.add_contact(&ada()).expect("valid");
        a.remove_contact("01ada");
        a.compact(&PrunePolicy {
            margin_ms: 0,
            retire_after_ms: u64::MAX,
        });
        let snap = a.snapshot();
        assert_eq!(Snapshot::decode(&snap.encode()).expect("decodes"), snap);
    }
}
