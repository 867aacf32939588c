//! Plain data crossing the FFI: records (structs with public fields) and enums.

use tidings_device_link::client::PushNotification;
use tidings_device_link::tls::TrustRoots;

/// The owner-only namespace the account's config messages live in.
pub const CONFIG_NAMESPACE: i32 = tidings_device_link::config::sync::CONFIG_NAMESPACE;
/// The public namespace messages to an account are deposited in.
pub const MESSAGE_NAMESPACE: i32 = tidings_device_link::account::MESSAGE_NAMESPACE;

/// A push provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum PushService {
    /// Apple Push Notification service, production (App Store and TestFlight builds).
    Apns,
    /// APNs sandbox (development builds from Xcode).
    ApnsSandbox,
    /// Firebase Cloud Messaging.
    Fcm,
    /// Huawei Push Kit (phones without Google services): the token is the HMS push token.
    Hms,
    /// Web Push through a UnifiedPush distributor (ntfy, NextPush, Sunup, …): the token is
    /// the endpoint URL the distributor gave. The SDK generates and keeps the subscription
    /// keys; hand what the distributor delivers to `handle_web_push`.
    WebPush,
}

impl PushService {
    /// The wire enum.
    pub(crate) fn to_wire(self) -> tidings_device_link::client::PushService {
        use tidings_device_link::client::PushService as W;
        match self {
            PushService::Apns => W::Apns,
            PushService::ApnsSandbox => W::ApnsSandbox,
            PushService::Fcm => W::Fcm,
            PushService::Hms => W::Hms,
            PushService::WebPush => W::Webpush,
        }
    }
}

/// How messages reach this install.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum Mode {
    /// The relay pushes (encrypted) through APNs / FCM; the app fetches little.
    Fast,
    /// The app polls its mailbox; nothing is registered with anyone.
    Slow,
}

/// Why the mode is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum ModeReason {
    /// The app asked for it (`enable_fast_mode`, `disable_fast_mode`, a new token).
    Requested,
    /// The relay refused the push registration (e.g. an app id it does not serve);
    /// `detail` has its message. Not retried: fix the cause and enable again.
    SubscribeRejected,
    /// The relay could not be reached to register or renew; retried in the background,
    /// Fast Mode comes back by itself.
    RelayUnreachable,
    /// Fast Mode came back by itself: after the relay was unreachable, or when the retry
    /// after `PushesMissing` (on a later foreground) registered again.
    Recovered,
    /// The relay had dropped the registration: the push provider reported the token dead.
    /// Pass a fresh token to `enable_fast_mode`.
    TokenPruned,
    /// Polling kept finding messages that reached the device while the app was in the
    /// foreground and that no push announced (neither `handle_push` nor the notification
    /// extension's journal) within `push_grace_ms`. The token is kept: Fast Mode is retried
    /// on a later foreground, after a pause that doubles with each such fallback.
    PushesMissing,
    /// The registration ran out before it could be renewed.
    Expired,
    /// The account was signed out.
    SignedOut,
}

/// Whether the app is on screen: tell the client with `set_app_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum AppState {
    /// On screen (iOS: active; Android: a started activity). Pushes reach the app.
    Foreground,
    /// Not on screen. iOS hands alert pushes to the Notification Service Extension only.
    Background,
}

/// A mode change, as reported to the app.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ModeChange {
    /// The mode now in effect.
    pub mode: Mode,
    /// Why.
    pub reason: ModeReason,
    /// A human-readable detail (the relay's message for `SubscribeRejected`), or empty.
    pub detail: String,
}

/// How a message reached the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum MessageSource {
    /// Inside a push (or fetched because a push announced it).
    Push,
    /// By polling the mailbox.
    Poll,
    /// Inside a push the notification extension processed (read from the delivery
    /// journal when the app opened or resumed).
    Extension,
}

/// A message deposited in this account's mailbox. It stays in `pending_messages()` until
/// acknowledged with `ack`; `on_message` reports it once when it arrives.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct IncomingMessage {
    /// The message hash, 64 hex digits: its identity.
    pub hash: String,
    /// The namespace it was deposited in (0 for messages).
    pub namespace: i32,
    /// The relay's sequence number within the namespace.
    pub seq: u64,
    /// The bytes the sender stored (the app's own encrypted envelope).
    pub data: Vec<u8>,
    /// When the relay stored it (Unix ms).
    pub created_ms: i64,
    /// When the relay forgets it (Unix ms).
    pub expires_ms: i64,
    /// How it arrived first.
    pub source: MessageSource,
    /// For a sealed message to this account (`send_message`): the sender's account id,
    /// authenticated by the sender's signature. None for an app's own opaque bytes.
    pub sender_account_id: Option<String>,
    /// For a sealed message: what the sender wrote. None for an app's own bytes (in
    /// `data`).
    pub plaintext: Option<Vec<u8>>,
}

/// What the relay answered to a send.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SendReceipt {
    /// The message hash, 64 hex digits.
    pub hash: String,
    /// Its sequence number in the recipient's namespace.
    pub seq: u64,
    /// When the relay forgets it (Unix ms).
    pub expires_ms: i64,
    /// The same bytes were stored before (sending is idempotent).
    pub duplicate: bool,
}

/// What a push announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum PushKind {
    /// A message (namespace 0..=9): show a notification.
    Message,
    /// A config change from another device of the account: nothing to show.
    Config,
}

/// A decrypted push payload.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct DecryptedPush {
    /// The account it is for (`"01"` + hex): several accounts may share one app.
    pub account_id: String,
    /// Message or config.
    pub kind: PushKind,
    /// The namespace the message was stored in.
    pub namespace: i32,
    /// The message hash, 64 hex digits.
    pub hash: String,
    /// The relay's sequence number.
    pub seq: u64,
    /// When the message was stored (Unix ms).
    pub created_ms: i64,
    /// When it expires (Unix ms).
    pub expires_ms: i64,
    /// The message's size.
    pub data_len: u32,
    /// The message itself, when it fit into the push.
    pub data: Option<Vec<u8>>,
    /// The message did not fit: fetch it (`handle_push` does).
    pub data_omitted: bool,
}

impl DecryptedPush {
    pub(crate) fn from_wire(n: &PushNotification) -> DecryptedPush {
        let account = <[u8; 32]>::try_from(n.account.as_slice()).unwrap_or([0; 32]);
        let kind = if tidings_proto::namespace::is_owner_only(n.namespace) {
            PushKind::Config
        } else {
            PushKind::Message
        };
        DecryptedPush {
            account_id: tidings_device_link::identity::account_id(&account),
            kind,
            namespace: n.namespace,
            hash: hex::encode(&n.hash),
            seq: n.seq,
            created_ms: n.created_ms,
            expires_ms: n.expires_ms,
            data_len: n.data_len,
            data: (!n.data_omitted).then(|| n.data.clone()),
            data_omitted: n.data_omitted,
        }
    }
}

/// What `handle_push` did with a push.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PushOutcome {
    /// The decrypted payload.
    pub push: DecryptedPush,
    /// Messages not seen before: the one the push carried, or those fetched because it
    /// did not carry its message. Also reported through `on_message`.
    pub messages: Vec<IncomingMessage>,
    /// The message had already arrived (by poll, or an earlier push).
    pub duplicate: bool,
    /// A config push changed the documents (also reported through `on_config_changed`).
    pub config_changed: bool,
    /// Everything the push announced was handled within the budget. False when a fetch
    /// (a push that omitted its message) or a config sync ran out of time: polling brings
    /// it later, nothing is lost.
    pub complete: bool,
}

/// A long operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum Operation {
    /// Restoring the account's config (by phrase or after a QR link).
    Restore,
    /// Catching up with the mailbox (`sync_now`).
    Sync,
}

/// Where a long operation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum ProgressStage {
    /// Fetching, page by page.
    Fetching,
    /// Everything fetched; merging it.
    Merging,
    /// Finished.
    Done,
}

/// How far a long operation got: "fetched `done` of `total`".
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Progress {
    /// Which operation.
    pub operation: Operation,
    /// Its stage.
    pub stage: ProgressStage,
    /// Messages fetched so far.
    pub done: u64,
    /// Messages to fetch in all, once known (the relay tells with the last page).
    pub total: Option<u64>,
    /// Bytes fetched so far.
    pub bytes: u64,
}

/// A device scanned this (new) install's link code; nothing was sent yet. Show the code
/// beside the other screen's, then `confirm_link` (they match) or `reject_link`.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct LinkRequest {
    /// The six-digit short authentication string.
    pub sas: String,
    /// The relay the link code named (where this install waits and will sign in).
    pub relay_url: String,
}

/// A config document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum ConfigDocument {
    /// Display name and avatar.
    Profile,
    /// Contacts.
    Contacts,
    /// Conversation read state, pins.
    Conversations,
    /// Notification mode and previews.
    Settings,
}

/// Config documents changed (by another device, or a restore).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ConfigChange {
    /// Which documents differ from before.
    pub documents: Vec<ConfigDocument>,
}

/// What a `sync_now` fetched.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SyncSummary {
    /// The new messages, oldest first (also reported through `on_message`, and pending
    /// until acknowledged).
    pub messages: Vec<IncomingMessage>,
    /// Whether the config documents changed.
    pub config_changed: bool,
}

/// The state of the Fast/Slow Mode driver.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ModeStatus {
    /// The mode in effect.
    pub mode: Mode,
    /// Why.
    pub reason: ModeReason,
    /// The app asked for Fast Mode and the driver keeps trying (while the relay is
    /// unreachable, or after `PushesMissing` until the retry, `mode` is `Slow` and this is
    /// true). False after `TokenPruned` and `SubscribeRejected`: enable again.
    pub fast_requested: bool,
    /// When the push registration expires unless renewed (Unix ms), if registered.
    pub expires_ms: Option<i64>,
}

/// Tunables of the client; `default_client_options()` gives the production values.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ClientOptions {
    /// Longest long-poll in Slow Mode, ms (the relay caps it at 60 000).
    pub poll_wait_ms: u32,
    /// In Fast Mode, how often the mailbox is still checked by polling while the client
    /// runs, ms (catches pushes that never came).
    pub fast_check_interval_ms: u64,
    /// How long after a message was found by polling its push may still arrive, ms.
    pub push_grace_ms: u64,
    /// Messages found by polling without a push before Fast Mode is given up.
    pub missed_push_limit: u32,
    /// Renew the push registration when less than this part of its lifetime is left,
    /// in percent (50: halfway).
    pub renew_at_percent: u8,
    /// First pause before retrying a registration the relay could not take, ms
    /// (doubles up to 64 times this).
    pub retry_backoff_ms: u64,
    /// Time to live of sent messages, ms (0: the relay's default, 14 days).
    pub message_ttl_ms: i64,
    /// Which roots an `https://` relay's certificate is checked against.
    pub trust: TrustStore,
    /// Root certificates trusted beside `trust`, for a relay behind a private CA: each
    /// entry one or more PEM certificates. A bad entry fails `open`, naming its index.
    pub extra_ca_roots_pem: Vec<String>,
    /// Deadline of one relay request, ms (a long-poll gets its wait on top); 0: 30 000.
    pub request_timeout_ms: u64,
    /// Reach the relay through this OHTTP relay (Oblivious HTTP: the relay never sees the
    /// device's address); the relay URL is then its OHTTP gateway. None: directly.
    #[uniffi(default = None)]
    pub ohttp_relay_url: Option<String>,
    /// The gateway's key configuration (`application/ohttp-keys`), pinned; None: fetched
    /// from the gateway once (that request shows the device's address to the relay).
    #[uniffi(default = None)]
    pub ohttp_key_config: Option<Vec<u8>>,
}

/// The roots an `https://` relay's certificate is checked against (plus any
/// `extra_ca_roots_pem`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum TrustStore {
    /// Mozilla's roots, compiled into the library: no setup, the same on every device, but
    /// only as current as the app's build and blind to roots an organisation installs.
    Bundled,
    /// The operating system's verifier: the device's trust store with the roots a user or
    /// an MDM profile installed, and the OS's own revocation and distrust decisions. On
    /// Android call `TidingsPlatform.initPlatformVerifier(context)` once first.
    Platform,
}

impl From<TrustStore> for TrustRoots {
    fn from(trust: TrustStore) -> TrustRoots {
        match trust {
            TrustStore::Bundled => TrustRoots::Bundled,
            TrustStore::Platform => TrustRoots::Platform,
        }
    }
}

/// The deadline of one request when `request_timeout_ms` is 0.
pub(crate) const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 30_000;

impl ClientOptions {
    /// The relay client's settings these options ask for, on top of `base`.
    pub(crate) fn apply_to(&self, base: &mut tidings_device_link::client::ClientOptions) {
        base.roots = self.trust.into();
        base.extra_roots_pem = self
            .extra_ca_roots_pem
            .iter()
            .map(|pem| pem.as_bytes().to_vec())
            .collect();
        let timeout_ms = match self.request_timeout_ms {
            0 => DEFAULT_REQUEST_TIMEOUT_MS,
            ms => ms,
        };
        base.rpc_timeout = std::time::Duration::from_millis(timeout_ms);
        base.ohttp =
            self.ohttp_relay_url
                .as_ref()
                .map(|relay_url| tidings_device_link::ohttp::OhttpSettings {
                    relay_url: relay_url.clone(),
                    key_config: self.ohttp_key_config.clone(),
                    local_address: None,
                });
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            poll_wait_ms: 30_000,
            fast_check_interval_ms: 15 * 60_000,
            push_grace_ms: 120_000,
            missed_push_limit: 3,
            renew_at_percent: 50,
            retry_backoff_ms: 5_000,
            message_ttl_ms: 0,
            // What the device trusts (MDM-installed roots, OS trust updates) rather than a
            // snapshot frozen at build time.
            trust: TrustStore::Platform,
            extra_ca_roots_pem: Vec::new(),
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            ohttp_relay_url: None,
            ohttp_key_config: None,
        }
    }
}

/// The production defaults of `ClientOptions`.
#[uniffi::export]
pub fn default_client_options() -> ClientOptions {
    ClientOptions::default()
}

/// The avatar: where the encrypted image is and the key that decrypts it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Avatar {
    /// Download URL of the encrypted image.
    pub url: String,
    /// The key that decrypts it.
    pub key: Vec<u8>,
}

/// The account's profile.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Profile {
    /// Empty until set.
    pub display_name: String,
    /// None until set.
    pub avatar: Option<Avatar>,
}

/// A contact.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Contact {
    /// The contact's account id (`"01"` + hex).
    pub account_id: String,
    /// The name the contact chose.
    pub name: String,
    /// The name the owner gave the contact.
    pub nickname: Option<String>,
    /// Message requests from this contact are accepted.
    pub approved: bool,
    /// Messages from this contact are dropped.
    pub blocked: bool,
    /// Notifications are silent until this Unix time in ms.
    pub muted_until_ms: Option<u64>,
}

/// A conversation's state.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Conversation {
    /// The app's conversation id.
    pub id: String,
    /// Every message sent at or before this Unix time in ms has been read.
    pub last_read_ms: u64,
    /// Shown as unread although read.
    pub marked_unread: bool,
    /// Pinned to the top.
    pub pinned: bool,
    /// Order among pinned conversations, greater first.
    pub priority: i32,
}

/// The account-wide notification mode the user chose (synced between devices).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum NotificationMode {
    /// Push through APNs / FCM.
    Fast,
    /// Poll only.
    Slow,
}

/// The account's settings.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Settings {
    /// Fast or Slow Mode, as the user chose for the account.
    pub notification_mode: NotificationMode,
    /// Notifications show the sender's name.
    pub show_sender: bool,
    /// Notifications show the message text.
    pub show_content: bool,
}

/// All four config documents.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ConfigDocuments {
    /// The profile.
    pub profile: Profile,
    /// Contacts, sorted by account id.
    pub contacts: Vec<Contact>,
    /// Conversations, sorted by id.
    pub conversations: Vec<Conversation>,
    /// Settings.
    pub settings: Settings,
}

/// Hex of a 32-byte hash.
pub(crate) fn hash_hex(hash: &[u8]) -> String {
    hex::encode(hash)
}
