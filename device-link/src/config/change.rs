//! [`Change`]: every edit of the config documents, as data.
//!
//! This is the one list of what can be edited. The account engine applies it
//! ([`crate::account::Account::change`], [`crate::account::ConfigEdit::apply`]), the terminal
//! client and the mobile bindings build it, and [`ConfigState::apply_change`] turns it into the
//! CRDT operations of its document. Adding an editable field means a variant here, its arm
//! in [`ConfigState::apply_change`], and the document's setter that the arm calls.

use super::{Avatar, ConfigError, ConfigState, Contact, ContactUpdate, Delta, NotificationMode, Previews};

/// One edit of the account's config.
///
/// Contacts are keyed by the canonical (lower-case hex) account id; conversations by the
/// app's id. `Debug` names only the kind of edit: names and account ids are the user's.
#[derive(Clone, PartialEq, Eq)]
pub enum Change {
    /// Sets the display name.
    DisplayName(String),
    /// Sets (or with `None` removes) the avatar.
    Avatar(Option<Avatar>),
    /// Adds a contact, or replaces every field of the one with its account id.
    AddContact(Contact),
    /// Changes some fields of a contact (creating it whole when it is not shown).
    UpdateContact {
        /// The contact.
        account_id: String,
        /// The fields to change.
        update: ContactUpdate,
    },
    /// Deletes a contact.
    RemoveContact {
        /// The contact.
        account_id: String,
    },
    /// Blocks an account, creating its contact when there is none.
    Block {
        /// The account.
        account_id: String,
    },
    /// Unblocks a contact; nothing happens when there is no such contact.
    Unblock {
        /// The contact.
        account_id: String,
    },
    /// Mutes a contact until `until_ms` (Unix ms; `None` unmutes).
    MutedUntil {
        /// The contact.
        account_id: String,
        /// Until when.
        until_ms: Option<u64>,
    },
    /// Marks a conversation read up to `up_to_ms` (the marker never goes back).
    MarkRead {
        /// The conversation.
        conversation: String,
        /// Everything up to this time (Unix ms) is read.
        up_to_ms: u64,
    },
    /// Shows a conversation as unread.
    MarkUnread {
        /// The conversation.
        conversation: String,
    },
    /// Pins or unpins a conversation.
    Pinned {
        /// The conversation.
        conversation: String,
        /// Pinned or not.
        pinned: bool,
    },
    /// Sets a conversation's order among pinned ones (greater first).
    Priority {
        /// The conversation.
        conversation: String,
        /// Its order.
        priority: i32,
    },
    /// Deletes a conversation's state (its read marker survives).
    RemoveConversation {
        /// The conversation.
        conversation: String,
    },
    /// Chooses Fast or Slow Mode for the account (the setting only; this device's push
    /// registration is [`crate::account::Account::subscribe`]'s).
    NotificationMode(NotificationMode),
    /// Sets what notifications show.
    Previews(Previews),
}

impl Change {
    /// The kind of edit, for logs and `Debug`.
    pub fn kind(&self) -> &'static str {
        match self {
            Change::DisplayName(_) => "display name",
            Change::Avatar(_) => "avatar",
            Change::AddContact(_) => "add contact",
            Change::UpdateContact { .. } => "update contact",
            Change::RemoveContact { .. } => "remove contact",
            Change::Block { .. } => "block",
            Change::Unblock { .. } => "unblock",
            Change::MutedUntil { .. } => "mute",
            Change::MarkRead { .. } => "mark read",
            Change::MarkUnread { .. } => "mark unread",
            Change::Pinned { .. } => "pin",
            Change::Priority { .. } => "priority",
            Change::RemoveConversation { .. } => "remove conversation",
            Change::NotificationMode(_) => "notification mode",
            Change::Previews(_) => "previews",
        }
    }
}

impl std::fmt::Debug for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Change({})", self.kind())
    }
}

impl ConfigState {
    /// Applies `change` to its document and returns the delta to send the account's other
    /// devices (empty when nothing changed). Fails, changing nothing, when a value breaks
    /// the document's limits.
    pub fn apply_change(&mut self, change: &Change) -> Result<Delta, ConfigError> {
        Ok(match change {
            Change::DisplayName(name) => self.set_display_name(name)?,
            Change::Avatar(avatar) => self.set_avatar(avatar.clone())?,
            Change::AddContact(contact) => self.add_contact(contact)?,
            Change::UpdateContact { account_id, update } => self.update_contact(account_id, update)?,
            Change::RemoveContact { account_id } => self.remove_contact(account_id),
            Change::Block { account_id } => self.block(account_id)?,
            Change::Unblock { account_id } => self.unblock(account_id),
            Change::MutedUntil { account_id, until_ms } => self.set_muted_until(account_id, *until_ms)?,
            Change::MarkRead {
                conversation,
                up_to_ms,
            } => self.mark_read(conversation, *up_to_ms)?,
            Change::MarkUnread { conversation } => self.mark_unread(conversation)?,
            Change::Pinned { conversation, pinned } => self.set_pinned(conversation, *pinned)?,
            Change::Priority {
                conversation,
                priority,
            } => self.set_priority(conversation, *priority)?,
            Change::RemoveConversation { conversation } => self.remove_conversation(conversation),
            Change::NotificationMode(mode) => self.set_notification_mode(*mode),
            Change::Previews(previews) => self.set_previews(*previews),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DeviceId;

    fn state() -> ConfigState {
        let mut s = ConfigState::new(DeviceId([1; 16]));
        s.set_physical_time(Some(1_700_000_000_000));
        s
    }

    #[test]
    fn apply_is_the_setter_it_names() {
        let contact = "05".repeat(32);
        let changes = [
            Change::DisplayName("Ada".into()),
            Change::AddContact(Contact {
                account_id: contact.clone(),
                name: "Bob".into(),
                ..Contact::default()
            }),
            Change::MutedUntil {
                account_id: contact.clone(),
                until_ms: Some(1_800_000_000_000),
            },
            Change::MarkRead {
                conversation: "c".into(),
                up_to_ms: 5,
            },
            Change::Pinned {
                conversation: "c".into(),
                pinned: true,
            },
            Change::NotificationMode(NotificationMode::Fast),
        ];
        let mut s = state();
        for c in &changes {
            assert!(!s.apply_change(c).unwrap().is_empty(), "{c:?} changed nothing");
        }
        assert_eq!(s.profile().display_name, "Ada");
        let bob = s.contact(&contact).unwrap();
        assert_eq!(
            (bob.name.as_str(), bob.muted_until),
            ("Bob", Some(1_800_000_000_000))
        );
        let conv = s.conversation("c").unwrap();
        assert_eq!((conv.last_read_ms, conv.pinned), (5, true));
        assert_eq!(s.settings().notification_mode, NotificationMode::Fast);
        // The same name again changes nothing. (Re-adding a contact does: it is a
        // whole-record write by design, docs/config-sync.md.)
        assert!(s.apply_change(&changes[0]).unwrap().is_empty());
    }

    #[test]
    fn a_refused_change_changes_nothing_and_debug_names_only_the_kind() {
        let mut s = state();
        let before = s.save();
        let long = Change::DisplayName("x".repeat(10_000));
        assert!(s.apply_change(&long).is_err());
        assert_eq!(s.save(), before);
        let secret = Change::Block {
            account_id: "05".repeat(32),
        };
        assert_eq!(format!("{secret:?}"), "Change(block)");
    }
}
