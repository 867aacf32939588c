//! The encrypted, padded envelope of config messages, and the chunking of snapshots
//! larger than one relay message.
//!
//! ```text
//! data      = version(1) ‖ nonce(24) ‖ XChaCha20-Poly1305(config_key, nonce, plaintext, aad)
//! plaintext = be32(len) ‖ protobuf(len bytes) ‖ zero padding
//! aad       = "tidings/config/v1" ‖ account(32) ‖ kind(1)
//! ```
//!
//! The padding makes `data` exactly a power of two of at least 256 bytes (or exactly the
//! relay's message limit, when that is not a power of two), so the relay learns only a
//! size class. Kind 1 carries a `tidings.v1.ConfigDelta`, kind 2 a
//! `tidings.v1.ConfigSnapshotChunk`; the kind is authenticated, not sent, so a reader tries
//! both.

use prost::Message;
use tidings_proto::{aead, v1 as pb};

use super::{Delta, Snapshot};

/// The envelope format version.
pub const VERSION: u8 = 1;
/// XChaCha20-Poly1305 nonce length.
pub const NONCE_LEN: usize = 24;
/// Poly1305 tag length.
pub const TAG_LEN: usize = 16;
/// Bytes of `data` that are not plaintext: version, nonce, tag.
pub const OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;
/// The be32 length in front of the protobuf.
pub const LEN_PREFIX: usize = 4;
/// Domain label at the start of the associated data.
pub const AAD_LABEL: &[u8] = b"tidings/config/v1";
/// Smallest message size.
pub const MIN_MESSAGE_BYTES: usize = 256;
/// The relay's default message limit (64 KiB).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 65_536;
/// Most chunks one snapshot may have (4 GiB at 64 KiB a chunk); more is refused on read.
pub const MAX_SNAPSHOT_CHUNKS: u32 = 65_536;
/// Upper bound of a ConfigSnapshotChunk's bytes besides `data`: tags, lengths, id, index, count.
const CHUNK_FRAMING: usize = 2 + 16 + 6 + 6 + 5;

/// What a config message carries; part of the associated data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A `tidings.v1.ConfigDelta`.
    Delta = 1,
    /// A `tidings.v1.ConfigSnapshotChunk`.
    SnapshotChunk = 2,
}

/// Why a config message could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// The payload does not fit one message of the relay's size limit.
    #[error("a {len}-byte payload does not fit a {max}-byte message")]
    TooLarge {
        /// Payload length.
        len: usize,
        /// Message size limit.
        max: usize,
    },
    /// Not a version this code reads.
    #[error("unknown config envelope version {0}")]
    UnknownVersion(u8),
    /// Shorter than version, nonce and tag.
    #[error("config message too short ({0} bytes)")]
    TooShort(usize),
    /// Authentication failed: another key or account, or tampered bytes.
    #[error("config message does not authenticate")]
    Rejected,
    /// The length prefix points past the plaintext.
    #[error("config message length prefix out of range")]
    BadLength,
    /// The payload is not the protobuf its kind says.
    #[error("config message payload does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    /// A snapshot chunk breaks the chunking rules.
    #[error("bad snapshot chunk: {0}")]
    BadChunk(&'static str),
}

/// The message size that carries a `payload_len`-byte payload: the smallest power of two
/// ≥ 256 that fits, capped at `max_message`. `None` when it does not fit.
pub fn message_size(payload_len: usize, max_message: usize) -> Option<usize> {
    let needed = OVERHEAD + LEN_PREFIX + payload_len;
    (needed <= max_message).then(|| needed.next_power_of_two().max(MIN_MESSAGE_BYTES).min(max_message))
}

/// The largest payload one message of `max_message` bytes carries.
pub fn max_payload(max_message: usize) -> usize {
    max_message.saturating_sub(OVERHEAD + LEN_PREFIX)
}

fn aad(account: &[u8; 32], kind: Kind) -> Vec<u8> {
    let mut a = Vec::with_capacity(AAD_LABEL.len() + 33);
    a.extend_from_slice(AAD_LABEL);
    a.extend_from_slice(account);
    a.push(kind as u8);
    a
}

/// Encrypts and pads one payload.
pub fn seal(
    key: &[u8; 32],
    account: &[u8; 32],
    kind: Kind,
    payload: &[u8],
    max_message: usize,
) -> Result<Vec<u8>, EnvelopeError> {
    let too_large = || EnvelopeError::TooLarge {
        len: payload.len(),
        max: max_message,
    };
    let size = message_size(payload.len(), max_message).ok_or_else(too_large)?;
    let len = u32::try_from(payload.len()).map_err(|_| too_large())?;
    let mut plaintext = Vec::with_capacity(size - OVERHEAD);
    plaintext.extend_from_slice(&len.to_be_bytes());
    plaintext.extend_from_slice(payload);
    plaintext.resize(size - OVERHEAD, 0);
    let nonce: [u8; NONCE_LEN] = tidings_proto::random_bytes();
    let mut out = Vec::with_capacity(size);
    out.push(VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&aead::encrypt(key, &nonce, &plaintext, &aad(account, kind)));
    Ok(out)
}

/// Decrypts one message, trying both kinds, and returns its kind and payload.
pub fn open(key: &[u8; 32], account: &[u8; 32], data: &[u8]) -> Result<(Kind, Vec<u8>), EnvelopeError> {
    if data.len() < OVERHEAD {
        return Err(EnvelopeError::TooShort(data.len()));
    }
    if data[0] != VERSION {
        return Err(EnvelopeError::UnknownVersion(data[0]));
    }
    let nonce: &[u8; NONCE_LEN] = data[1..1 + NONCE_LEN]
        .try_into()
        .map_err(|_| EnvelopeError::TooShort(data.len()))?;
    let ciphertext = &data[1 + NONCE_LEN..];
    let (kind, plaintext) = [Kind::Delta, Kind::SnapshotChunk]
        .into_iter()
        .find_map(|kind| aead::decrypt(key, nonce, ciphertext, &aad(account, kind)).map(|p| (kind, p)))
        .ok_or(EnvelopeError::Rejected)?;
    let (prefix, rest) = plaintext
        .split_at_checked(LEN_PREFIX)
        .ok_or(EnvelopeError::BadLength)?;
    let len = u32::from_be_bytes(prefix.try_into().map_err(|_| EnvelopeError::BadLength)?);
    let len = usize::try_from(len).map_err(|_| EnvelopeError::BadLength)?;
    let payload = rest.get(..len).ok_or(EnvelopeError::BadLength)?;
    Ok((kind, payload.to_vec()))
}

/// Seals a delta, split into as many messages as it needs (each a valid delta).
pub fn seal_delta(
    key: &[u8; 32],
    account: &[u8; 32],
    delta: &Delta,
    max_message: usize,
) -> Result<Vec<Vec<u8>>, EnvelopeError> {
    let payload = delta.encode();
    if payload.len() <= max_payload(max_message) {
        return Ok(vec![seal(key, account, Kind::Delta, &payload, max_message)?]);
    }
    let Some((left, right)) = delta.split() else {
        return Err(EnvelopeError::TooLarge {
            len: payload.len(),
            max: max_message,
        });
    };
    let mut out = seal_delta(key, account, &left, max_message)?;
    out.extend(seal_delta(key, account, &right, max_message)?);
    Ok(out)
}

/// One piece of a snapshot, decrypted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotChunk {
    /// Random id shared by the pieces of one snapshot.
    pub snapshot_id: [u8; 16],
    /// Position, `0..count`.
    pub index: u32,
    /// Number of pieces.
    pub count: u32,
    /// This piece of the encoded `tidings.v1.ConfigSnapshot`.
    pub data: Vec<u8>,
}

impl SnapshotChunk {
    /// Decodes and checks a kind-2 payload.
    pub fn decode(payload: &[u8]) -> Result<SnapshotChunk, EnvelopeError> {
        let p = pb::ConfigSnapshotChunk::decode(payload)?;
        let snapshot_id = p
            .snapshot_id
            .as_slice()
            .try_into()
            .map_err(|_| EnvelopeError::BadChunk("id length"))?;
        if p.count == 0 || p.count > MAX_SNAPSHOT_CHUNKS {
            return Err(EnvelopeError::BadChunk("count"));
        }
        if p.index >= p.count {
            return Err(EnvelopeError::BadChunk("index"));
        }
        Ok(SnapshotChunk {
            snapshot_id,
            index: p.index,
            count: p.count,
            data: p.data,
        })
    }

    fn encode(&self) -> Vec<u8> {
        pb::ConfigSnapshotChunk {
            snapshot_id: self.snapshot_id.to_vec(),
            index: self.index,
            count: self.count,
            data: self.data.clone(),
        }
        .encode_to_vec()
    }
}

/// How many bytes of an encoded snapshot one chunk carries.
pub fn chunk_capacity(max_message: usize) -> usize {
    max_payload(max_message).saturating_sub(CHUNK_FRAMING).max(1)
}

/// Seals a snapshot as chunks under a fresh snapshot id; every chunk but the last fills
/// a whole message.
pub fn seal_snapshot(
    key: &[u8; 32],
    account: &[u8; 32],
    snapshot: &Snapshot,
    max_message: usize,
) -> Result<Vec<Vec<u8>>, EnvelopeError> {
    let bytes = snapshot.encode();
    let capacity = chunk_capacity(max_message);
    let pieces: Vec<&[u8]> = if bytes.is_empty() {
        vec![&[][..]]
    } else {
        bytes.chunks(capacity).collect()
    };
    let count = u32::try_from(pieces.len())
        .ok()
        .filter(|&c| c <= MAX_SNAPSHOT_CHUNKS)
        .ok_or(EnvelopeError::TooLarge {
            len: bytes.len(),
            max: max_message,
        })?;
    let snapshot_id: [u8; 16] = tidings_proto::random_bytes();
    pieces
        .iter()
        .zip(0u32..)
        .map(|(piece, index)| {
            let chunk = SnapshotChunk {
                snapshot_id,
                index,
                count,
                data: piece.to_vec(),
            };
            seal(key, account, Kind::SnapshotChunk, &chunk.encode(), max_message)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: [u8; 32] = [7; 32];
    const ACCOUNT: [u8; 32] = [9; 32];

    #[test]
    fn sizes_are_powers_of_two_from_256_up_to_the_limit() {
        assert_eq!(message_size(0, DEFAULT_MAX_MESSAGE_BYTES), Some(256));
        assert_eq!(message_size(256 - 45, DEFAULT_MAX_MESSAGE_BYTES), Some(256));
        assert_eq!(message_size(256 - 44, DEFAULT_MAX_MESSAGE_BYTES), Some(512));
        assert_eq!(message_size(max_payload(65_536), 65_536), Some(65_536));
        assert_eq!(message_size(max_payload(65_536) + 1, 65_536), None);
        assert_eq!(message_size(40_000, 60_000), Some(60_000));
    }

    #[test]
    fn wrong_key_account_or_kind_is_rejected() {
        let data = seal(&KEY, &ACCOUNT, Kind::Delta, b"hello", 65_536).expect("fits");
        assert!(matches!(
            open(&[8; 32], &ACCOUNT, &data),
            Err(EnvelopeError::Rejected)
        ));
        assert!(matches!(
            open(&KEY, &[0; 32], &data),
            Err(EnvelopeError::Rejected)
        ));
        let mut v2 = data.clone();
        v2[0] = 2;
        assert!(matches!(
            open(&KEY, &ACCOUNT, &v2),
            Err(EnvelopeError::UnknownVersion(2))
        ));
        assert!(matches!(
            open(&KEY, &ACCOUNT, &data[..30]),
            Err(EnvelopeError::TooShort(30))
        ));
    }

    #[test]
    fn a_bad_length_prefix_is_refused() {
        // Hand-build a message whose authenticated prefix claims more than it holds.
        let mut plaintext = 1_000u32.to_be_bytes().to_vec();
        plaintext.resize(256 - OVERHEAD, 0);
        let nonce = [1u8; NONCE_LEN];
        let mut data = vec![VERSION];
        data.extend_from_slice(&nonce);
        data.extend_from_slice(&aead::encrypt(
            &KEY,
            &nonce,
            &plaintext,
            &aad(&ACCOUNT, Kind::Delta),
        ));
        assert!(matches!(
            open(&KEY, &ACCOUNT, &data),
            Err(EnvelopeError::BadLength)
        ));
    }

    #[test]
    fn chunks_are_checked() {
        let bad = pb::ConfigSnapshotChunk {
            snapshot_id: vec![1; 16],
            index: 2,
            count: 2,
            data: vec![],
        };
        assert!(SnapshotChunk::decode(&bad.encode_to_vec()).is_err());
        let bad = pb::ConfigSnapshotChunk {
            snapshot_id: vec![1; 15],
            index: 0,
            count: 1,
            data: vec![],
        };
        assert!(SnapshotChunk::decode(&bad.encode_to_vec()).is_err());
    }

    proptest! {
        #[test]
        fn seal_open_round_trip_and_any_flipped_bit_is_rejected(
            payload in proptest::collection::vec(any::<u8>(), 0..3_000),
            delta in any::<bool>(),
            flip in any::<prop::sample::Index>(),
        ) {
            let kind = if delta { Kind::Delta } else { Kind::SnapshotChunk };
            let data = seal(&KEY, &ACCOUNT, kind, &payload, 65_536).expect("fits");
            prop_assert!(data.len().is_power_of_two() && data.len() >= 256);
            let (k, back) = open(&KEY, &ACCOUNT, &data).expect("opens");
            prop_assert_eq!(k, kind);
            prop_assert_eq!(back, payload);
            let mut tampered = data.clone();
            let i = flip.index(tampered.len());
            tampered[i] ^= 1;
            prop_assert!(open(&KEY, &ACCOUNT, &tampered).is_err());
        }

        #[test]
        fn a_full_chunk_fits_one_message(max in 300usize..70_000) {
            let chunk = SnapshotChunk {
                snapshot_id: [1; 16],
                index: MAX_SNAPSHOT_CHUNKS - 2,
                count: MAX_SNAPSHOT_CHUNKS - 1,
                data: vec![0xff; chunk_capacity(max)],
            };
            prop_assert!(seal(&KEY, &ACCOUNT, Kind::SnapshotChunk, &chunk.encode(), max).is_ok());
        }
    }
}
