//! What the store does so that a dump of it links no account to a subscription.
//!
//! Messages sit under their clear account (Retrieve needs it) and subscriptions under the
//! keyed `account_index`. Everything that relates the two is hidden with keys derived from
//! the relay secret, which never enters the database:
//!
//! - A push job keeps in clear only what scheduling needs (`account_index`, `device_id`,
//!   attempts and times); which message it delivers (account, namespace, hash, seq,
//!   created, expires) is sealed: `version(1) ‖ nonce(24) ‖ XChaCha20-Poly1305(at_rest_key,
//!   nonce, account ‖ be32(namespace) ‖ hash ‖ be64(seq) ‖ be64(created_ms) ‖
//!   be64(expires_ms), aad = "tidings/push-job/v1" ‖ account_index)`. The associated data
//!   binds the reference to the subscriptions of its account.
//! - A pushed marker (a job was made for (device, message)) is keyed by
//!   `SHA-256(tag ‖ device_id)` with `tag = BLAKE2b-256-MAC(marker_key, account_index ‖
//!   hash)`. Without the key nobody can compute a marker from an account index and a
//!   message hash, so markers join nothing. The tag is not secret itself and lets a
//!   backend derive the markers of every device of a fan-out (PostgreSQL: `sha256()`).
//! - The embedded store's write-ahead log records whole batches, in which a Store names
//!   both the account and its index; each record's payload is sealed too
//!   (`version ‖ nonce ‖ XChaCha20-Poly1305(at_rest_key, nonce, payload, aad =
//!   "tidings/wal/v1" ‖ be64(batch))`).
//!
//! What a dump still shows is timing: a pending job's enqueue time is close to its
//! message's store time. Jobs live for seconds unless a provider is down.

use blake2::{
    Blake2bMac,
    digest::{FixedOutput, KeyInit, Update, consts::U32},
};
use sha2::{Digest, Sha256};
use tidings_proto::{aead, random_bytes};

use super::{Account, AccountIndex, DeviceId, Hash, StoreError};

const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const JOB_AAD: &[u8] = b"tidings/push-job/v1";
const WAL_AAD: &[u8] = b"tidings/wal/v1";
/// account ‖ namespace ‖ hash ‖ seq ‖ created ‖ expires.
const JOB_PLAIN_LEN: usize = 32 + 4 + 32 + 8 + 8 + 8;

/// The keys a store hides linkage with (see the module docs). Derived from the relay
/// secret by [`crate::keys::RelayKeys::store_keys`].
#[derive(Clone)]
pub struct StoreKeys {
    at_rest: [u8; 32],
    marker: [u8; 32],
}

impl std::fmt::Debug for StoreKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key bytes never reach a log.
        f.debug_struct("StoreKeys").finish_non_exhaustive()
    }
}

/// The message a push job delivers: the part of a job that is sealed at rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobMessage {
    /// The mailbox's owner.
    pub account: Account,
    /// The message's namespace.
    pub namespace: u32,
    /// The message's hash.
    pub hash: Hash,
    /// The message's seq.
    pub seq: u64,
    /// When it was stored.
    pub created_ms: i64,
    /// When it expires.
    pub expires_ms: i64,
}

impl StoreKeys {
    /// Keys from their bytes: the at-rest AEAD key and the pushed-marker MAC key.
    pub fn new(at_rest: [u8; 32], marker: [u8; 32]) -> Self {
        Self { at_rest, marker }
    }

    /// Seals which message a job of `account_index` delivers.
    pub fn seal_job(&self, account_index: &AccountIndex, m: &JobMessage) -> Vec<u8> {
        let mut plain = Vec::with_capacity(JOB_PLAIN_LEN);
        plain.extend_from_slice(m.account.as_slice());
        plain.extend_from_slice(&m.namespace.to_be_bytes());
        plain.extend_from_slice(&m.hash);
        plain.extend_from_slice(&m.seq.to_be_bytes());
        plain.extend_from_slice(&m.created_ms.to_be_bytes());
        plain.extend_from_slice(&m.expires_ms.to_be_bytes());
        seal(
            &self.at_rest,
            &plain,
            &[JOB_AAD, account_index.as_slice()].concat(),
        )
    }

    /// Opens a job's sealed message reference. Fails with [`StoreError::Corrupt`] when it
    /// was not sealed for `account_index` under this relay's key.
    pub fn open_job(&self, account_index: &AccountIndex, blob: &[u8]) -> Result<JobMessage, StoreError> {
        let bad =
            || StoreError::corrupt("a push job's message reference does not open with this relay's key");
        let plain =
            open(&self.at_rest, blob, &[JOB_AAD, account_index.as_slice()].concat()).ok_or_else(bad)?;
        if plain.len() != JOB_PLAIN_LEN {
            return Err(bad());
        }
        let (account, rest) = plain.split_at(32);
        let (namespace, rest) = rest.split_at(4);
        let (hash, rest) = rest.split_at(32);
        let (seq, rest) = rest.split_at(8);
        let (created, expires) = rest.split_at(8);
        // The splits above cut exactly the lengths the conversions expect.
        let arr = |b: &[u8]| -> Result<[u8; 8], StoreError> { b.try_into().map_err(|_| bad()) };
        Ok(JobMessage {
            account: Account(account.try_into().map_err(|_| bad())?),
            namespace: u32::from_be_bytes(namespace.try_into().map_err(|_| bad())?),
            hash: hash.try_into().map_err(|_| bad())?,
            seq: u64::from_be_bytes(arr(seq)?),
            created_ms: i64::from_be_bytes(arr(created)?),
            expires_ms: i64::from_be_bytes(arr(expires)?),
        })
    }

    /// The keyed tag of one message of one account, from which [`marker`] derives the
    /// pushed marker of each device.
    pub fn message_tag(&self, account_index: &AccountIndex, hash: &Hash) -> [u8; 32] {
        // A 32-byte key is within BLAKE2b's 64-byte key limit, so this cannot fail.
        let mut mac = Blake2bMac::<U32>::new_from_slice(&self.marker)
            .expect("a 32-byte key fits BLAKE2b's 64-byte key limit");
        mac.update(account_index.as_slice());
        mac.update(hash);
        mac.finalize_fixed().into()
    }

    /// The pushed marker of (account_index, device_id, hash).
    pub fn pushed_marker(&self, account_index: &AccountIndex, device_id: &DeviceId, hash: &Hash) -> [u8; 32] {
        marker(&self.message_tag(account_index, hash), device_id)
    }

    /// Seals one write-ahead log payload of batch `batch`.
    pub fn seal_wal(&self, batch: u64, payload: &[u8]) -> Vec<u8> {
        seal(&self.at_rest, payload, &[WAL_AAD, &batch.to_be_bytes()].concat())
    }

    /// Opens one write-ahead log payload of batch `batch`.
    pub fn open_wal(&self, batch: u64, blob: &[u8]) -> Result<Vec<u8>, StoreError> {
        open(&self.at_rest, blob, &[WAL_AAD, &batch.to_be_bytes()].concat()).ok_or_else(|| {
            StoreError::corrupt(format!(
                "write-ahead log record of batch {batch} does not open with this relay's key"
            ))
        })
    }
}

/// Fixed keys for tests that open a store without a relay secret.
#[cfg(any(test, feature = "conformance"))]
#[doc(hidden)]
pub fn test_keys() -> StoreKeys {
    StoreKeys::new([0x5a; 32], [0xa5; 32])
}

/// The pushed marker of a device from the message tag: `SHA-256(tag ‖ device_id)`.
pub fn marker(tag: &[u8; 32], device_id: &DeviceId) -> [u8; 32] {
    Sha256::new()
        .chain_update(tag)
        .chain_update(device_id)
        .finalize()
        .into()
}

fn seal(key: &[u8; 32], plain: &[u8], aad: &[u8]) -> Vec<u8> {
    let nonce = random_bytes::<NONCE_LEN>();
    let mut out = Vec::with_capacity(1 + NONCE_LEN + plain.len() + 16);
    out.push(VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&aead::encrypt(key, &nonce, plain, aad));
    out
}

fn open(key: &[u8; 32], blob: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    let (version, rest) = blob.split_first()?;
    if *version != VERSION || rest.len() < NONCE_LEN {
        return None;
    }
    let (nonce, ct) = rest.split_at(NONCE_LEN);
    aead::decrypt(key, nonce.try_into().ok()?, ct, aad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keys() -> StoreKeys {
        StoreKeys::new([1; 32], [2; 32])
    }

    #[test]
    fn a_job_reference_opens_only_for_its_account_index() {
        let m = JobMessage {
            account: crate::store::Account([3; 32]),
            namespace: 12,
            hash: [4; 32],
            seq: 99,
            created_ms: 5,
            expires_ms: 6,
        };
        let blob = keys().seal_job(&AccountIndex([7; 32]), &m);
        assert_eq!(keys().open_job(&AccountIndex([7; 32]), &blob).unwrap(), m);
        assert!(keys().open_job(&AccountIndex([8; 32]), &blob).is_err());
        assert!(
            StoreKeys::new([9; 32], [2; 32])
                .open_job(&AccountIndex([7; 32]), &blob)
                .is_err()
        );
        for needle in [&m.account[..], &m.hash[..]] {
            assert!(!blob.windows(32).any(|w| w == needle), "in clear");
        }
    }

    #[test]
    fn markers_are_keyed_and_per_device() {
        let (ai, hash) = (AccountIndex([1; 32]), [2; 32]);
        let a = keys().pushed_marker(&ai, &[3; 16], &hash);
        assert_eq!(a, marker(&keys().message_tag(&ai, &hash), &[3; 16]));
        assert_ne!(a, keys().pushed_marker(&ai, &[4; 16], &hash));
        assert_ne!(a, keys().pushed_marker(&AccountIndex([9; 32]), &[3; 16], &hash));
        assert_ne!(
            a,
            StoreKeys::new([1; 32], [5; 32]).pushed_marker(&ai, &[3; 16], &hash)
        );
    }

    #[test]
    fn a_wal_record_is_bound_to_its_batch() {
        let blob = keys().seal_wal(4, b"payload");
        assert_eq!(keys().open_wal(4, &blob).unwrap(), b"payload");
        assert!(keys().open_wal(5, &blob).is_err());
    }

    proptest! {
        #[test]
        fn garbage_never_panics(blob in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = keys().open_job(&AccountIndex([0; 32]), &blob);
            let _ = keys().open_wal(0, &blob);
        }
    }
}
