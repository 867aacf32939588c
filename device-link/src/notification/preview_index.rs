//! The preview index (DESIGN.md "Delivery journal"): what a notification extension needs
//! of the config documents — each contact's display name, blocked flag and mute end, and
//! the preview settings — in a compact blob the account engine writes beside the config
//! replica whenever it saves it. Loading the whole replica of a large account costs the
//! extension far more memory and time than its limits allow; this is a few dozen bytes
//! per contact, looked up without building anything.
//!
//! ```text
//! u8 version (1) ‖ u8 previews (bit 0 show_sender, bit 1 show_content) ‖ be32 count
//! ‖ count × ( account(32) ‖ u8 flags (bit 0 blocked) ‖ be64 muted_until_ms (0: not muted)
//!             ‖ be16 len ‖ display name (UTF-8, len bytes) )      sorted by account, unique
//! ```

use zeroize::Zeroizing;

use crate::{
    config::{ConfigState, Contact, Previews},
    identity::parse_account_id,
    state::{DeviceState, StateError},
};

/// The device-state blob that holds the index.
pub const PREVIEW_INDEX_BLOB: &str = "preview-index";
const VERSION: u8 = 1;
const HEADER_LEN: usize = 1 + 1 + 4;
/// account ‖ flags ‖ muted_until ‖ name length.
const ENTRY_FIXED: usize = 32 + 1 + 8 + 2;

/// One contact as a notification shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct PreviewContact {
    /// Nickname, else the contact's own name; `None` when both are empty.
    pub display_name: Option<String>,
    /// Messages from this contact are dropped.
    pub blocked: bool,
    /// Notifications are silent until this Unix time in ms.
    pub muted_until: Option<u64>,
}

impl std::fmt::Debug for PreviewContact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A contact's name is the user's private data.
        f.debug_struct("PreviewContact")
            .field("named", &self.display_name.is_some())
            .field("blocked", &self.blocked)
            .field("muted_until", &self.muted_until)
            .finish()
    }
}

/// A loaded (and checked) index.
pub struct PreviewIndex {
    bytes: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for PreviewIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreviewIndex")
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

impl PreviewIndex {
    /// The index of `contacts` (any order) under `previews`.
    pub fn build(contacts: &[Contact], previews: Previews) -> PreviewIndex {
        let mut keyed: Vec<([u8; 32], &Contact)> = contacts
            .iter()
            // Contacts keyed by something other than an account id can never send a
            // sealed message, so they have nothing to show.
            .filter_map(|c| Some((parse_account_id(&c.account_id).ok()?, c)))
            .collect();
        keyed.sort_by_key(|a| a.0);
        keyed.dedup_by(|a, b| a.0 == b.0);
        let mut bytes = Zeroizing::new(Vec::with_capacity(HEADER_LEN + keyed.len() * (ENTRY_FIXED + 16)));
        bytes.push(VERSION);
        bytes.push(u8::from(previews.show_sender) | (u8::from(previews.show_content) << 1));
        let count = u32::try_from(keyed.len()).unwrap_or(u32::MAX);
        bytes.extend_from_slice(&count.to_be_bytes());
        for (account, c) in keyed.iter().take(count as usize) {
            let name = display_name(c);
            let name = truncate(name, usize::from(u16::MAX));
            bytes.extend_from_slice(account);
            bytes.push(u8::from(c.blocked));
            bytes.extend_from_slice(&c.muted_until.unwrap_or(0).to_be_bytes());
            // `truncate` kept it within u16.
            bytes.extend_from_slice(&(name.len() as u16).to_be_bytes());
            bytes.extend_from_slice(name.as_bytes());
        }
        PreviewIndex { bytes }
    }

    /// The index of a config replica.
    pub fn of(config: &ConfigState) -> PreviewIndex {
        PreviewIndex::build(&config.contacts(), config.settings().previews)
    }

    /// Reads an index's bytes, checking their structure once.
    pub fn parse(bytes: Vec<u8>) -> Option<PreviewIndex> {
        let bytes = Zeroizing::new(bytes);
        if bytes.len() < HEADER_LEN || bytes[0] != VERSION {
            return None;
        }
        let count = u32::from_be_bytes(bytes[2..6].try_into().ok()?);
        let mut pos = HEADER_LEN;
        let mut previous: Option<&[u8]> = None;
        for _ in 0..count {
            let (account, name) = entry_at(&bytes, pos)?;
            if previous.is_some_and(|p| p >= account) || std::str::from_utf8(name).is_err() {
                return None;
            }
            previous = Some(account);
            pos += ENTRY_FIXED + name.len();
        }
        (pos == bytes.len()).then_some(PreviewIndex { bytes })
    }

    /// The bytes to store.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The preview settings.
    pub fn previews(&self) -> Previews {
        Previews {
            show_sender: self.bytes[1] & 1 != 0,
            show_content: self.bytes[1] & 2 != 0,
        }
    }

    /// How many contacts it holds.
    pub fn len(&self) -> usize {
        self.entries().count()
    }

    /// Holds no contact.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The contact with account key `account`, if there is one.
    pub fn contact(&self, account: &[u8; 32]) -> Option<PreviewContact> {
        let (flags, muted, name) = self
            .entries()
            .find(|(a, ..)| a == account)
            .map(|(_, flags, muted, name)| (flags, muted, name))?;
        // Checked by `parse` (and written from strings by `build`).
        let name = std::str::from_utf8(name).ok()?;
        Some(PreviewContact {
            display_name: (!name.is_empty()).then(|| name.to_owned()),
            blocked: flags & 1 != 0,
            muted_until: (muted != 0).then_some(muted),
        })
    }

    /// (account, flags, muted_until, name) of every entry; stops at anything malformed,
    /// which `parse` ruled out.
    fn entries(&self) -> impl Iterator<Item = (&[u8], u8, u64, &[u8])> {
        let mut pos = HEADER_LEN;
        std::iter::from_fn(move || {
            let (account, name) = entry_at(&self.bytes, pos)?;
            let flags = self.bytes[pos + 32];
            let muted = u64::from_be_bytes(self.bytes[pos + 33..pos + 41].try_into().ok()?);
            pos += ENTRY_FIXED + name.len();
            Some((account, flags, muted, name))
        })
    }
}

/// The account and name of the entry at `pos`.
fn entry_at(bytes: &[u8], pos: usize) -> Option<(&[u8], &[u8])> {
    let fixed = bytes.get(pos..pos + ENTRY_FIXED)?;
    let name_len = usize::from(u16::from_be_bytes([fixed[41], fixed[42]]));
    let name = bytes.get(pos + ENTRY_FIXED..pos + ENTRY_FIXED + name_len)?;
    Some((&fixed[..32], name))
}

/// Nickname, else name.
fn display_name(c: &Contact) -> &str {
    match c.nickname.as_deref() {
        Some(n) if !n.is_empty() => n,
        _ => &c.name,
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Writes the index of `config` into `disk`: the account engine's hook, called wherever it
/// saves the config replica. Skips the write (and its sync) when nothing an extension
/// shows has changed, which is most saves.
pub fn save_preview_index(disk: &mut DeviceState, config: &ConfigState) -> Result<(), StateError> {
    let index = PreviewIndex::of(config);
    let current = disk
        .get_blob(PREVIEW_INDEX_BLOB)
        .ok()
        .flatten()
        .map(Zeroizing::new);
    if current.as_deref().map(Vec::as_slice) == Some(index.as_bytes()) {
        return Ok(());
    }
    disk.put_blob(PREVIEW_INDEX_BLOB, index.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::DeviceId, identity::Identity};
    use proptest::prelude::*;

    fn contact(id: &Identity, name: &str, nickname: Option<&str>) -> Contact {
        Contact {
            account_id: id.account_id(),
            name: name.into(),
            nickname: nickname.map(Into::into),
            ..Contact::default()
        }
    }

    #[test]
    fn contacts_are_found_with_their_display_name_and_flags() {
        let (ada, bob, eve, stranger) = (
            Identity::create(),
            Identity::create(),
            Identity::create(),
            Identity::create(),
        );
        let contacts = vec![
            contact(&ada, "Ada Lovelace", Some("Ada")),
            Contact {
                muted_until: Some(99),
                ..contact(&bob, "Bob", Some(""))
            },
            Contact {
                blocked: true,
                ..contact(&eve, "", None)
            },
            Contact {
                account_id: "not an account id".into(),
                name: "ignored".into(),
                ..Contact::default()
            },
        ];
        let previews = Previews {
            show_sender: true,
            show_content: true,
        };
        let index = PreviewIndex::parse(PreviewIndex::build(&contacts, previews).as_bytes().to_vec())
            .expect("a built index parses");
        assert_eq!(index.previews(), previews);
        assert_eq!(index.len(), 3);
        let got = |i: &Identity| index.contact(&i.account());
        assert_eq!(got(&ada).unwrap().display_name.as_deref(), Some("Ada"));
        let b = got(&bob).unwrap();
        assert_eq!(
            (b.display_name.as_deref(), b.muted_until, b.blocked),
            (Some("Bob"), Some(99), false)
        );
        let e = got(&eve).unwrap();
        assert_eq!((e.display_name, e.blocked), (None, true));
        assert_eq!(got(&stranger), None);
    }

    #[test]
    fn the_hook_writes_only_when_something_shown_changed() {
        let dir = tempfile::tempdir().unwrap();
        let mut disk = DeviceState::open(dir.path(), &[1; 32]).unwrap();
        let mut config = ConfigState::new(DeviceId([1; 16]));
        save_preview_index(&mut disk, &config).unwrap();
        let path = dir
            .path()
            .join("blobs")
            .join(format!("{PREVIEW_INDEX_BLOB}.sealed"));
        let first = std::fs::read(&path).unwrap();
        config.set_display_name("me").unwrap();
        save_preview_index(&mut disk, &config).unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            first,
            "profile changes are not shown"
        );
        let ada = Identity::create();
        config.add_contact(&contact(&ada, "Ada", None)).unwrap();
        save_preview_index(&mut disk, &config).unwrap();
        let index = PreviewIndex::parse(disk.get_blob(PREVIEW_INDEX_BLOB).unwrap().unwrap()).unwrap();
        assert_eq!(
            index.contact(&ada.account()).unwrap().display_name.as_deref(),
            Some("Ada")
        );
        assert_eq!(index.previews(), Previews::default());
    }

    #[test]
    fn long_names_are_cut_at_a_character_boundary() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
        assert_eq!(truncate("abc", 10), "abc");
    }

    proptest! {
        #[test]
        fn garbage_never_parses_into_something_that_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Some(index) = PreviewIndex::parse(bytes) {
                let _ = index.contact(&[0; 32]);
                let _ = index.previews();
            }
        }

        #[test]
        fn every_contact_is_found(
            named in proptest::collection::btree_map(any::<[u8; 32]>(), "[a-zé ]{0,20}", 1..20),
        ) {
            let contacts: Vec<Contact> = named
                .iter()
                .map(|(key, name)| Contact {
                    account_id: crate::identity::account_id(key),
                    name: name.clone(),
                    ..Contact::default()
                })
                .collect();
            let built = PreviewIndex::build(&contacts, Previews::default());
            let index = PreviewIndex::parse(built.as_bytes().to_vec()).unwrap();
            for (key, name) in &named {
                let c = index.contact(key).unwrap();
                prop_assert_eq!(c.display_name.as_deref(), Some(name.as_str()).filter(|n| !n.is_empty()));
            }
        }
    }
}
