//! Durable storage of mailboxes, push subscriptions and the push outbox.
//!
//! [`Store`] is the one storage trait; it has two real backends: [`redb`] (embedded,
//! the default) and `postgres` (scale-out, several relay nodes on one database).
//!
//! Invariants every backend keeps:
//! - A call that returns `Ok` is durable (fsync'd / committed) before it returns.
//! - `seq` is strictly increasing per (account, namespace), never reused, also after
//!   deletes, sweeps and restarts.
//! - Storing the same (account, namespace, hash) again changes nothing and reports the
//!   original seq and expiry with `duplicate = true`.
//! - The push jobs of a message are written in the same commit as the message.
//! - Expired messages (`expires_ms <= now_ms`) are never returned by `get_messages`,
//!   whether or not they were swept yet.
//! - A leased job is invisible to `claim_jobs` until its lease ends, then any node may
//!   take it over; from then on only the new claim can finish it.
//!
//! The conformance suite in `conformance` (compiled for tests and with the `conformance`
//! feature) checks all of this for every backend.
//!
//! The store knows no policy: the caller hands it an opaque `account_index` (a keyed
//! hash) and opaque sealed blobs for subscriptions, and decides limits, clocks and
//! validation. Its one piece of cryptography is [`linkage`]: with keys derived from the
//! relay secret it seals what a push job delivers and keys its pushed markers, so that a
//! dump (pending jobs, markers, the embedded store's log) links no account to its
//! subscriptions.

#[cfg(any(test, feature = "conformance"))]
#[doc(hidden)]
// Test code, compiled also for other crates' tests (the feature): a failed unwrap is a
// failed test.
#[allow(clippy::unwrap_used)]
pub mod conformance;
pub mod linkage;
pub mod postgres;
pub mod redb;

use async_trait::async_trait;

/// Declares a 32-byte key type that is its own type (so an [`Account`] never goes where an
/// [`AccountIndex`] belongs: the at-rest privacy rests on keeping them apart) and whose
/// `Debug` prints none of its bytes.
macro_rules! key32 {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub [u8; 32]);

        impl std::ops::Deref for $name {
            type Target = [u8; 32];

            fn deref(&self) -> &[u8; 32] {
                &self.0
            }
        }

        impl AsRef<[u8]> for $name {
            fn as_ref(&self) -> &[u8] {
                &self.0
            }
        }

        impl From<[u8; 32]> for $name {
            fn from(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($name), "(..)"))
            }
        }
    };
}

key32! {
    /// An account key: the Ed25519 public key of the mailbox owner.
    Account
}
key32! {
    /// The keyed hash under which subscriptions of an account are indexed: what the store
    /// keeps instead of the account wherever a device is concerned.
    AccountIndex
}
/// A message hash, `H(account ‖ be32(namespace) ‖ data)`.
pub type Hash = [u8; 32];
/// A device id.
pub type DeviceId = [u8; 16];

/// A message to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// The mailbox's owner.
    pub account: Account,
    /// Keyed hash of `account`, used to find the subscriptions to enqueue pushes for.
    pub account_index: AccountIndex,
    /// The mailbox namespace (owner-only namespaces hold config messages).
    pub namespace: u32,
    /// The message hash: a re-store of the same hash is a duplicate.
    pub hash: Hash,
    /// The opaque (client-encrypted) message.
    pub data: Vec<u8>,
    /// The caller's "now" (see [`Store::put_message`]).
    pub created_ms: i64,
    /// When the message expires and may be swept.
    pub expires_ms: i64,
}

/// What storing a message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutOutcome {
    /// The message's position in its mailbox namespace, increasing per Store.
    pub seq: u64,
    /// When the stored message expires.
    pub expires_ms: i64,
    /// The same message was already stored; `seq` and `expires_ms` are the original's.
    pub duplicate: bool,
    /// How many push jobs were enqueued in the same commit.
    pub jobs_enqueued: u32,
}

/// A stored message as Retrieve returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The message hash.
    pub hash: Hash,
    /// Its position in the mailbox namespace.
    pub seq: u64,
    /// The opaque message.
    pub data: Vec<u8>,
    /// When it was stored.
    pub created_ms: i64,
    /// When it expires.
    pub expires_ms: i64,
}

/// One page of a mailbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// The messages, in seq order.
    pub messages: Vec<StoredMessage>,
    /// Unexpired messages remain after the last one returned.
    pub more: bool,
}

/// A push subscription of one device of one account.
///
/// Only `namespaces`, `want_data` and the expiry are in clear: the token, push key,
/// service and app id live in `sealed`, encrypted by the caller under the relay's
/// at-rest key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The keyed hash of the subscribed account (never the account itself).
    pub account_index: AccountIndex,
    /// The device, unique within the account.
    pub device_id: DeviceId,
    /// Strictly ascending.
    pub namespaces: Vec<u32>,
    /// Whether the push carries the message itself when it fits.
    pub want_data: bool,
    /// Token, push key, service and app id, encrypted at rest and bound to this row.
    pub sealed: Vec<u8>,
    /// When the subscription lapses unless renewed.
    pub expires_ms: i64,
}

/// A unit of push work: deliver one message to one subscribed device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushJob {
    /// Unique, increasing in enqueue order.
    pub id: u64,
    /// The mailbox the message is in (sealed at rest, see `store::linkage`).
    pub account: Account,
    /// The keyed hash that finds the device's subscription.
    pub account_index: AccountIndex,
    /// The device to wake.
    pub device_id: DeviceId,
    /// The message's namespace.
    pub namespace: u32,
    /// The message's hash.
    pub hash: Hash,
    /// The message's seq.
    pub seq: u64,
    /// When the message was stored.
    pub created_ms: i64,
    /// When the message expires: an expired message is not pushed.
    pub expires_ms: i64,
    /// Delivery attempts made so far.
    pub attempts: u32,
    /// When the job was first enqueued (for the give-up age and outbox metrics).
    pub enqueued_ms: i64,
    /// The claim this job was handed out under ([`Lease::default`] when not claimed).
    pub lease: Lease,
}

/// Which claim of a job a [`PushJob`] came from: [`Store::claim_jobs`] fills it in, and
/// [`Store::finish_job`] takes effect only while the job is still held under it.
///
/// The owner alone cannot tell two claims of one node apart (its own lease ran out while
/// a provider call hung, and it claimed the job again); the lease end can, because a job
/// is claimable only once its lease has ended, and lease times are positive, so every
/// claim ends later than the one before.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lease {
    /// The node that claimed the job (as the store keeps it: a backend may shorten it).
    pub owner: String,
    /// When that claim's lease ends.
    pub until_ms: i64,
}

/// How a claimed job ended, as [`Store::finish_job`] records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    /// Delivered: the job is removed and (device, hash) is remembered as pushed.
    Delivered,
    /// The provider says the token is dead: the job and the subscription are removed.
    TokenDead,
    /// Try again no earlier than `not_before_ms`; the lease is released.
    Retry {
        /// The earliest time of the next attempt.
        not_before_ms: i64,
    },
    /// Give up (too old, config error, message gone): the job is removed.
    Dropped,
}

/// What delivering a push job needs besides the job: its device's subscription and the
/// message (either may be gone by now).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushInputs {
    /// Expired or not: the caller checks `expires_ms`.
    pub subscription: Option<Subscription>,
    /// Expired or not: the caller checks `expires_ms`.
    pub message: Option<StoredMessage>,
}

/// Counts an operator wants to see.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Push jobs waiting or in flight.
    pub depth: u64,
    /// When the oldest of them was enqueued.
    pub oldest_enqueued_ms: Option<i64>,
}

/// The error underneath a [`StoreError`]: shared, because one failed batch answers every
/// caller in it with the same error.
pub type Cause = std::sync::Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Why the store could not do what was asked.
///
/// `reason` is a self-contained summary an operator can act on and a client may be shown
/// (it never quotes stored values: no account, hash or token); [`std::error::Error::source`]
/// gives the typed error underneath where there is one (a [`std::io::Error`] with its kind,
/// redb's or the PostgreSQL driver's error, a [`postgres::SqlError`] with its SQLSTATE) for code
/// that must tell causes apart and for debugging.
#[derive(Debug, Clone)]
pub enum StoreError {
    /// The store cannot take writes now (disk full, read-only, database down).
    /// Nothing was half-written; the caller may retry later.
    Unavailable {
        /// What failed, for the operator and the client.
        reason: String,
        /// The error underneath, if any.
        cause: Option<Cause>,
    },
    /// The stored data is not what this version of the relay wrote.
    Corrupt {
        /// What is wrong, for the operator (clients are told no more than "storage error").
        reason: String,
        /// The error underneath, if any.
        cause: Option<Cause>,
    },
    /// The store is shutting down and takes no more work.
    Closed,
}

impl StoreError {
    /// An [`StoreError::Unavailable`] with no error underneath (yet: see [`Self::because`]).
    pub fn unavailable(reason: impl Into<String>) -> StoreError {
        StoreError::Unavailable {
            reason: reason.into(),
            cause: None,
        }
    }

    /// A [`StoreError::Corrupt`] with no error underneath (yet: see [`Self::because`]).
    pub fn corrupt(reason: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            reason: reason.into(),
            cause: None,
        }
    }

    /// Keeps `cause` as this error's source. No effect on [`StoreError::Closed`].
    #[must_use]
    pub fn because(mut self, e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
        if let StoreError::Unavailable { cause, .. } | StoreError::Corrupt { cause, .. } = &mut self {
            *cause = Some(std::sync::Arc::new(e));
        }
        self
    }

    /// The error underneath as a `T`, if it is one.
    pub fn cause_as<T: std::error::Error + 'static>(&self) -> Option<&T> {
        std::error::Error::source(self)?.downcast_ref::<T>()
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Unavailable { reason, .. } => write!(f, "storage unavailable: {reason}"),
            StoreError::Corrupt { reason, .. } => write!(f, "storage corrupt: {reason}"),
            StoreError::Closed => f.write_str("storage is closed"),
        }
    }
}

// By hand rather than with thiserror: `source` hands out the error underneath itself (not
// the `Arc` around it), so `downcast_ref` on it finds the io or driver error.
impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Unavailable { cause, .. } | StoreError::Corrupt { cause, .. } => {
                let cause: &(dyn std::error::Error + 'static) = cause.as_deref()?;
                Some(cause)
            }
            StoreError::Closed => None,
        }
    }
}

/// Durable storage behind the relay. See the module docs for the invariants.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a message (idempotent by hash) and, in the same commit, enqueues a push
    /// job for every unexpired subscription of `msg.account_index` that includes
    /// `msg.namespace` and has not been pushed this hash before.
    ///
    /// `msg.created_ms` is the caller's "now" for this call: it decides which
    /// subscriptions are unexpired and becomes the jobs' `enqueued_ms`. An original that
    /// is expired by then (not yet swept) does not make this a duplicate: it is replaced
    /// and the message gets a new seq. A (device, hash) that ever got a job gets no second
    /// one, also after the message was deleted and stored again.
    async fn put_message(&self, msg: NewMessage) -> Result<PutOutcome, StoreError>;

    /// Unexpired messages with `seq > after_seq`, ascending, at most `limit`.
    async fn get_messages(
        &self,
        account: &Account,
        namespace: u32,
        after_seq: u64,
        limit: u32,
        now_ms: i64,
    ) -> Result<Page, StoreError>;

    /// How many seqs the mailbox's stored messages span (`last - first + 1`, expired but
    /// unswept ones included; 0 when empty): an upper bound of what it holds, from two
    /// index lookups, so the mailbox cap costs nothing until a mailbox nears it.
    async fn seq_span(&self, account: &Account, namespace: u32) -> Result<u64, StoreError>;

    /// How many unexpired messages with `seq > after_seq` the mailbox holds, counting no
    /// further than `at_most` (the answer is `min(count, at_most)`): with `after_seq = 0`
    /// the mailbox cap, after a Retrieve page's last seq its `remaining`. Costs up to
    /// `at_most` entries, so the caller bounds it (the cap asks [`Store::seq_span`] first).
    async fn count_messages(
        &self,
        account: &Account,
        namespace: u32,
        after_seq: u64,
        now_ms: i64,
        at_most: u32,
    ) -> Result<u32, StoreError>;

    /// Fetches one message by hash (the notifier loads `data` for `want_data` pushes).
    /// There is no clock here: an expired message not yet swept is returned, and the
    /// caller checks `expires_ms`.
    async fn get_message(
        &self,
        account: &Account,
        namespace: u32,
        hash: &Hash,
    ) -> Result<Option<StoredMessage>, StoreError>;

    /// Deletes the listed messages; returns how many were stored (expired or not).
    async fn delete_messages(
        &self,
        account: &Account,
        namespace: u32,
        hashes: &[Hash],
    ) -> Result<u32, StoreError>;

    /// Removes up to `max` messages and subscriptions with `expires_ms <= now_ms` (and
    /// pushed markers of such messages); returns how many entries were removed (so a
    /// sweeper can loop while it is busy). A backend may remove fewer than `max` per call
    /// to keep its write transactions short.
    async fn sweep_expired(&self, now_ms: i64, max: u32) -> Result<u64, StoreError>;

    /// Adds or replaces the subscription of (account_index, device_id).
    /// Returns `true` when it was added, `false` when it replaced one.
    async fn upsert_subscription(&self, sub: Subscription) -> Result<bool, StoreError>;

    /// Removes a subscription (and its pending jobs) if its `expires_ms <= expiring_by`
    /// (`i64::MAX`: whatever its expiry); returns whether it removed one. The check and
    /// the removal are one atomic step: a subscription renewed meanwhile (which moved its
    /// expiry later) is left alone with its jobs, so a caller can remove "the registration
    /// as of a time" without racing a concurrent Subscribe.
    async fn remove_subscription(
        &self,
        account_index: &AccountIndex,
        device_id: &DeviceId,
        expiring_by: i64,
    ) -> Result<bool, StoreError>;

    /// Looks up a subscription (expired or not: the caller checks `expires_ms`).
    async fn get_subscription(
        &self,
        account_index: &AccountIndex,
        device_id: &DeviceId,
    ) -> Result<Option<Subscription>, StoreError>;

    /// Loads what delivering each of `jobs` needs, in order: what
    /// [`Store::get_subscription`] gives for its device and [`Store::get_message`] for its
    /// message. The notifier asks once per claimed batch, so that a backend answers all of
    /// it from one read (or one round trip).
    async fn push_inputs(&self, jobs: &[PushJob]) -> Result<Vec<PushInputs>, StoreError>;

    /// Claims up to `max` jobs that are due (`not_before <= now`) and not leased by a
    /// live lease, leasing them to `node` until `now_ms + lease_ms`.
    async fn claim_jobs(
        &self,
        node: &str,
        now_ms: i64,
        lease_ms: i64,
        max: u32,
    ) -> Result<Vec<PushJob>, StoreError>;

    /// Records how a claimed job ended, if `job.lease` is still the job's current claim:
    /// the same owner and lease end, also when that lease has run out meanwhile but
    /// nobody claimed the job again. Otherwise (the job is gone, or another node, or
    /// this one, claimed it again after the lease ran out) the job is left alone for the
    /// current holder and this is no error, only a debug log; `Delivered` still
    /// remembers (device, hash) and `TokenDead` still removes the subscription (with its
    /// pending jobs), since both are facts about the device, not about the claim.
    async fn finish_job(&self, job: &PushJob, outcome: JobOutcome) -> Result<(), StoreError>;

    /// Outbox depth and age of the oldest job.
    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError>;

    /// Whether the store can take a write right now (for `/readyz`).
    async fn check_writable(&self) -> Result<(), StoreError>;

    /// Finishes queued writes and flushes everything to disk. Later calls fail with
    /// [`StoreError::Closed`], except `close` itself, which then does nothing.
    async fn close(&self) -> Result<(), StoreError>;

    /// Messages committed by any node sharing this store, as (account, namespace), for
    /// backends that several relay nodes share. The server wakes its long-polls and its
    /// push notifier on them. Receivers that fall behind miss some (only early wake-ups
    /// are lost). `None` (the default): only this node writes, and it wakes its own.
    fn arrivals(&self) -> Option<tokio::sync::broadcast::Receiver<(Account, u32)>> {
        None
    }
}
