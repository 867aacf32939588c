//! The signed byte strings of DESIGN.md's "Signatures" table, and Ed25519 over them.
//!
//! Every string starts with an ASCII domain label so a signature for one request can
//! never be replayed as another. Integers are fixed-width big-endian.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::hash::h;

/// Domain label of Store into an owner-only namespace.
pub const STORE: &[u8] = b"tidings/store/v1";
/// Domain label of Retrieve.
pub const RETRIEVE: &[u8] = b"tidings/retrieve/v1";
/// Domain label of Delete.
pub const DELETE: &[u8] = b"tidings/delete/v1";
/// Domain label of Subscribe.
pub const SUBSCRIBE: &[u8] = b"tidings/subscribe/v1";
/// Domain label of Unsubscribe.
pub const UNSUBSCRIBE: &[u8] = b"tidings/unsubscribe/v1";

/// Why a signature was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// The account bytes are not a valid Ed25519 public key.
    #[error("account is not a valid Ed25519 public key")]
    BadAccountKey,
    /// The signature is not 64 bytes.
    #[error("signature must be 64 bytes")]
    BadSignatureLength,
    /// The signature does not verify over the signed bytes.
    #[error("signature does not verify")]
    Mismatch,
}

/// `"tidings/store/v1" ‖ account ‖ be32(namespace) ‖ be64(ts) ‖ be64(ttl_ms) ‖ H(data)`.
pub fn store_bytes(account: &[u8; 32], namespace: u32, ts: i64, ttl_ms: i64, data: &[u8]) -> Vec<u8> {
    let mut m = labelled(STORE, account);
    m.extend_from_slice(&namespace.to_be_bytes());
    m.extend_from_slice(&ts.to_be_bytes());
    m.extend_from_slice(&ttl_ms.to_be_bytes());
    m.extend_from_slice(&h(&[data]));
    m
}

/// `"tidings/retrieve/v1" ‖ account ‖ be32(namespace) ‖ be64(ts)`.
pub fn retrieve_bytes(account: &[u8; 32], namespace: u32, ts: i64) -> Vec<u8> {
    let mut m = labelled(RETRIEVE, account);
    m.extend_from_slice(&namespace.to_be_bytes());
    m.extend_from_slice(&ts.to_be_bytes());
    m
}

/// `"tidings/delete/v1" ‖ account ‖ be32(namespace) ‖ be64(ts) ‖ hash₁ ‖ … ‖ hashₙ`.
pub fn delete_bytes(account: &[u8; 32], namespace: u32, ts: i64, hashes: &[impl AsRef<[u8]>]) -> Vec<u8> {
    let mut m = labelled(DELETE, account);
    m.extend_from_slice(&namespace.to_be_bytes());
    m.extend_from_slice(&ts.to_be_bytes());
    for hash in hashes {
        m.extend_from_slice(hash.as_ref());
    }
    m
}

/// `"tidings/subscribe/v1" ‖ account ‖ be64(ts) ‖ u8(want_data) ‖ be32(n) ‖ be32(ns₁) ‖ … ‖ H(sealed)`.
pub fn subscribe_bytes(
    account: &[u8; 32],
    ts: i64,
    want_data: bool,
    namespaces: &[u32],
    sealed: &[u8],
) -> Vec<u8> {
    let mut m = labelled(SUBSCRIBE, account);
    m.extend_from_slice(&ts.to_be_bytes());
    m.push(u8::from(want_data));
    // Namespace lists are bounded by the 32 768 namespaces, far below u32::MAX.
    let n = u32::try_from(namespaces.len()).unwrap_or(u32::MAX);
    m.extend_from_slice(&n.to_be_bytes());
    for ns in namespaces {
        m.extend_from_slice(&ns.to_be_bytes());
    }
    m.extend_from_slice(&h(&[sealed]));
    m
}

/// `"tidings/unsubscribe/v1" ‖ account ‖ device_id(16) ‖ be64(ts)`.
pub fn unsubscribe_bytes(account: &[u8; 32], device_id: &[u8; 16], ts: i64) -> Vec<u8> {
    let mut m = labelled(UNSUBSCRIBE, account);
    m.extend_from_slice(device_id);
    m.extend_from_slice(&ts.to_be_bytes());
    m
}

/// Signs `message` with the account key.
pub fn sign(key: &SigningKey, message: &[u8]) -> [u8; 64] {
    key.sign(message).to_bytes()
}

/// Verifies an account's signature over `message` (strict: no malleable encodings).
pub fn verify(account: &[u8; 32], message: &[u8], signature: &[u8]) -> Result<(), VerifyError> {
    let key = VerifyingKey::from_bytes(account).map_err(|_| VerifyError::BadAccountKey)?;
    let sig: [u8; 64] = signature
        .try_into()
        .map_err(|_| VerifyError::BadSignatureLength)?;
    key.verify_strict(message, &Signature::from_bytes(&sig))
        .map_err(|_| VerifyError::Mismatch)
}

fn labelled(label: &[u8], account: &[u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(label.len() + 32 + 64);
    m.extend_from_slice(label);
    m.extend_from_slice(account);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[42u8; 32])
    }

    #[test]
    fn store_layout_is_exact() {
        let account = [1u8; 32];
        let m = store_bytes(&account, 10, 0x0102, 5_000, b"x");
        assert_eq!(&m[..16], b"tidings/store/v1");
        assert_eq!(&m[16..48], &account);
        assert_eq!(&m[48..52], &[0, 0, 0, 10]);
        assert_eq!(&m[52..60], &[0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(&m[60..68], &5_000i64.to_be_bytes());
        assert_eq!(&m[68..], &h(&[b"x"]));
    }

    #[test]
    fn subscribe_layout_is_exact() {
        let account = [2u8; 32];
        let m = subscribe_bytes(&account, 7, true, &[0, 12], b"sealed");
        let label = b"tidings/subscribe/v1";
        let mut want = label.to_vec();
        want.extend_from_slice(&account);
        want.extend_from_slice(&7i64.to_be_bytes());
        want.push(1);
        want.extend_from_slice(&[0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 12]);
        want.extend_from_slice(&h(&[b"sealed"]));
        assert_eq!(m, want);
    }

    #[test]
    fn a_signature_verifies_only_over_its_own_bytes() {
        let k = key();
        let account = k.verifying_key().to_bytes();
        let msg = retrieve_bytes(&account, 0, 100);
        let sig = sign(&k, &msg);
        assert_eq!(verify(&account, &msg, &sig), Ok(()));
        let other = retrieve_bytes(&account, 0, 101);
        assert_eq!(verify(&account, &other, &sig), Err(VerifyError::Mismatch));
        assert_eq!(
            verify(&account, &msg, &sig[..63]),
            Err(VerifyError::BadSignatureLength)
        );
    }

    #[test]
    fn labels_separate_requests() {
        let account = [3u8; 32];
        assert_ne!(
            retrieve_bytes(&account, 0, 1)[..19],
            delete_bytes(&account, 0, 1, &[[0u8; 32]])[..19]
        );
        assert_eq!(unsubscribe_bytes(&account, &[9; 16], 1).len(), 22 + 32 + 16 + 8);
    }
}
