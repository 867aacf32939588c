//! The gateway's keys: one X25519 HPKE key per epoch, derived from the relay secret, so
//! every node sharing `relay.key` and `[ohttp]` serves and accepts the same keys and a
//! restart changes nothing.
//!
//! With `R = rotation_s`, the epoch at Unix time `t` (seconds) is `e = floor(t / R)`; its key
//! id is `(key_id + e) mod 256` and its key pair is HPKE `DeriveKeyPair` (RFC 9180 §7.1.3,
//! DHKEM(X25519, HKDF-SHA256)) of
//!
//! ```text
//! ikm = HKDF-SHA256(ikm = ohttp_root, salt = "tidings/ohttp/v1",
//!                   info = "ohttp/x25519" ‖ key_id(1) ‖ be64(e), L = 32)
//! ```
//!
//! where `ohttp_root` is the relay key derived with info `relay/ohttp` ([`RelayKeys`]).
//! Epoch `e` is current from `e·R` to `(e+1)·R`; its key is also accepted for `grace_s`
//! after that (the "previous" key), answered with the current key configuration inside
//! the encapsulated response so a client moves on before the grace ends.
//!
//! [`RelayKeys`]: crate::keys::RelayKeys

use std::{
    fmt,
    sync::{Arc, Mutex, PoisonError},
};

use hkdf::Hkdf;
use ohttp::{
    KeyConfig, Server, SymmetricSuite,
    hpke::{Aead, Kdf, Kem},
};
use sha2::Sha256;

use crate::{clock::Clock, config::Ohttp};

/// The one KEM the gateway offers.
pub const KEM: Kem = Kem::X25519Sha256;
/// The symmetric suites, in the gateway's order of preference (a client takes the first
/// it supports): ChaCha20-Poly1305 (fast without AES instructions, as on many phones),
/// then AES-128-GCM.
pub const SUITES: [SymmetricSuite; 2] = [
    SymmetricSuite::new(Kdf::HkdfSha256, Aead::ChaCha20Poly1305),
    SymmetricSuite::new(Kdf::HkdfSha256, Aead::Aes128Gcm),
];
/// HKDF salt of every epoch key.
pub const SALT: &[u8] = b"tidings/ohttp/v1";
/// HKDF info prefix of every epoch key (followed by the key id and the epoch).
pub const INFO_PREFIX: &[u8] = b"ohttp/x25519";

/// Why an epoch's key could not be made (the HPKE backend refused; not expected for X25519).
#[derive(Debug, thiserror::Error)]
#[error("OHTTP key of epoch {epoch}: {reason}")]
pub struct KeyError {
    /// The epoch.
    pub epoch: u64,
    /// What the HPKE backend said.
    pub reason: String,
}

/// When keys rotate and which ones are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Key id of epoch 0.
    pub key_id: u8,
    /// Length of an epoch, seconds (at least 1).
    pub rotation_s: u64,
    /// How long a previous epoch's key is still accepted, seconds.
    pub grace_s: u64,
}

impl Schedule {
    /// The schedule `[ohttp]` configures.
    pub fn from_config(config: &Ohttp) -> Self {
        Self {
            key_id: config.key_id,
            rotation_s: config.rotation_s.max(1),
            grace_s: config.grace_s,
        }
    }

    /// The epoch at `now_s` (a clock before 1970 is epoch 0).
    pub fn epoch_at(&self, now_s: i64) -> u64 {
        u64::try_from(now_s).unwrap_or(0) / self.rotation_s
    }

    /// The key id of `epoch`.
    pub fn key_id_of(&self, epoch: u64) -> u8 {
        // The remainder of a division by 256 fits a byte.
        self.key_id.wrapping_add((epoch % 256) as u8)
    }

    /// The epochs whose keys are accepted at `now_s`: the current one, and the previous one
    /// while its grace lasts.
    pub fn accepted_at(&self, now_s: i64) -> (u64, Option<u64>) {
        let current = self.epoch_at(now_s);
        let since_rotation = u64::try_from(now_s).unwrap_or(0) % self.rotation_s;
        let previous = (current > 0 && since_rotation < self.grace_s).then(|| current - 1);
        (current, previous)
    }

    /// Seconds until the current key is replaced.
    pub fn next_rotation_in(&self, now_s: i64) -> u64 {
        self.rotation_s - u64::try_from(now_s).unwrap_or(0) % self.rotation_s
    }
}

/// One epoch's key: its HPKE server and its published key configuration.
pub struct EpochKey {
    /// The epoch.
    pub epoch: u64,
    /// Its key id.
    pub key_id: u8,
    server: Server,
    /// Its key configuration (RFC 9458 §3), without the length prefix of a list.
    encoded: Vec<u8>,
}

impl fmt::Debug for EpochKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The private key stays out; the configuration is public.
        f.debug_struct("EpochKey")
            .field("epoch", &self.epoch)
            .field("key_id", &self.key_id)
            .field("config", &hex::encode(&self.encoded))
            .finish()
    }
}

impl EpochKey {
    /// Derives the key of `epoch` from the OHTTP root (see the module docs).
    pub fn derive(root: &[u8; 32], schedule: &Schedule, epoch: u64) -> Result<Self, KeyError> {
        let key_id = schedule.key_id_of(epoch);
        let mut info = INFO_PREFIX.to_vec();
        info.push(key_id);
        info.extend_from_slice(&epoch.to_be_bytes());
        let mut ikm = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's 255 × 32 byte output limit.
        Hkdf::<Sha256>::new(Some(SALT), root)
            .expand(&info, &mut ikm)
            .expect("HKDF output length within limit");
        let fail = |e: ohttp::Error| KeyError {
            epoch,
            reason: e.to_string(),
        };
        let config = KeyConfig::derive(key_id, KEM, SUITES.to_vec(), &ikm).map_err(fail)?;
        let encoded = config.encode().map_err(fail)?;
        let server = Server::new(config).map_err(fail)?;
        Ok(Self {
            epoch,
            key_id,
            server,
            encoded,
        })
    }

    /// The HPKE server that decapsulates requests to this key.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// This key's configuration (one entry of `application/ohttp-keys`, unprefixed).
    pub fn encoded_config(&self) -> &[u8] {
        &self.encoded
    }

    /// `application/ohttp-keys` (RFC 9540 §3) listing this key alone.
    pub fn key_config_list(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded.len() + 2);
        // A key configuration with one X25519 key and two suites is 45 bytes.
        let len = u16::try_from(self.encoded.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&self.encoded);
        out
    }
}

/// A key that may decapsulate a request, and whether it is the previous one.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The key.
    pub key: Arc<EpochKey>,
    /// `true` for the previous epoch's key (still within its grace).
    pub previous: bool,
}

/// The keys of the epochs around now, derived on first use and kept.
pub struct KeyRing {
    root: [u8; 32],
    schedule: Schedule,
    clock: Arc<dyn Clock>,
    /// The most recently derived keys, newest last; a few at most.
    cache: Mutex<Vec<Arc<EpochKey>>>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("schedule", &self.schedule)
            .finish_non_exhaustive()
    }
}

/// How many derived keys the ring keeps (current, previous, and one spare for a clock
/// that moved back).
const CACHED: usize = 3;

impl KeyRing {
    /// The ring of `schedule`, reading time from `clock`; checks that a key can be made.
    pub fn new(root: &[u8; 32], schedule: Schedule, clock: Arc<dyn Clock>) -> Result<Self, KeyError> {
        let ring = Self {
            root: *root,
            schedule,
            clock,
            cache: Mutex::new(Vec::with_capacity(CACHED)),
        };
        ring.current()?;
        Ok(ring)
    }

    /// The schedule.
    pub fn schedule(&self) -> Schedule {
        self.schedule
    }

    /// The current epoch's key.
    pub fn current(&self) -> Result<Arc<EpochKey>, KeyError> {
        self.key(self.schedule.epoch_at(self.clock.now_s()))
    }

    /// Seconds until the current key is replaced (what the key configuration may be cached for).
    pub fn next_rotation_in(&self) -> u64 {
        self.schedule.next_rotation_in(self.clock.now_s())
    }

    /// The accepted key whose id is `key_id`, if any.
    pub fn for_key_id(&self, key_id: u8) -> Result<Option<Accepted>, KeyError> {
        let (current, previous) = self.schedule.accepted_at(self.clock.now_s());
        if self.schedule.key_id_of(current) == key_id {
            return Ok(Some(Accepted {
                key: self.key(current)?,
                previous: false,
            }));
        }
        match previous {
            Some(epoch) if self.schedule.key_id_of(epoch) == key_id => Ok(Some(Accepted {
                key: self.key(epoch)?,
                previous: true,
            })),
            _ => Ok(None),
        }
    }

    fn key(&self, epoch: u64) -> Result<Arc<EpochKey>, KeyError> {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(key) = cache.iter().find(|k| k.epoch == epoch) {
            return Ok(Arc::clone(key));
        }
        // Derived under the lock: it takes microseconds, once per epoch.
        let key = Arc::new(EpochKey::derive(&self.root, &self.schedule, epoch)?);
        if cache.len() == CACHED {
            cache.remove(0);
        }
        cache.push(Arc::clone(&key));
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn schedule() -> Schedule {
        Schedule {
            key_id: 250,
            rotation_s: 100,
            grace_s: 10,
        }
    }

    /// docs/test-vectors.json "ohttp_keys", which relay/tests/python/check_ohttp_vectors.py
    /// computes from first principles: the relay derives the same keys.
    #[test]
    fn the_published_vectors_hold() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../../docs/test-vectors.json")).unwrap();
        let vectors = doc["ohttp_keys"]["vectors"].as_array().unwrap();
        assert!(!vectors.is_empty());
        for v in vectors {
            let secret: [u8; 32] = hex::decode(v["relay_secret"].as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap();
            let schedule = Schedule {
                key_id: u8::try_from(v["key_id"].as_u64().unwrap()).unwrap(),
                rotation_s: v["rotation_s"].as_u64().unwrap(),
                grace_s: 0,
            };
            let keys = crate::keys::RelayKeys::from_secret(&secret);
            assert_eq!(hex::encode(keys.ohttp_root()), v["ohttp_root"].as_str().unwrap());
            let epoch = schedule.epoch_at(v["now_s"].as_i64().unwrap());
            assert_eq!(epoch, v["epoch"].as_u64().unwrap());
            let key = EpochKey::derive(keys.ohttp_root(), &schedule, epoch).unwrap();
            assert_eq!(u64::from(key.key_id), v["epoch_key_id"].as_u64().unwrap());
            assert_eq!(
                hex::encode(key.key_config_list()),
                v["key_config_list"].as_str().unwrap()
            );
        }
    }

    #[test]
    fn epochs_ids_and_grace_follow_the_clock() {
        let s = schedule();
        assert_eq!(s.epoch_at(1_234), 12);
        assert_eq!(s.key_id_of(12), 6, "250 + 12 wraps");
        assert_eq!(s.accepted_at(1_205), (12, Some(11)));
        assert_eq!(s.accepted_at(1_209), (12, Some(11)));
        assert_eq!(s.accepted_at(1_210), (12, None));
        assert_eq!(s.accepted_at(5), (0, None), "nothing before epoch 0");
        assert_eq!(s.next_rotation_in(1_234), 66);
        let no_grace = Schedule { grace_s: 0, ..s };
        assert_eq!(no_grace.accepted_at(1_200), (12, None));
    }

    #[test]
    fn keys_are_deterministic_per_secret_and_epoch() {
        let s = schedule();
        let a = EpochKey::derive(&[1; 32], &s, 7).unwrap();
        let b = EpochKey::derive(&[1; 32], &s, 7).unwrap();
        let c = EpochKey::derive(&[1; 32], &s, 8).unwrap();
        let d = EpochKey::derive(&[2; 32], &s, 7).unwrap();
        assert_eq!(a.encoded_config(), b.encoded_config());
        assert_ne!(a.encoded_config()[3..35], c.encoded_config()[3..35]);
        assert_ne!(a.encoded_config()[3..35], d.encoded_config()[3..35]);
        // key_id(1) kem(2) pk(32) suites-length(2) 2 × (kdf, aead)
        let config = a.encoded_config();
        assert_eq!(config.len(), 1 + 2 + 32 + 2 + 8);
        assert_eq!(config[0], s.key_id_of(7));
        assert_eq!(&config[1..3], &[0x00, 0x20], "DHKEM(X25519, HKDF-SHA256)");
        assert_eq!(
            &config[35..],
            &[0, 8, 0, 1, 0, 3, 0, 1, 0, 1],
            "HKDF-SHA256 with ChaCha20-Poly1305, then AES-128-GCM"
        );
        let list = a.key_config_list();
        assert_eq!(&list[..2], &[0, 45]);
        assert!(format!("{a:?}").contains("key_id"));
    }

    #[test]
    fn the_ring_accepts_the_previous_key_only_within_its_grace() {
        let clock = ManualClock::new(1_000_000); // epoch 10, second 0
        let ring = KeyRing::new(&[3; 32], schedule(), Arc::new(clock.clone())).unwrap();
        let s = schedule();
        let current = ring.current().unwrap();
        assert_eq!(current.epoch, 10);
        let prev_id = s.key_id_of(9);
        assert!(ring.for_key_id(prev_id).unwrap().unwrap().previous);
        assert!(!ring.for_key_id(current.key_id).unwrap().unwrap().previous);
        assert!(
            ring.for_key_id(s.key_id_of(11)).unwrap().is_none(),
            "no key from the future"
        );
        clock.advance_ms(10_000);
        assert!(ring.for_key_id(prev_id).unwrap().is_none(), "grace over");
        clock.advance_ms(90_000);
        assert_eq!(ring.current().unwrap().epoch, 11);
        let old = ring.for_key_id(current.key_id).unwrap().unwrap();
        assert!(old.previous);
        assert_eq!(old.key.encoded_config(), current.encoded_config());
    }
}
