//! The config API: profile, contacts, conversations, settings. Getters read the documents
//! as last merged (no network); every change applies at once, is queued durably and
//! uploaded to the account's other devices (later, if the relay is unreachable now).
//! Changes return whether they changed anything.

use tidings_device_link::{
    config::{self as dl, Change, Documents},
    identity::{account_id as format_account_id, parse_account_id},
};

use crate::{
    client::TidingsClient,
    error::{Result, TidingsError},
    types::{Avatar, ConfigDocuments, Contact, Conversation, NotificationMode, Profile, Settings},
};

#[uniffi::export(async_runtime = "tokio")]
impl TidingsClient {
    /// All four documents.
    pub fn config_documents(&self) -> Result<ConfigDocuments> {
        let docs = self.docs()?;
        Ok(ConfigDocuments {
            profile: profile_out(&docs.profile),
            contacts: docs.contacts.iter().map(contact_out).collect(),
            conversations: docs.conversations.iter().map(conversation_out).collect(),
            settings: settings_out(&docs.settings),
        })
    }

    /// The profile.
    pub fn profile(&self) -> Result<Profile> {
        Ok(profile_out(&self.docs()?.profile))
    }

    /// Every contact, sorted by account id.
    pub fn contacts(&self) -> Result<Vec<Contact>> {
        Ok(self.docs()?.contacts.iter().map(contact_out).collect())
    }

    /// One contact, if there is one.
    pub fn contact(&self, account_id: String) -> Result<Option<Contact>> {
        let id = normalize_account_id(&account_id)?;
        Ok(self
            .docs()?
            .contacts
            .iter()
            .find(|c| c.account_id == id)
            .map(contact_out))
    }

    /// Every conversation's state, sorted by id.
    pub fn conversations(&self) -> Result<Vec<Conversation>> {
        Ok(self.docs()?.conversations.iter().map(conversation_out).collect())
    }

    /// One conversation's state, if there is one.
    pub fn conversation(&self, id: String) -> Result<Option<Conversation>> {
        Ok(self
            .docs()?
            .conversations
            .iter()
            .find(|c| c.id == id)
            .map(conversation_out))
    }

    /// The settings.
    pub fn settings(&self) -> Result<Settings> {
        Ok(settings_out(&self.docs()?.settings))
    }

    /// Sets the display name.
    pub async fn set_display_name(&self, name: String) -> Result<bool> {
        self.change(Change::DisplayName(name)).await
    }

    /// Sets (or with `None` removes) the avatar.
    pub async fn set_avatar(&self, avatar: Option<Avatar>) -> Result<bool> {
        let avatar = avatar.map(|a| dl::Avatar {
            url: a.url,
            key: a.key,
        });
        self.change(Change::Avatar(avatar)).await
    }

    /// Adds a contact, or replaces every field of the contact with this account id.
    pub async fn add_contact(&self, contact: Contact) -> Result<bool> {
        let contact = dl::Contact {
            account_id: normalize_account_id(&contact.account_id)?,
            name: contact.name,
            nickname: contact.nickname,
            approved: contact.approved,
            blocked: contact.blocked,
            muted_until: contact.muted_until_ms.filter(|&t| t != 0),
        };
        self.change(Change::AddContact(contact)).await
    }

    /// Removes a contact.
    pub async fn remove_contact(&self, account_id: String) -> Result<bool> {
        let account_id = normalize_account_id(&account_id)?;
        self.change(Change::RemoveContact { account_id }).await
    }

    /// Sets the contact's name (creating the contact when there is none).
    pub async fn set_contact_name(&self, account_id: String, name: String) -> Result<bool> {
        let update = dl::ContactUpdate {
            name: Some(name),
            ..dl::ContactUpdate::default()
        };
        self.update_contact(account_id, update).await
    }

    /// Sets (or with `None` clears) the nickname the owner gave a contact.
    pub async fn set_contact_nickname(&self, account_id: String, nickname: Option<String>) -> Result<bool> {
        let update = dl::ContactUpdate {
            nickname: Some(nickname),
            ..dl::ContactUpdate::default()
        };
        self.update_contact(account_id, update).await
    }

    /// Accepts (or stops accepting) message requests from a contact.
    pub async fn set_contact_approved(&self, account_id: String, approved: bool) -> Result<bool> {
        let update = dl::ContactUpdate {
            approved: Some(approved),
            ..dl::ContactUpdate::default()
        };
        self.update_contact(account_id, update).await
    }

    /// Blocks an account (creating its contact when there is none).
    pub async fn block_contact(&self, account_id: String) -> Result<bool> {
        let account_id = normalize_account_id(&account_id)?;
        self.change(Change::Block { account_id }).await
    }

    /// Unblocks a contact.
    pub async fn unblock_contact(&self, account_id: String) -> Result<bool> {
        let account_id = normalize_account_id(&account_id)?;
        self.change(Change::Unblock { account_id }).await
    }

    /// Silences a contact's notifications until `until_ms` (Unix ms; `None` unmutes).
    pub async fn mute_contact(&self, account_id: String, until_ms: Option<u64>) -> Result<bool> {
        let account_id = normalize_account_id(&account_id)?;
        self.change(Change::MutedUntil { account_id, until_ms }).await
    }

    /// Marks every message of a conversation up to `up_to_ms` read (never goes back).
    pub async fn mark_read(&self, conversation_id: String, up_to_ms: u64) -> Result<bool> {
        self.change(Change::MarkRead {
            conversation: conversation_id,
            up_to_ms,
        })
        .await
    }

    /// Shows a conversation as unread.
    pub async fn mark_unread(&self, conversation_id: String) -> Result<bool> {
        self.change(Change::MarkUnread {
            conversation: conversation_id,
        })
        .await
    }

    /// Pins or unpins a conversation.
    pub async fn set_pinned(&self, conversation_id: String, pinned: bool) -> Result<bool> {
        self.change(Change::Pinned {
            conversation: conversation_id,
            pinned,
        })
        .await
    }

    /// Sets a conversation's order among pinned ones (greater first).
    pub async fn set_priority(&self, conversation_id: String, priority: i32) -> Result<bool> {
        self.change(Change::Priority {
            conversation: conversation_id,
            priority,
        })
        .await
    }

    /// Removes a conversation's state (its read marker survives).
    pub async fn remove_conversation(&self, conversation_id: String) -> Result<bool> {
        self.change(Change::RemoveConversation {
            conversation: conversation_id,
        })
        .await
    }

    /// Records the account-wide notification mode the user chose. The app decides what it
    /// means for this install (`enable_fast_mode` / `disable_fast_mode`).
    pub async fn set_notification_mode(&self, mode: NotificationMode) -> Result<bool> {
        let mode = match mode {
            NotificationMode::Fast => dl::NotificationMode::Fast,
            NotificationMode::Slow => dl::NotificationMode::Slow,
        };
        self.change(Change::NotificationMode(mode)).await
    }

    /// Sets what notifications show.
    pub async fn set_previews(&self, show_sender: bool, show_content: bool) -> Result<bool> {
        self.change(Change::Previews(dl::Previews {
            show_sender,
            show_content,
        }))
        .await
    }
}

impl TidingsClient {
    fn docs(&self) -> Result<Documents> {
        Ok(self.inner.require_account()?.documents())
    }

    async fn update_contact(&self, account_id: String, update: dl::ContactUpdate) -> Result<bool> {
        let account_id = normalize_account_id(&account_id)?;
        self.change(Change::UpdateContact { account_id, update }).await
    }

    /// Applies one edit (device-link's [`Change`], the one list of config edits), saved
    /// and queued at once, uploaded now if the relay answers.
    async fn change(&self, change: Change) -> Result<bool> {
        let inner = self.inner.clone();
        self.inner
            .run(async move { Ok(inner.require_account()?.change(change).await?) })
            .await
    }
}

/// Contacts are keyed by the canonical (lower-case) account id.
fn normalize_account_id(id: &str) -> Result<String> {
    parse_account_id(id)
        .map(|key| format_account_id(&key))
        .map_err(|_| TidingsError::InvalidAccountId)
}

fn profile_out(p: &dl::Profile) -> Profile {
    Profile {
        display_name: p.display_name.clone(),
        avatar: p.avatar.as_ref().map(|a| Avatar {
            url: a.url.clone(),
            key: a.key.clone(),
        }),
    }
}

fn contact_out(c: &dl::Contact) -> Contact {
    Contact {
        account_id: c.account_id.clone(),
        name: c.name.clone(),
        nickname: c.nickname.clone(),
        approved: c.approved,
        blocked: c.blocked,
        muted_until_ms: c.muted_until,
    }
}

fn conversation_out(c: &dl::Conversation) -> Conversation {
    Conversation {
        id: c.id.clone(),
        last_read_ms: c.last_read_ms,
        marked_unread: c.marked_unread,
        pinned: c.pinned,
        priority: c.priority,
    }
}

fn settings_out(s: &dl::Settings) -> Settings {
    Settings {
        notification_mode: match s.notification_mode {
            dl::NotificationMode::Fast => NotificationMode::Fast,
            dl::NotificationMode::Slow => NotificationMode::Slow,
        },
        show_sender: s.previews.show_sender,
        show_content: s.previews.show_content,
    }
}
