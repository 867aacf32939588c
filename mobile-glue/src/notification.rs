//! `NotificationProcessor`: what an iOS Notification Service Extension or an Android
//! `FirebaseMessagingService` calls to turn a push into a notification — sender name,
//! preview text allowed by the account's settings, whether to stay silent — without a
//! client, with the state opened read-only, and with no thread left running afterwards.
//! docs/mobile.md has the Swift and Kotlin recipes.

use std::{sync::Arc, time::Duration};

use tidings_device_link::{
    account::RelaySettings,
    identity::account_id,
    notification::{self as nse, NotificationError},
};
use zeroize::Zeroizing;

use crate::{
    error::{Result, TidingsError},
    push::key32,
    types::ClientOptions,
};

/// What a push is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum NotificationKind {
    /// A message to the account: show a notification (unless `suppress` says otherwise).
    Message,
    /// A config change by another device: nothing to show.
    Config,
}

/// Why a notification should not alert the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum SuppressReason {
    /// The sender is a blocked contact.
    Blocked,
    /// The sender is muted until `until_ms` (Unix ms, later than now).
    Muted {
        /// When the mute ends.
        until_ms: u64,
    },
    /// A config push: nothing to show.
    Config,
}

/// Why a preview shows less than the sender's name and the message's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum PreviewLimit {
    /// The account's settings hide sender and content (previews off).
    PreviewsOff,
    /// The settings hide the sender.
    SenderHidden,
    /// The settings hide the content.
    ContentHidden,
    /// The sender is unknown: not a sealed message, or not a contact with a name.
    SenderUnknown,
    /// The content is unknown or not text: omitted and not fetched in time, not a sealed
    /// message, or not UTF-8.
    ContentUnknown,
}

/// How the message data was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum FetchOutcome {
    /// The push carried it (or, for a config push, it is not needed).
    NotNeeded,
    /// The push omitted it; one Retrieve brought it within the budget.
    Fetched,
    /// The relay no longer has the message (expired or deleted).
    Gone,
    /// The relay could not be reached or refused the Retrieve.
    Failed,
    /// The budget ran out before the relay answered.
    TimedOut,
}

/// A processed push. `title` and `body` are what the notification may show; the other
/// fields are facts for an app that builds its own (localised) text.
#[derive(Clone, PartialEq, Eq, uniffi::Record)]
pub struct ProcessedNotification {
    /// Message or config.
    pub kind: NotificationKind,
    /// The namespace the message was stored in.
    pub namespace: i32,
    /// The message hash, 64 hex digits (as `IncomingMessage.hash`).
    pub hash: String,
    /// Its position in the mailbox.
    pub seq: u64,
    /// When the relay stored it (Unix ms).
    pub created_ms: i64,
    /// When the relay drops it (Unix ms).
    pub expires_ms: i64,
    /// The message data as the sender deposited it, when the push carried it or it was
    /// fetched; never for a config push.
    pub data: Option<Vec<u8>>,
    /// How the data was obtained.
    pub fetch: FetchOutcome,
    /// The sender's account id, when the data is a sealed message to this account.
    pub sender: Option<String>,
    /// The sender's display name (nickname, else name), when the sender is a contact.
    pub sender_name: Option<String>,
    /// The conversation the message belongs to (the sender's account id), for grouping
    /// (`threadIdentifier` on iOS).
    pub conversation: Option<String>,
    /// The sealed message's plaintext, when it opened.
    pub content: Option<Vec<u8>>,
    /// Set when the notification should not alert (blocked, muted, config).
    pub suppress: Option<SuppressReason>,
    /// The title to show: the sender's name, or a generic "New message".
    pub title: String,
    /// The text to show, when the settings allow it and it is known.
    pub body: Option<String>,
    /// Why the preview shows less than name and text; empty when it shows both.
    pub limits: Vec<PreviewLimit>,
    /// The delivery journal took it, so the app counts it as delivered and has it in its
    /// inbox at the next open. When false, the app finds the message by polling instead.
    pub journaled: bool,
}

impl std::fmt::Debug for ProcessedNotification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names and texts are the user's: only their presence is shown.
        f.debug_struct("ProcessedNotification")
            .field("kind", &self.kind)
            .field("seq", &self.seq)
            .field("fetch", &self.fetch)
            .field("data_len", &self.data.as_ref().map(Vec::len))
            .field("from_contact", &self.sender_name.is_some())
            .field("has_body", &self.body.is_some())
            .field("suppress", &self.suppress)
            .field("limits", &self.limits)
            .field("journaled", &self.journaled)
            .finish_non_exhaustive()
    }
}

/// One account's state opened read-only for processing pushes. Open one per extension
/// invocation (it reads contacts and preview settings once, at open).
#[derive(uniffi::Object)]
pub struct NotificationProcessor {
    inner: nse::NotificationProcessor,
}

impl std::fmt::Debug for NotificationProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

#[uniffi::export]
impl NotificationProcessor {
    /// Opens the app's state in `state_dir` (on iOS the App Group container the app uses)
    /// under `state_key` (the app's 32-byte key, shared through a keychain access group)
    /// read-only: it never writes there but to the delivery journal. `relay_url` is used
    /// only to fetch a message a push omitted. Touches no network. Fails with `State`
    /// when the app has not created state there, `WrongStateKey` for another key and
    /// `NotSignedIn` when no account is signed in. Pass the app's `options` so that the
    /// fetch trusts the same roots (`trust`, `extra_ca_roots_pem`) as the app's client.
    #[uniffi::constructor(default(options = None))]
    pub fn open(
        state_dir: String,
        state_key: Vec<u8>,
        relay_url: String,
        options: Option<ClientOptions>,
    ) -> Result<Arc<Self>> {
        let key = Zeroizing::new(key32(&state_key, "state_key")?);
        let mut settings = RelaySettings::new(relay_url);
        options.unwrap_or_default().apply_to(&mut settings.client);
        let inner = nse::NotificationProcessor::open(&state_dir, &key, settings)?;
        Ok(Arc::new(NotificationProcessor { inner }))
    }

    /// The signed-in account's id.
    pub fn account_id(&self) -> String {
        self.inner.account_id()
    }

    /// Processes a push's `enc` within `budget_ms` (default 5000; on Android pass about
    /// 8000 of `onMessageReceived`'s 10 s). Blocks the calling thread — right for the
    /// extension's callback — and leaves no thread behind. A push that omitted its data
    /// is fetched with one Retrieve; a relay that cannot be reached in time gives a
    /// generic preview, not an error. Fails with `PushMalformed`, `PushNotForThisDevice`
    /// (another install's push key, or another account) or `State`.
    pub fn process(&self, enc: String, budget_ms: Option<u32>) -> Result<ProcessedNotification> {
        let budget = budget_ms.map_or(nse::DEFAULT_BUDGET, |ms| Duration::from_millis(u64::from(ms)));
        let n = self.inner.process_blocking(&enc, budget)?;
        Ok(ProcessedNotification::from_core(n))
    }
}

#[uniffi::export]
impl NotificationProcessor {
    /// [`NotificationProcessor::process`] for what a UnifiedPush distributor delivered (the
    /// raw bytes of the connector's `onMessage`), when the process was started for the push
    /// and the app's client is not open: removes the Web Push encryption with the keys the
    /// app's client registered, then processes the push. Same errors as `process`.
    pub fn process_web_push(&self, body: Vec<u8>, budget_ms: Option<u32>) -> Result<ProcessedNotification> {
        let enc = self.inner.open_web_push(&body)?;
        self.process(enc, budget_ms)
    }
}

impl ProcessedNotification {
    fn from_core(n: nse::ProcessedNotification) -> ProcessedNotification {
        ProcessedNotification {
            kind: match n.kind {
                nse::NotificationKind::Message => NotificationKind::Message,
                nse::NotificationKind::Config => NotificationKind::Config,
            },
            namespace: n.namespace,
            hash: hex::encode(n.hash),
            seq: n.seq,
            created_ms: n.created_ms,
            expires_ms: n.expires_ms,
            data: n.data,
            fetch: match n.fetch {
                nse::Fetch::NotNeeded => FetchOutcome::NotNeeded,
                nse::Fetch::Fetched => FetchOutcome::Fetched,
                nse::Fetch::Gone => FetchOutcome::Gone,
                nse::Fetch::Failed => FetchOutcome::Failed,
                nse::Fetch::TimedOut => FetchOutcome::TimedOut,
            },
            sender: n.sender.as_ref().map(account_id),
            sender_name: n.sender_name,
            conversation: n.conversation,
            content: n.content.map(|c| c.to_vec()),
            suppress: n.suppress.map(|s| match s {
                nse::SuppressReason::Blocked => SuppressReason::Blocked,
                nse::SuppressReason::Muted { until_ms } => SuppressReason::Muted { until_ms },
                nse::SuppressReason::Config => SuppressReason::Config,
            }),
            title: n.preview.title,
            body: n.preview.body,
            limits: n.preview.limits.into_iter().map(limit).collect(),
            journaled: n.journaled,
        }
    }
}

fn limit(l: nse::PreviewLimit) -> PreviewLimit {
    match l {
        nse::PreviewLimit::PreviewsOff => PreviewLimit::PreviewsOff,
        nse::PreviewLimit::SenderHidden => PreviewLimit::SenderHidden,
        nse::PreviewLimit::ContentHidden => PreviewLimit::ContentHidden,
        nse::PreviewLimit::SenderUnknown => PreviewLimit::SenderUnknown,
        nse::PreviewLimit::ContentUnknown => PreviewLimit::ContentUnknown,
    }
}

impl From<NotificationError> for TidingsError {
    fn from(e: NotificationError) -> Self {
        match e {
            NotificationError::State(e) => e.into(),
            NotificationError::NotSignedIn(_) => TidingsError::NotSignedIn,
            NotificationError::Push(e) => e.into(),
            // Pushes for another account are another install's as far as the app goes.
            NotificationError::OtherAccount => TidingsError::PushNotForThisDevice,
            NotificationError::WebPush(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_device_link::{
        client::PushNotification,
        config::{ConfigState, Contact, DeviceId, Previews},
        identity::Identity,
        notification::save_preview_index,
        sealed::seal_message,
        state::DeviceState,
    };
    use tidings_proto::{hash::message_hash, push::encrypt_push};

    const KEY: [u8; 32] = [3; 32];

    /// A signed-in state dir with Ada as a contact under `previews`; the push key.
    fn install(ada: &Identity, previews: Previews) -> (tempfile::TempDir, Identity, [u8; 32]) {
        let dir = tempfile::tempdir().unwrap();
        let mut disk = DeviceState::open(dir.path(), &KEY).unwrap();
        let me = Identity::create();
        disk.set_identity(&me).unwrap();
        let mut config = ConfigState::new(DeviceId(disk.device_id()));
        config
            .add_contact(&Contact {
                account_id: ada.account_id(),
                name: "Ada".into(),
                ..Contact::default()
            })
            .unwrap();
        config.set_previews(previews);
        save_preview_index(&mut disk, &config).unwrap();
        (dir, me, *disk.push_key())
    }

    fn push(me: &Identity, push_key: &[u8; 32], data: &[u8]) -> String {
        let account = me.account();
        encrypt_push(
            push_key,
            &PushNotification {
                account: account.to_vec(),
                hash: message_hash(&account, 0, data).to_vec(),
                seq: 5,
                data: data.to_vec(),
                data_len: data.len() as u32,
                ..Default::default()
            },
        )
    }

    #[test]
    fn a_sealed_message_from_a_contact_crosses_the_ffi_with_name_and_text() {
        let ada = Identity::create();
        let previews = Previews {
            show_sender: true,
            show_content: true,
        };
        let (dir, me, push_key) = install(&ada, previews);
        let p = NotificationProcessor::open(
            dir.path().to_str().unwrap().into(),
            KEY.to_vec(),
            "http://127.0.0.1:1".into(),
            None,
        )
        .unwrap();
        assert_eq!(p.account_id(), me.account_id());
        let sealed = seal_message(&ada, &me.account(), b"hello").unwrap();
        let n = p.process(push(&me, &push_key, &sealed), Some(500)).unwrap();
        assert_eq!(
            (n.kind, n.fetch, n.suppress),
            (NotificationKind::Message, FetchOutcome::NotNeeded, None)
        );
        assert_eq!(n.hash, hex::encode(message_hash(&me.account(), 0, &sealed)));
        assert_eq!(n.sender.as_deref(), Some(ada.account_id().as_str()));
        assert_eq!((n.title.as_str(), n.body.as_deref()), ("Ada", Some("hello")));
        assert!(n.journaled && n.limits.is_empty());
        let debug = format!("{n:?}");
        assert!(!debug.contains("Ada") && !debug.contains("hello"), "{debug}");
    }

    #[test]
    fn errors_are_the_apis_own() {
        let ada = Identity::create();
        let (dir, me, _) = install(&ada, Previews::default());
        let dir_s = dir.path().to_str().unwrap().to_owned();
        let url = "http://127.0.0.1:1".to_owned();
        assert_eq!(
            NotificationProcessor::open(dir_s.clone(), vec![9; 32], url.clone(), None).unwrap_err(),
            TidingsError::WrongStateKey
        );
        assert!(matches!(
            NotificationProcessor::open(dir_s.clone(), vec![9; 3], url.clone(), None),
            Err(TidingsError::InvalidArgument { .. })
        ));
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            NotificationProcessor::open(
                empty.path().to_str().unwrap().into(),
                KEY.to_vec(),
                url.clone(),
                None
            ),
            Err(TidingsError::State { .. })
        ));
        let p = NotificationProcessor::open(dir_s, KEY.to_vec(), url, None).unwrap();
        assert_eq!(
            p.process("%%".into(), None).unwrap_err(),
            TidingsError::PushMalformed
        );
        assert_eq!(
            p.process(push(&me, &[8; 32], b"x"), None).unwrap_err(),
            TidingsError::PushNotForThisDevice
        );
    }
}
