//! The encrypted push payload that Apple and Google carry as an opaque string.
//!
//! ```text
//! framed = be32(len(plaintext)) ‖ plaintext ‖ zero bytes up to a multiple of 256
//! enc    = base64( nonce(24) ‖ XChaCha20-Poly1305(push_key, nonce, framed, aad = "tidings/push/v1") )
//! ```
//!
//! The padding hides the message size from the providers to within 256 bytes.

use base64::{Engine, engine::general_purpose::STANDARD};
use prost::Message;

use crate::{aead, random_bytes, v1::PushNotification};

/// Associated data of every push payload.
pub const PUSH_AAD: &[u8] = b"tidings/push/v1";
/// Framed plaintexts are padded to a multiple of this.
pub const PAD_BLOCK: usize = 256;

/// Why a push payload could not be decrypted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PushError {
    /// `enc` is not standard base64.
    #[error("push payload is not valid base64")]
    Base64,
    /// Too short to hold a nonce, a length and a tag.
    #[error("push payload is too short")]
    TooShort,
    /// Not encrypted under this push key, or tampered with.
    #[error("push payload does not decrypt with this push key")]
    Decrypt,
    /// The frame's length prefix points past its end.
    #[error("push payload frame is malformed")]
    Frame,
    /// The plaintext is not a `PushNotification`.
    #[error("push payload is not a valid PushNotification")]
    Decode,
}

/// Length of the framed, padded plaintext for a protobuf of `plain_len` bytes.
pub fn framed_len(plain_len: usize) -> usize {
    (4 + plain_len).div_ceil(PAD_BLOCK) * PAD_BLOCK
}

/// Length of the base64 `enc` string for a protobuf of `plain_len` bytes.
pub fn enc_len(plain_len: usize) -> usize {
    (24 + framed_len(plain_len) + 16).div_ceil(3) * 4
}

/// Frames, pads, encrypts and base64-encodes a notification.
pub fn encrypt_push(push_key: &[u8; 32], n: &PushNotification) -> String {
    let plain = n.encode_to_vec();
    let mut framed = Vec::with_capacity(framed_len(plain.len()));
    // A notification is bounded by the provider limits (a few KiB), so it fits in u32.
    let len = u32::try_from(plain.len()).unwrap_or(u32::MAX);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(&plain);
    framed.resize(framed_len(plain.len()), 0);
    let nonce = random_bytes::<24>();
    let mut out = nonce.to_vec();
    out.extend_from_slice(&aead::encrypt(push_key, &nonce, &framed, PUSH_AAD));
    STANDARD.encode(out)
}

/// Decrypts an `enc` string. Needs no network: the iOS Notification Service Extension
/// and Android's messaging service call it with the device's push key.
pub fn decrypt_push(push_key: &[u8; 32], enc: &str) -> Result<PushNotification, PushError> {
    let raw = STANDARD.decode(enc.trim()).map_err(|_| PushError::Base64)?;
    if raw.len() < 24 + 4 + 16 {
        return Err(PushError::TooShort);
    }
    let (nonce, ciphertext) = raw.split_at(24);
    let nonce: [u8; 24] = nonce.try_into().map_err(|_| PushError::TooShort)?;
    let framed = aead::decrypt(push_key, &nonce, ciphertext, PUSH_AAD).ok_or(PushError::Decrypt)?;
    let (len, rest) = framed.split_at(4);
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let plain = rest.get(..len).ok_or(PushError::Frame)?;
    PushNotification::decode(plain).map_err(|_| PushError::Decode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn note(data: Vec<u8>) -> PushNotification {
        PushNotification {
            account: vec![1; 32],
            namespace: 3,
            hash: vec![2; 32],
            seq: 99,
            created_ms: 1_700_000_000_000,
            expires_ms: 1_700_000_100_000,
            data_len: data.len() as u32,
            data,
            data_omitted: false,
        }
    }

    proptest! {
        #[test]
        fn round_trip_and_padding(data in proptest::collection::vec(any::<u8>(), 0..3000), key in any::<[u8; 32]>()) {
            let n = note(data);
            let enc = encrypt_push(&key, &n);
            prop_assert_eq!(enc.len(), enc_len(n.encoded_len()));
            let raw = STANDARD.decode(&enc).unwrap();
            prop_assert_eq!((raw.len() - 24 - 16) % PAD_BLOCK, 0);
            prop_assert_eq!(decrypt_push(&key, &enc).unwrap(), n);
        }

        #[test]
        fn garbage_never_panics(s in ".{0,400}", key in any::<[u8; 32]>()) {
            let _ = decrypt_push(&key, &s);
        }
    }

    #[test]
    fn wrong_key_is_rejected() {
        let enc = encrypt_push(&[1; 32], &note(vec![1, 2, 3]));
        assert_eq!(decrypt_push(&[2; 32], &enc), Err(PushError::Decrypt));
    }

    #[test]
    fn similar_sizes_look_alike() {
        let a = encrypt_push(&[1; 32], &note(vec![0; 10]));
        let b = encrypt_push(&[1; 32], &note(vec![0; 150]));
        assert_eq!(a.len(), b.len());
    }
}
