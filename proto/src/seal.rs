//! Sealing a `DeviceRegistration` to the relay's X25519 key.
//!
//! ```text
//! k      = HKDF-SHA256(ikm = X25519(eph.secret, relay_pub), salt = eph.pub ‖ relay_pub,
//!                      info = "tidings/seal/v1", L = 32)
//! sealed = eph.pub(32) ‖ nonce(24) ‖ XChaCha20-Poly1305(k, nonce, plaintext, aad = account)
//! ```

use hkdf::Hkdf;
use prost::Message;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};

use crate::{aead, random_bytes, v1::DeviceRegistration};

/// HKDF info of the sealing key.
pub const SEAL_INFO: &[u8] = b"tidings/seal/v1";
/// Bytes a sealed box adds to its plaintext: ephemeral key, nonce and tag.
pub const OVERHEAD: usize = 32 + 24 + 16;

/// Why a sealed box could not be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnsealError {
    /// Shorter than the ephemeral key, nonce and tag.
    #[error("sealed registration is shorter than {OVERHEAD} bytes")]
    TooShort,
    /// The ephemeral key is a low-order point: no secret could be agreed.
    #[error("sealed registration has a degenerate ephemeral key")]
    WeakKey,
    /// Not sealed to this relay, not for this account, or tampered with.
    #[error("sealed registration does not decrypt with this relay's key for this account")]
    Decrypt,
    /// Decrypted, but the plaintext is not a `DeviceRegistration`.
    #[error("sealed registration is not a valid DeviceRegistration")]
    Decode,
}

/// Seals `plaintext` for the holder of `relay_pub`, bound to `account`.
pub fn seal(relay_pub: &[u8; 32], account: &[u8; 32], plaintext: &[u8]) -> Vec<u8> {
    let eph = StaticSecret::from(random_bytes::<32>());
    let eph_pub = PublicKey::from(&eph);
    let shared = eph.diffie_hellman(&PublicKey::from(*relay_pub));
    let k = seal_key(shared.as_bytes(), eph_pub.as_bytes(), relay_pub);
    let nonce = random_bytes::<24>();
    let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
    out.extend_from_slice(eph_pub.as_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&aead::encrypt(&k, &nonce, plaintext, account));
    out
}

/// Opens a box sealed by [`seal`] with the relay's secret key.
pub fn unseal(
    relay_secret: &StaticSecret,
    account: &[u8; 32],
    sealed: &[u8],
) -> Result<Vec<u8>, UnsealError> {
    if sealed.len() < OVERHEAD {
        return Err(UnsealError::TooShort);
    }
    let (eph_pub, rest) = sealed.split_at(32);
    let (nonce, ciphertext) = rest.split_at(24);
    // Both splits are exact-length by the check above.
    let eph_pub: [u8; 32] = eph_pub.try_into().map_err(|_| UnsealError::TooShort)?;
    let nonce: [u8; 24] = nonce.try_into().map_err(|_| UnsealError::TooShort)?;
    let shared = relay_secret.diffie_hellman(&PublicKey::from(eph_pub));
    if !shared.was_contributory() {
        return Err(UnsealError::WeakKey);
    }
    let relay_pub = PublicKey::from(relay_secret);
    let k = seal_key(shared.as_bytes(), &eph_pub, relay_pub.as_bytes());
    aead::decrypt(&k, &nonce, ciphertext, account).ok_or(UnsealError::Decrypt)
}

/// Seals a `DeviceRegistration` (its protobuf encoding).
pub fn seal_registration(relay_pub: &[u8; 32], account: &[u8; 32], reg: &DeviceRegistration) -> Vec<u8> {
    seal(relay_pub, account, &reg.encode_to_vec())
}

/// Opens and decodes a sealed `DeviceRegistration`. Field values are not validated here.
pub fn unseal_registration(
    relay_secret: &StaticSecret,
    account: &[u8; 32],
    sealed: &[u8],
) -> Result<DeviceRegistration, UnsealError> {
    let plain = unseal(relay_secret, account, sealed)?;
    DeviceRegistration::decode(plain.as_slice()).map_err(|_| UnsealError::Decode)
}

fn seal_key(shared: &[u8; 32], eph_pub: &[u8; 32], relay_pub: &[u8; 32]) -> [u8; 32] {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(eph_pub);
    salt[32..].copy_from_slice(relay_pub);
    let mut k = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's 255 × 32 byte output limit.
    Hkdf::<Sha256>::new(Some(&salt), shared)
        .expand(SEAL_INFO, &mut k)
        .expect("HKDF output length within limit");
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn relay() -> (StaticSecret, [u8; 32]) {
        let s = StaticSecret::from([5u8; 32]);
        let p = PublicKey::from(&s).to_bytes();
        (s, p)
    }

    proptest! {
        #[test]
        fn round_trip(plain in proptest::collection::vec(any::<u8>(), 0..512), account in any::<[u8; 32]>()) {
            let (s, p) = relay();
            let sealed = seal(&p, &account, &plain);
            prop_assert_eq!(sealed.len(), plain.len() + OVERHEAD);
            prop_assert_eq!(unseal(&s, &account, &sealed).unwrap(), plain);
        }

        #[test]
        fn any_flipped_bit_is_rejected(plain in proptest::collection::vec(any::<u8>(), 1..64), bit in 0usize..(8 * 100)) {
            let (s, p) = relay();
            let account = [1u8; 32];
            let mut sealed = seal(&p, &account, &plain);
            let bit = bit % (sealed.len() * 8);
            sealed[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(unseal(&s, &account, &sealed).is_err());
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let (s, _) = relay();
            let _ = unseal_registration(&s, &[0u8; 32], &bytes);
        }
    }

    #[test]
    fn another_account_cannot_open_it() {
        let (s, p) = relay();
        let sealed = seal(&p, &[1u8; 32], b"token");
        assert_eq!(unseal(&s, &[2u8; 32], &sealed), Err(UnsealError::Decrypt));
    }

    #[test]
    fn a_zero_ephemeral_key_is_refused() {
        let (s, _) = relay();
        assert_eq!(
            unseal(&s, &[0u8; 32], &[0u8; OVERHEAD]),
            Err(UnsealError::WeakKey)
        );
    }
}
