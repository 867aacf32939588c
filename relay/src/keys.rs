//! The relay secret and the keys derived from it.
//!
//! The secret is 32 random bytes in `data_dir/relay.key` (mode 0600), created on first
//! start. Every other key is `HKDF-SHA256(ikm = secret, salt = "tidings/relay/v1",
//! info = LABEL, L = 32)`:
//!
//! | LABEL | key |
//! | --- | --- |
//! | `relay/x25519` | the X25519 secret that clients seal their push registrations to |
//! | `relay/at-rest` | the XChaCha20-Poly1305 key of tokens and push keys at rest |
//! | `relay/account-index` | the key of [`RelayKeys::account_index`] |
//! | `relay/pushed-marker` | the MAC key of the store's pushed markers (see `store::linkage`) |
//! | `relay/ohttp` | the root of the OHTTP gateway's per-epoch keys (see `ohttp::keys`) |
//!
//! `account_index(account)` is keyed BLAKE2b-256 (BLAKE2b's built-in MAC mode, RFC 7693
//! §2.5, key = the account-index key, output 32 bytes) of the 32-byte account key. It
//! is what subscriptions are indexed by, so a database dump without `relay.key` cannot
//! tell which account a device token belongs to.
//!
//! Key bytes are never logged; `Debug` shows only the public key.

use std::{
    fmt,
    fs::{self, File, OpenOptions},
    io::{self, Read, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use blake2::{
    Blake2bMac,
    digest::{FixedOutput, KeyInit, Update, consts::U32},
};
use hkdf::Hkdf;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};

use crate::store::linkage::StoreKeys;

/// HKDF salt of every relay key.
pub const SALT: &[u8] = b"tidings/relay/v1";
/// HKDF info of the X25519 sealing secret.
pub const INFO_X25519: &[u8] = b"relay/x25519";
/// HKDF info of the at-rest encryption key.
pub const INFO_AT_REST: &[u8] = b"relay/at-rest";
/// HKDF info of the account-index key.
pub const INFO_ACCOUNT_INDEX: &[u8] = b"relay/account-index";
/// HKDF info of the pushed-marker key.
pub const INFO_PUSHED_MARKER: &[u8] = b"relay/pushed-marker";
/// HKDF info of the root of the OHTTP gateway's keys.
pub const INFO_OHTTP: &[u8] = b"relay/ohttp";
/// Length of the relay secret file.
pub const SECRET_LEN: usize = 32;

/// Why the relay secret could not be loaded or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading, writing or creating the file failed.
    #[error("relay key {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file does not hold exactly 32 bytes.
    #[error("relay key {path}: must be exactly {SECRET_LEN} bytes (got {len})")]
    Malformed {
        /// The key file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// `keygen` never overwrites a key: losing it loses every push subscription.
    #[error("relay key {path} already exists; refusing to overwrite it")]
    Exists {
        /// The key file.
        path: PathBuf,
    },
}

/// The keys derived from the relay secret.
pub struct RelayKeys {
    x25519: StaticSecret,
    x25519_public: [u8; 32],
    at_rest: [u8; 32],
    account_index_key: [u8; 32],
    pushed_marker_key: [u8; 32],
    ohttp_root: [u8; 32],
}

impl RelayKeys {
    /// Derives every key from the 32-byte relay secret.
    pub fn from_secret(secret: &[u8; SECRET_LEN]) -> Self {
        let x25519 = StaticSecret::from(derive(secret, INFO_X25519));
        let x25519_public = PublicKey::from(&x25519).to_bytes();
        Self {
            x25519,
            x25519_public,
            at_rest: derive(secret, INFO_AT_REST),
            account_index_key: derive(secret, INFO_ACCOUNT_INDEX),
            pushed_marker_key: derive(secret, INFO_PUSHED_MARKER),
            ohttp_root: derive(secret, INFO_OHTTP),
        }
    }

    /// The X25519 secret clients seal their registrations to.
    pub fn x25519_secret(&self) -> &StaticSecret {
        &self.x25519
    }

    /// The X25519 public key `GetRelayInfo` publishes.
    pub fn x25519_public(&self) -> [u8; 32] {
        self.x25519_public
    }

    /// The XChaCha20-Poly1305 key for secrets at rest (tokens, push keys).
    pub fn at_rest_key(&self) -> &[u8; 32] {
        &self.at_rest
    }

    /// The root the OHTTP gateway derives each epoch's HPKE key from.
    pub fn ohttp_root(&self) -> &[u8; 32] {
        &self.ohttp_root
    }

    /// The keys a store hides the account ↔ subscription linkage with.
    pub fn store_keys(&self) -> StoreKeys {
        StoreKeys::new(self.at_rest, self.pushed_marker_key)
    }

    /// Keyed BLAKE2b-256 of `account`: the opaque index of its subscriptions.
    pub fn account_index(&self, account: &[u8; 32]) -> crate::store::AccountIndex {
        // A 32-byte key is within BLAKE2b's 64-byte key limit.
        let mut mac = Blake2bMac::<U32>::new_from_slice(&self.account_index_key)
            .expect("a 32-byte key fits BLAKE2b's 64-byte key limit");
        mac.update(account);
        crate::store::AccountIndex(mac.finalize_fixed().into())
    }

    /// A short, keyed, non-reversible tag of `account` for debug logs (never the key itself).
    pub fn fingerprint(&self, account: &[u8; 32]) -> String {
        hex::encode(&self.account_index(account)[..4])
    }
}

impl fmt::Debug for RelayKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayKeys")
            .field("x25519_public", &hex::encode(self.x25519_public))
            .finish_non_exhaustive()
    }
}

fn derive(secret: &[u8; SECRET_LEN], info: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's 255 × 32 byte output limit.
    Hkdf::<Sha256>::new(Some(SALT), secret)
        .expand(info, &mut out)
        .expect("HKDF output length within limit");
    out
}

/// Loads the secret at `path`, creating it (and its directory) on first start.
pub fn load_or_create(path: &Path) -> Result<RelayKeys, KeyError> {
    match read_secret(path) {
        Ok(secret) => Ok(RelayKeys::from_secret(&secret)),
        Err(KeyError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            let secret = tidings_proto::random_bytes::<SECRET_LEN>();
            if write_new(path, &secret)? {
                tracing::info!(path = %path.display(), "created a new relay key");
                Ok(RelayKeys::from_secret(&secret))
            } else {
                // Someone else created it between our read and write: use theirs.
                Ok(RelayKeys::from_secret(&read_secret(path)?))
            }
        }
        Err(e) => Err(e),
    }
}

/// `keygen`: writes a fresh secret to `path`, never overwriting an existing file.
pub fn generate(path: &Path) -> Result<RelayKeys, KeyError> {
    let secret = tidings_proto::random_bytes::<SECRET_LEN>();
    if write_new(path, &secret)? {
        Ok(RelayKeys::from_secret(&secret))
    } else {
        Err(KeyError::Exists {
            path: path.to_owned(),
        })
    }
}

fn read_secret(path: &Path) -> Result<[u8; SECRET_LEN], KeyError> {
    let io_err = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    if meta.len() != SECRET_LEN as u64 {
        return Err(KeyError::Malformed {
            path: path.to_owned(),
            len: meta.len(),
        });
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(path = %path.display(), "relay key is readable by other users; chmod 600 it");
    }
    let mut secret = [0u8; SECRET_LEN];
    file.read_exact(&mut secret).map_err(io_err)?;
    Ok(secret)
}

/// Writes `secret` to `path` atomically (temp file, fsync, link into place, fsync the
/// directory). Returns `false` when `path` already existed, leaving it untouched.
fn write_new(path: &Path, secret: &[u8; SECRET_LEN]) -> Result<bool, KeyError> {
    let io_err = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(io_err)?;
    let tmp = dir.join(format!(
        ".relay.key.{}.tmp",
        hex::encode(tidings_proto::random_bytes::<8>())
    ));
    let result = write_and_link(&tmp, path, secret);
    // The temp name is unique to this call; it must not outlive it whatever happened.
    let _ = fs::remove_file(&tmp);
    let created = result.map_err(io_err)?;
    File::open(&dir).and_then(|d| d.sync_all()).map_err(io_err)?;
    Ok(created)
}

fn write_and_link(tmp: &Path, path: &Path, secret: &[u8; SECRET_LEN]) -> io::Result<bool> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)?;
    file.write_all(secret)?;
    file.sync_all()?;
    drop(file);
    // A hard link is an atomic "rename unless the target exists": two relays starting
    // on one directory agree on a single key.
    match fs::hard_link(tmp, path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(_) if !path.exists() => fs::rename(tmp, path).map(|()| true),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_are_distinct_and_stable() {
        let a = RelayKeys::from_secret(&[1u8; 32]);
        let b = RelayKeys::from_secret(&[1u8; 32]);
        assert_eq!(a.x25519_public(), b.x25519_public());
        assert_eq!(a.at_rest_key(), b.at_rest_key());
        assert_ne!(a.at_rest_key(), &a.account_index_key);
        assert_ne!(a.pushed_marker_key, a.account_index_key);
        assert_ne!(&a.pushed_marker_key, a.at_rest_key());
        assert_ne!(a.x25519.to_bytes(), *a.at_rest_key());
        let c = RelayKeys::from_secret(&[2u8; 32]);
        assert_ne!(a.x25519_public(), c.x25519_public());
    }

    #[test]
    fn account_index_is_keyed() {
        let a = RelayKeys::from_secret(&[1u8; 32]);
        let c = RelayKeys::from_secret(&[2u8; 32]);
        let account = [9u8; 32];
        assert_eq!(a.account_index(&account), a.account_index(&account));
        assert_ne!(a.account_index(&account), c.account_index(&account));
        assert_ne!(a.account_index(&account), a.account_index(&[8u8; 32]));
        assert_ne!(a.account_index(&account).0, tidings_proto::hash::h(&[&account]));
    }

    #[test]
    fn debug_shows_no_secret() {
        let k = RelayKeys::from_secret(&[1u8; 32]);
        let shown = format!("{k:?}");
        assert!(shown.contains(&hex::encode(k.x25519_public())));
        assert!(!shown.contains(&hex::encode(k.at_rest_key())));
        assert!(!shown.contains(&hex::encode(k.x25519.to_bytes())));
    }

    #[test]
    fn created_once_with_mode_0600_then_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/relay.key");
        let first = load_or_create(&path).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 32);
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let again = load_or_create(&path).unwrap();
        assert_eq!(first.x25519_public(), again.x25519_public());
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file may remain");
    }

    #[test]
    fn keygen_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.key");
        let k = generate(&path).unwrap();
        assert!(matches!(generate(&path), Err(KeyError::Exists { .. })));
        assert_eq!(load_or_create(&path).unwrap().x25519_public(), k.x25519_public());
    }

    #[test]
    fn a_truncated_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.key");
        fs::write(&path, [0u8; 31]).unwrap();
        assert!(matches!(
            load_or_create(&path),
            Err(KeyError::Malformed { len: 31, .. })
        ));
    }
}
