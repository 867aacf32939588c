//! Notification processing for a process beside the app (DESIGN.md "Delivery journal"),
//! modelled on matrix-rust-sdk's notification client: the iOS Notification Service
//! Extension (a separate process with ~24 MB and a few seconds) and Android's
//! `FirebaseMessagingService.onMessageReceived` (~10 s).
//!
//! [`NotificationProcessor::open`] reads the app's state directory read-only
//! ([`StateReader`]): the push key, the account, and the [`preview_index`] the account
//! engine keeps for it. [`NotificationProcessor::process`] decrypts one push, fetches the
//! message with one bounded Retrieve when the push omitted it, opens it when it is a
//! sealed message ([`crate::sealed`]), decides what the notification may show and whether
//! it should be silent, and appends it to the delivery [`journal`](crate::journal), so
//! the app counts it as delivered and has it in its inbox at the next open.
//!
//! Nothing here starts a thread or keeps a connection: the one Retrieve runs on whatever
//! runtime polls [`NotificationProcessor::process`];
//! [`NotificationProcessor::process_blocking`] brings a current-thread runtime for that
//! call only.

pub mod preview_index;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use tidings_proto::hash::message_hash;
use zeroize::Zeroizing;

use crate::{
    account::RelaySettings,
    client::{ClientOptions, PushDecryptError, PushNotification, RelayClient, decrypt_push},
    config::{ConfigState, Previews, sync::CONFIG_NAMESPACE},
    identity::{Identity, account_id},
    journal::{self, JournalEntry},
    sealed::open_message,
    state::{StateError, StateReader},
    webpush::{WEB_PUSH_KEYS_BLOB, WebPushError, WebPushKeys},
};

pub use preview_index::{PREVIEW_INDEX_BLOB, PreviewContact, PreviewIndex, save_preview_index};

/// How long [`NotificationProcessor::process`] may take when the caller does not say: an
/// iOS extension has a few seconds more before the system shows the push as it came.
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(5);
/// The title shown when the sender may not be named or is not known.
pub const GENERIC_TITLE: &str = "New message";
/// Longest preview body, in characters (the platforms cut far shorter anyway).
pub const MAX_BODY_CHARS: usize = 1000;
/// The device-state blob of the full config replica (the account engine's).
const CONFIG_BLOB: &str = "config";
/// What is kept back from the Retrieve's share of the budget for the journal and the
/// answer.
const RESERVE_MAX: Duration = Duration::from_millis(250);

/// Why a push could not be processed. A relay that cannot be reached is not one: the
/// notification then gets a generic preview.
#[derive(Debug, thiserror::Error)]
pub enum NotificationError {
    /// The state directory could not be read (none yet, a wrong key, damaged).
    #[error(transparent)]
    State(#[from] StateError),
    /// The install is signed out.
    #[error("no account is signed in to the device state in {0}")]
    NotSignedIn(PathBuf),
    /// The push does not decrypt with this install's push key, or is malformed.
    #[error(transparent)]
    Push(#[from] PushDecryptError),
    /// The push is addressed to another account than the one signed in.
    #[error("the push is for another account")]
    OtherAccount,
    /// A Web Push body does not open with this install's Web Push keys.
    #[error(transparent)]
    WebPush(#[from] WebPushError),
}

/// What a push is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NotificationKind {
    /// A message to the account.
    Message,
    /// A config change by another device: nothing to show, the app syncs when it runs.
    Config,
}

/// Why the notification should not alert the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SuppressReason {
    /// The sender is a blocked contact.
    Blocked,
    /// The sender is muted until this Unix time in ms (later than now).
    Muted {
        /// When the mute ends.
        until_ms: u64,
    },
    /// A config push: there is nothing to show.
    Config,
}

/// Why the preview shows less than a sender's name and the message's text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PreviewLimit {
    /// The account's settings hide both sender and content (previews off).
    PreviewsOff,
    /// The settings hide the sender.
    SenderHidden,
    /// The settings hide the content.
    ContentHidden,
    /// The sender is not known: not a sealed message, not opened, or not a contact with
    /// a name.
    SenderUnknown,
    /// The content is not known or not text: not carried and not fetched, not a sealed
    /// message, or not UTF-8.
    ContentUnknown,
}

/// What the notification may show.
#[derive(Clone, PartialEq, Eq)]
pub struct Preview {
    /// The contact's display name, or [`GENERIC_TITLE`].
    pub title: String,
    /// The message text, when the settings allow it and it is known.
    pub body: Option<String>,
    /// Why it shows less than everything; empty when it shows name and text.
    pub limits: Vec<PreviewLimit>,
}

impl std::fmt::Debug for Preview {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Preview")
            .field("generic_title", &(self.title == GENERIC_TITLE))
            .field("body", &self.body.as_ref().map(|b| b.len()))
            .field("limits", &self.limits)
            .finish()
    }
}

/// How the message data was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fetch {
    /// The push carried it (or, for a config push, it is not needed).
    NotNeeded,
    /// The push omitted it and the Retrieve brought it.
    Fetched,
    /// The relay answered but no longer has the message (expired or deleted).
    Gone,
    /// The relay could not be reached or refused the Retrieve.
    Failed,
    /// The budget ran out before the relay answered.
    TimedOut,
}

/// The result of [`NotificationProcessor::process`]. Facts (data, sender, content) are
/// given as found; [`ProcessedNotification::preview`] is what may be shown.
#[derive(Clone)]
pub struct ProcessedNotification {
    /// Message or config.
    pub kind: NotificationKind,
    /// The namespace it was stored in.
    pub namespace: i32,
    /// The relay's hash of the message.
    pub hash: [u8; 32],
    /// Its position in the mailbox.
    pub seq: u64,
    /// When the relay stored it (Unix ms).
    pub created_ms: i64,
    /// When the relay drops it (Unix ms).
    pub expires_ms: i64,
    /// The message data, when carried or fetched (never for a config push).
    pub data: Option<Vec<u8>>,
    /// How the data was obtained.
    pub fetch: Fetch,
    /// The sender's account key, when the data is a sealed message to this account.
    pub sender: Option<[u8; 32]>,
    /// The sender's display name, when the sender is a contact with one.
    pub sender_name: Option<String>,
    /// The conversation (the sender's account id), when the sender is known.
    pub conversation: Option<String>,
    /// The sealed message's plaintext, when it opened.
    pub content: Option<Zeroizing<Vec<u8>>>,
    /// Set when the notification should not alert.
    pub suppress: Option<SuppressReason>,
    /// What the notification may show.
    pub preview: Preview,
    /// The delivery journal took it (a failure is logged; the app then finds the message
    /// by polling).
    pub journaled: bool,
}

impl std::fmt::Debug for ProcessedNotification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessedNotification")
            .field("kind", &self.kind)
            .field("seq", &self.seq)
            .field("data_len", &self.data.as_ref().map(Vec::len))
            .field("fetch", &self.fetch)
            .field("from_contact", &self.sender_name.is_some())
            .field("suppress", &self.suppress)
            .field("preview", &self.preview)
            .field("journaled", &self.journaled)
            .finish_non_exhaustive()
    }
}

/// An account's state opened read-only for processing pushes. See the module
/// documentation.
pub struct NotificationProcessor {
    reader: StateReader,
    key: Zeroizing<[u8; 32]>,
    identity: Identity,
    index: PreviewIndex,
    relay: RelaySettings,
}

impl std::fmt::Debug for NotificationProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotificationProcessor")
            .field("identity", &self.identity)
            .field("contacts", &self.index.len())
            .finish_non_exhaustive()
    }
}

impl NotificationProcessor {
    /// Opens the state in `state_dir` under `state_key` read-only (it writes nothing there
    /// but the delivery journal, and only when processing). Touches no network.
    pub fn open(
        state_dir: impl AsRef<Path>,
        state_key: &[u8; 32],
        relay: impl Into<RelaySettings>,
    ) -> Result<NotificationProcessor, NotificationError> {
        let reader = StateReader::open(state_dir.as_ref(), state_key)?;
        let Some(identity) = reader.identity()? else {
            return Err(NotificationError::NotSignedIn(reader.dir().to_path_buf()));
        };
        let index = load_index(&reader)?;
        Ok(NotificationProcessor {
            reader,
            key: Zeroizing::new(*state_key),
            identity,
            index,
            relay: relay.into(),
        })
    }

    /// The account id of the signed-in account.
    pub fn account_id(&self) -> String {
        self.identity.account_id()
    }

    /// The `enc` string inside a Web Push body (what a UnifiedPush distributor delivered),
    /// opened with the install's Web Push keys; hand it to [`NotificationProcessor::process`].
    /// An install that never registered for Web Push has no keys: the body is not for it.
    pub fn open_web_push(&self, body: &[u8]) -> Result<String, NotificationError> {
        let saved = self.reader.get_blob(WEB_PUSH_KEYS_BLOB)?;
        Ok(WebPushKeys::open_with_saved(saved.as_deref(), body)?)
    }

    /// Processes one push's `enc` within `budget` (see the module documentation). Fails
    /// only when the push is not this install's or the state cannot be read; a relay that
    /// cannot be reached in time gives a generic preview.
    pub async fn process(
        &self,
        enc: &str,
        budget: Duration,
    ) -> Result<ProcessedNotification, NotificationError> {
        let deadline = Instant::now() + budget.saturating_sub(RESERVE_MAX.min(budget / 10));
        let note = decrypt_push(enc, self.reader.push_key())?;
        if note.account.as_slice() != self.identity.account().as_slice() {
            return Err(NotificationError::OtherAccount);
        }
        let hash: [u8; 32] = note
            .hash
            .as_slice()
            .try_into()
            .map_err(|_| PushDecryptError::Content)?;
        let mut out = if note.namespace == CONFIG_NAMESPACE {
            config_notification(&note, hash)
        } else {
            self.message_notification(&note, hash, deadline).await
        };
        out.journaled = self.journal(&out);
        Ok(out)
    }

    /// [`NotificationProcessor::process`] from synchronous code (the extension's callback
    /// thread): a current-thread runtime serves this one call and is dropped before it
    /// returns, so no thread outlives it. Called inside an async runtime already (where a
    /// second one cannot start on the same thread), the call runs on a scoped thread of
    /// its own while the calling thread waits.
    pub fn process_blocking(
        &self,
        enc: &str,
        budget: Duration,
    ) -> Result<ProcessedNotification, NotificationError> {
        let run = || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| StateError::Io {
                    path: self.reader.dir().to_path_buf(),
                    source: e,
                })?;
            let result = runtime.block_on(self.process(enc, budget));
            // A resolver thread stuck on DNS must not hold the extension past its budget.
            runtime.shutdown_timeout(Duration::from_millis(100));
            result
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return run();
        }
        std::thread::scope(|s| match s.spawn(run).join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        })
    }

    async fn message_notification(
        &self,
        note: &PushNotification,
        hash: [u8; 32],
        deadline: Instant,
    ) -> ProcessedNotification {
        let (data, fetch) = if note.data_omitted {
            self.fetch(note, hash, deadline).await
        } else {
            (Some(note.data.clone()), Fetch::NotNeeded)
        };
        let opened = data.as_deref().and_then(|d| open_message(&self.identity, d).ok());
        let sender = opened.as_ref().map(|o| o.sender);
        let contact = sender.and_then(|s| self.index.contact(&s));
        let content = opened.map(|o| o.plaintext);
        let suppress = contact.as_ref().and_then(|c| suppression(c, now_ms()));
        let sender_name = contact.and_then(|c| c.display_name);
        let preview = if suppress == Some(SuppressReason::Blocked) {
            generic_preview(Vec::new())
        } else {
            preview(
                self.index.previews(),
                sender_name.as_deref(),
                content.as_deref().map(Vec::as_slice),
            )
        };
        ProcessedNotification {
            kind: NotificationKind::Message,
            namespace: note.namespace,
            hash,
            seq: note.seq,
            created_ms: note.created_ms,
            expires_ms: note.expires_ms,
            data,
            fetch,
            conversation: sender.map(|s| account_id(&s)),
            sender,
            sender_name,
            content,
            suppress,
            preview,
            journaled: false,
        }
    }

    /// One Retrieve of exactly the announced message, bounded by `deadline`.
    async fn fetch(
        &self,
        note: &PushNotification,
        hash: [u8; 32],
        deadline: Instant,
    ) -> (Option<Vec<u8>>, Fetch) {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let options = ClientOptions {
            connect_timeout: self.relay.client.connect_timeout.min(remaining),
            ..self.relay.client.clone()
        };
        let client = match RelayClient::connect_lazy(&self.relay.url, options) {
            Ok(client) => client,
            Err(e) => {
                tracing::debug!(error = %e, "cannot fetch the omitted message");
                return (None, Fetch::Failed);
            }
        };
        let after = note.seq.saturating_sub(1);
        let call = client.retrieve(&self.identity, note.namespace, after, 1, 0);
        let page = match tokio::time::timeout(remaining, call).await {
            Ok(Ok(page)) => page,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "fetching the omitted message failed");
                return (None, Fetch::Failed);
            }
            Err(_) => return (None, Fetch::TimedOut),
        };
        let account = self.identity.account();
        let ns = u32::try_from(note.namespace).unwrap_or(u32::MAX);
        // The message at that seq, and the bytes the relay hashed: nothing else is shown.
        let found = page
            .messages
            .into_iter()
            .find(|m| m.seq == note.seq && m.hash == hash && message_hash(&account, ns, &m.data) == hash);
        match found {
            Some(m) => (Some(m.data), Fetch::Fetched),
            None => (None, Fetch::Gone),
        }
    }

    /// Appends the notification to the delivery journal; false (logged) when it failed.
    fn journal(&self, n: &ProcessedNotification) -> bool {
        let entry = JournalEntry {
            hash: n.hash,
            namespace: n.namespace,
            seq: n.seq,
            created_ms: n.created_ms,
            expires_ms: n.expires_ms,
            data: n.data.clone(),
        };
        match journal::append(self.reader.dir(), &self.key, &entry) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "the delivery journal did not take a processed push");
                false
            }
        }
    }
}

/// The preview index, or (for state an older version wrote, before any save since) one
/// built from the full replica.
fn load_index(reader: &StateReader) -> Result<PreviewIndex, StateError> {
    if let Some(bytes) = reader.get_blob(PREVIEW_INDEX_BLOB)? {
        if let Some(index) = PreviewIndex::parse(bytes) {
            return Ok(index);
        }
        tracing::warn!("the preview index is malformed; falling back to the config replica");
    }
    let Some(bytes) = reader.get_blob(CONFIG_BLOB)? else {
        return Ok(PreviewIndex::build(&[], Previews::default()));
    };
    let bytes = Zeroizing::new(bytes);
    match ConfigState::load(&bytes) {
        Ok(config) => Ok(PreviewIndex::of(&config)),
        Err(e) => {
            tracing::warn!(error = %e, "the config replica does not load; previews stay generic");
            Ok(PreviewIndex::build(&[], Previews::default()))
        }
    }
}

fn config_notification(note: &PushNotification, hash: [u8; 32]) -> ProcessedNotification {
    ProcessedNotification {
        kind: NotificationKind::Config,
        namespace: note.namespace,
        hash,
        seq: note.seq,
        created_ms: note.created_ms,
        expires_ms: note.expires_ms,
        data: None,
        fetch: Fetch::NotNeeded,
        sender: None,
        sender_name: None,
        conversation: None,
        content: None,
        suppress: Some(SuppressReason::Config),
        preview: generic_preview(Vec::new()),
        journaled: false,
    }
}

/// Blocked, else muted until later than `now_ms`.
fn suppression(contact: &PreviewContact, now_ms: u64) -> Option<SuppressReason> {
    if contact.blocked {
        return Some(SuppressReason::Blocked);
    }
    contact
        .muted_until
        .filter(|&until| until > now_ms)
        .map(|until_ms| SuppressReason::Muted { until_ms })
}

/// What `previews` allow of a sender called `name` and a plaintext `content`.
fn preview(previews: Previews, name: Option<&str>, content: Option<&[u8]>) -> Preview {
    let mut limits = Vec::new();
    if !previews.show_sender && !previews.show_content {
        limits.push(PreviewLimit::PreviewsOff);
        return generic_preview(limits);
    }
    let title = match name {
        _ if !previews.show_sender => {
            limits.push(PreviewLimit::SenderHidden);
            None
        }
        None => {
            limits.push(PreviewLimit::SenderUnknown);
            None
        }
        Some(name) => Some(name.to_owned()),
    };
    let text = content.and_then(|c| std::str::from_utf8(c).ok());
    let body = match text {
        _ if !previews.show_content => {
            limits.push(PreviewLimit::ContentHidden);
            None
        }
        None => {
            limits.push(PreviewLimit::ContentUnknown);
            None
        }
        Some(text) => Some(text.chars().take(MAX_BODY_CHARS).collect()),
    };
    Preview {
        title: title.unwrap_or_else(|| GENERIC_TITLE.to_owned()),
        body,
        limits,
    }
}

fn generic_preview(limits: Vec<PreviewLimit>) -> Preview {
    Preview {
        title: GENERIC_TITLE.to_owned(),
        body: None,
        limits,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
