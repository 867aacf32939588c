//! Sealed messages between accounts (DESIGN.md "Sealed messages between accounts"): only
//! the recipient can open one, and the sender's account and signature travel inside the
//! ciphertext, so the relay sees a mailbox and a size bucket but never who wrote.
//!
//! ```text
//! recipient_x = Montgomery form of the recipient's Ed25519 account key
//! k      = HKDF-SHA256(ikm = X25519(eph, recipient_x), salt = eph_pub ‖ recipient_x,
//!                      info = "tidings/message/v1", L = 32)
//! sealed = 0x01 ‖ eph_pub(32) ‖ nonce(24)
//!          ‖ XChaCha20-Poly1305(k, nonce, inner, aad = 0x01 ‖ recipient_account ‖ eph_pub)
//! inner  = sender_account(32) ‖ signature(64) ‖ be32(len(plaintext)) ‖ plaintext ‖ zeros
//! signature   = Ed25519(sender, "tidings/message/v1/sig" ‖ recipient_account ‖ plaintext)
//! len(sealed) = bucket(173 + len(plaintext))
//! ```

use std::fmt;

use ed25519_dalek::{Signature, VerifyingKey};
use hkdf::Hkdf;
use sha2::Sha256;
use tidings_proto::aead;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::identity::Identity;

/// First byte of every sealed message.
pub const VERSION: u8 = 0x01;
/// HKDF info of the message key.
pub const KEY_INFO: &[u8] = b"tidings/message/v1";
/// Domain label that starts the sender's signed bytes.
pub const SIGNATURE_LABEL: &[u8] = b"tidings/message/v1/sig";
/// Largest plaintext a sealed message carries.
pub const MAX_PLAINTEXT: usize = 256 * 1024;
/// Bytes a sealed message adds to its plaintext before padding: version, ephemeral key,
/// nonce, tag, sender, signature and length.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN + INNER_HEADER_LEN;
/// The smallest bucket: no sealed message is shorter.
pub const MIN_SEALED_LEN: usize = 256;
/// The largest bucket, that of a [`MAX_PLAINTEXT`] plaintext.
pub const MAX_SEALED_LEN: usize = bucket(OVERHEAD + MAX_PLAINTEXT);

/// Buckets are powers of two up to this, then multiples of it (the relay's default
/// message limit, so every bucket up to it fits a default relay exactly).
const LARGE_BUCKET: usize = 64 * 1024;
/// Version, ephemeral key, nonce.
const HEADER_LEN: usize = 1 + 32 + 24;
/// Poly1305 tag.
const TAG_LEN: usize = 16;
/// Sender account, signature, be32 plaintext length.
const INNER_HEADER_LEN: usize = 32 + 64 + 4;

/// Why a message could not be sealed or opened. No variant carries key or message bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealedMessageError {
    /// Empty, shorter than the smallest sealed message, or a first byte other than
    /// [`VERSION`]: an app's own bytes, not a sealed message. Found without cryptography.
    #[error("not a sealed message")]
    NotSealed,
    /// The version byte is right but the length is no padding bucket (truncated or
    /// extended), or above the largest one.
    #[error("a sealed message's length is not one of its padding buckets")]
    BadLength,
    /// The recipient account is not a valid Ed25519 public key of full order, so no
    /// X25519 key derives from it.
    #[error("the recipient is not a valid account key")]
    BadRecipient,
    /// The plaintext is over [`MAX_PLAINTEXT`].
    #[error("a sealed message carries at most {max} bytes, this plaintext has {len}")]
    TooLarge {
        /// Length of the plaintext given.
        len: usize,
        /// [`MAX_PLAINTEXT`].
        max: usize,
    },
    /// The ephemeral key is a low-order point: no secret could be agreed.
    #[error("the sealed message has a degenerate ephemeral key")]
    WeakKey,
    /// Not sealed to this account, or altered on the way.
    #[error("the sealed message does not decrypt for this account")]
    Decrypt,
    /// The declared plaintext length overruns the message or belongs to another bucket.
    #[error("the sealed message's plaintext length does not match its size")]
    BadPlaintextLength,
    /// A padding byte is not zero.
    #[error("the sealed message's padding is not zero")]
    BadPadding,
    /// The sender named inside is not a valid Ed25519 public key of full order.
    #[error("the sealed message's sender is not a valid account key")]
    BadSender,
    /// The sender's signature does not verify over this recipient and plaintext.
    #[error("the sealed message's signature does not verify")]
    BadSignature,
}

/// An opened sealed message: who wrote it and what. `Debug` shows neither.
#[derive(Clone, PartialEq, Eq)]
pub struct OpenedMessage {
    /// The sender's account key, authenticated by its signature.
    pub sender: [u8; 32],
    /// The plaintext, wiped from memory when dropped.
    pub plaintext: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for OpenedMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenedMessage")
            .field("sender", &"<redacted>")
            .field("plaintext_len", &self.plaintext.len())
            .finish()
    }
}

/// Seals `plaintext` from `sender` to the account `recipient_account`, with a fresh
/// ephemeral key and nonce.
pub fn seal_message(
    sender: &Identity,
    recipient_account: &[u8; 32],
    plaintext: &[u8],
) -> Result<Vec<u8>, SealedMessageError> {
    let eph = StaticSecret::from(*Zeroizing::new(tidings_proto::random_bytes::<32>()));
    let nonce = tidings_proto::random_bytes::<24>();
    seal_with(sender, recipient_account, plaintext, &eph, &nonce)
}

/// [`seal_message`] with a given ephemeral secret and nonce: deterministic, for test
/// vectors only. Reusing an ephemeral secret reveals messages to whoever compares them.
#[doc(hidden)]
pub fn seal_with(
    sender: &Identity,
    recipient_account: &[u8; 32],
    plaintext: &[u8],
    eph: &StaticSecret,
    nonce: &[u8; 24],
) -> Result<Vec<u8>, SealedMessageError> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(SealedMessageError::TooLarge {
            len: plaintext.len(),
            max: MAX_PLAINTEXT,
        });
    }
    // Checked before signing so a bad recipient costs no signature.
    message_public_key(recipient_account)?;
    let inner = inner_bytes(sender, recipient_account, plaintext);
    encrypt_inner(recipient_account, &inner, eph, nonce)
}

/// Opens a message sealed to `recipient` and checks, in this order: version and length,
/// the ephemeral key, the AEAD, the plaintext length, the padding, the sender's key and
/// its signature.
pub fn open_message(recipient: &Identity, sealed: &[u8]) -> Result<OpenedMessage, SealedMessageError> {
    let envelope = parse_envelope(sealed)?;
    let inner = decrypt_inner(recipient, &envelope)?;
    let parsed = parse_inner(&inner)?;
    verify_sender(&parsed, &recipient.account())?;
    Ok(OpenedMessage {
        sender: *parsed.sender,
        plaintext: Zeroizing::new(parsed.plaintext.to_vec()),
    })
}

/// The X25519 public key messages to `account` are sealed to: the Montgomery form of the
/// Ed25519 key. Invalid and small-order keys are refused (no secret could be agreed).
pub fn message_public_key(account: &[u8; 32]) -> Result<[u8; 32], SealedMessageError> {
    let key = VerifyingKey::from_bytes(account).map_err(|_| SealedMessageError::BadRecipient)?;
    if key.is_weak() {
        return Err(SealedMessageError::BadRecipient);
    }
    Ok(key.to_montgomery().to_bytes())
}

/// Length of the sealed message of a `plaintext_len`-byte plaintext (not checked against
/// [`MAX_PLAINTEXT`]).
pub fn sealed_len(plaintext_len: usize) -> usize {
    bucket(OVERHEAD.saturating_add(plaintext_len))
}

/// The padded length of `len` bytes: at least 256, the next power of two up to 64 KiB,
/// then the next multiple of 64 KiB. The relay learns only this.
const fn bucket(len: usize) -> usize {
    if len <= MIN_SEALED_LEN {
        MIN_SEALED_LEN
    } else if len <= LARGE_BUCKET {
        len.next_power_of_two()
    } else {
        len.div_ceil(LARGE_BUCKET) * LARGE_BUCKET
    }
}

/// `"tidings/message/v1/sig" ‖ recipient_account ‖ plaintext`: naming the recipient stops
/// a recipient from re-sealing the message to a third party as if written to them.
fn signature_input(recipient_account: &[u8; 32], plaintext: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut m = Zeroizing::new(Vec::with_capacity(SIGNATURE_LABEL.len() + 32 + plaintext.len()));
    m.extend_from_slice(SIGNATURE_LABEL);
    m.extend_from_slice(recipient_account);
    m.extend_from_slice(plaintext);
    m
}

/// `sender ‖ signature ‖ be32(len) ‖ plaintext ‖ zeros`, padded so the sealed message is
/// exactly its bucket. The caller has bounded `plaintext` by [`MAX_PLAINTEXT`].
fn inner_bytes(sender: &Identity, recipient_account: &[u8; 32], plaintext: &[u8]) -> Zeroizing<Vec<u8>> {
    let inner_len = sealed_len(plaintext.len()) - HEADER_LEN - TAG_LEN;
    // MAX_PLAINTEXT is far below u32::MAX.
    let len = u32::try_from(plaintext.len()).unwrap_or(u32::MAX);
    let mut inner = Zeroizing::new(Vec::with_capacity(inner_len));
    inner.extend_from_slice(&sender.account());
    inner.extend_from_slice(&sender.sign(&signature_input(recipient_account, plaintext)));
    inner.extend_from_slice(&len.to_be_bytes());
    inner.extend_from_slice(plaintext);
    inner.resize(inner_len, 0);
    inner
}

/// Encrypts an inner block to `recipient_account` and frames it.
fn encrypt_inner(
    recipient_account: &[u8; 32],
    inner: &[u8],
    eph: &StaticSecret,
    nonce: &[u8; 24],
) -> Result<Vec<u8>, SealedMessageError> {
    let recipient_x = message_public_key(recipient_account)?;
    let eph_pub = PublicKey::from(eph).to_bytes();
    let shared = eph.diffie_hellman(&PublicKey::from(recipient_x));
    // Unreachable for a full-order recipient key, but an all-zero secret must never key a box.
    if !shared.was_contributory() {
        return Err(SealedMessageError::BadRecipient);
    }
    let k = message_key(shared.as_bytes(), &eph_pub, &recipient_x);
    let mut out = Vec::with_capacity(HEADER_LEN + inner.len() + TAG_LEN);
    out.push(VERSION);
    out.extend_from_slice(&eph_pub);
    out.extend_from_slice(nonce);
    out.extend_from_slice(&aead::encrypt(
        &k,
        nonce,
        inner,
        &aad(recipient_account, &eph_pub),
    ));
    Ok(out)
}

/// `HKDF-SHA256(ikm = shared, salt = eph_pub ‖ recipient_x, info = "tidings/message/v1")`.
fn message_key(shared: &[u8; 32], eph_pub: &[u8; 32], recipient_x: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(eph_pub);
    salt[32..].copy_from_slice(recipient_x);
    let mut k = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's 255 × 32 byte output limit.
    Hkdf::<Sha256>::new(Some(&salt), shared)
        .expand(KEY_INFO, k.as_mut())
        .expect("HKDF output length within limit");
    k
}

/// `version ‖ recipient_account ‖ eph_pub`: the ciphertext opens only as a message of this
/// version to this account.
fn aad(recipient_account: &[u8; 32], eph_pub: &[u8; 32]) -> [u8; 65] {
    let mut aad = [0u8; 65];
    aad[0] = VERSION;
    aad[1..33].copy_from_slice(recipient_account);
    aad[33..].copy_from_slice(eph_pub);
    aad
}

/// The clear parts of a sealed message.
struct Envelope<'a> {
    eph_pub: &'a [u8; 32],
    nonce: &'a [u8; 24],
    ciphertext: &'a [u8],
}

/// Checks version and length, the checks that need no cryptography, and splits.
fn parse_envelope(sealed: &[u8]) -> Result<Envelope<'_>, SealedMessageError> {
    if sealed.len() < MIN_SEALED_LEN || sealed.first() != Some(&VERSION) {
        return Err(SealedMessageError::NotSealed);
    }
    if sealed.len() > MAX_SEALED_LEN || bucket(sealed.len()) != sealed.len() {
        return Err(SealedMessageError::BadLength);
    }
    // The length check above leaves room for every split.
    let rest = &sealed[1..];
    let (eph_pub, rest) = rest
        .split_first_chunk::<32>()
        .ok_or(SealedMessageError::BadLength)?;
    let (nonce, ciphertext) = rest
        .split_first_chunk::<24>()
        .ok_or(SealedMessageError::BadLength)?;
    Ok(Envelope {
        eph_pub,
        nonce,
        ciphertext,
    })
}

/// Agrees the message key with the ephemeral key and decrypts the inner block.
fn decrypt_inner(
    recipient: &Identity,
    envelope: &Envelope<'_>,
) -> Result<Zeroizing<Vec<u8>>, SealedMessageError> {
    let secret = recipient.message_secret();
    let recipient_x = PublicKey::from(&secret).to_bytes();
    let shared = secret.diffie_hellman(&PublicKey::from(*envelope.eph_pub));
    if !shared.was_contributory() {
        return Err(SealedMessageError::WeakKey);
    }
    let k = message_key(shared.as_bytes(), envelope.eph_pub, &recipient_x);
    let aad = aad(&recipient.account(), envelope.eph_pub);
    aead::decrypt(&k, envelope.nonce, envelope.ciphertext, &aad)
        .map(Zeroizing::new)
        .ok_or(SealedMessageError::Decrypt)
}

/// The parts of a decrypted inner block.
struct Inner<'a> {
    sender: &'a [u8; 32],
    signature: &'a [u8; 64],
    plaintext: &'a [u8],
}

/// Splits an inner block and checks that its length field gives exactly this bucket and
/// that the padding is zero, so every message has one encoding.
fn parse_inner(inner: &[u8]) -> Result<Inner<'_>, SealedMessageError> {
    use SealedMessageError::BadPlaintextLength;
    let (sender, rest) = inner.split_first_chunk::<32>().ok_or(BadPlaintextLength)?;
    let (signature, rest) = rest.split_first_chunk::<64>().ok_or(BadPlaintextLength)?;
    let (len, rest) = rest.split_first_chunk::<4>().ok_or(BadPlaintextLength)?;
    let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| BadPlaintextLength)?;
    // `len <= rest.len()` first: it keeps `sealed_len` far from overflow.
    if len > rest.len() || sealed_len(len) != HEADER_LEN + inner.len() + TAG_LEN {
        return Err(BadPlaintextLength);
    }
    let (plaintext, padding) = rest.split_at(len);
    if padding.iter().any(|&b| b != 0) {
        return Err(SealedMessageError::BadPadding);
    }
    Ok(Inner {
        sender,
        signature,
        plaintext,
    })
}

/// Checks the sender's key and its signature over this recipient and plaintext.
fn verify_sender(inner: &Inner<'_>, recipient_account: &[u8; 32]) -> Result<(), SealedMessageError> {
    let key = VerifyingKey::from_bytes(inner.sender).map_err(|_| SealedMessageError::BadSender)?;
    if key.is_weak() {
        return Err(SealedMessageError::BadSender);
    }
    let signed = signature_input(recipient_account, inner.plaintext);
    key.verify_strict(&signed, &Signature::from_bytes(inner.signature))
        .map_err(|_| SealedMessageError::BadSignature)
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use super::*;
    use proptest::prelude::*;

    /// Identities cost two PBKDF2 runs each: build them once.
    fn identity(n: u8) -> &'static Identity {
        static IDS: OnceLock<Vec<Identity>> = OnceLock::new();
        let ids = IDS.get_or_init(|| {
            (1..=3u8)
                .map(|b| Identity::from_entropy(&[b; 16]).unwrap())
                .collect()
        });
        &ids[usize::from(n)]
    }

    fn alice() -> &'static Identity {
        identity(0)
    }

    fn bob() -> &'static Identity {
        identity(1)
    }

    fn carol() -> &'static Identity {
        identity(2)
    }

    /// Seals a hand-made inner block from alice to bob, for the checks behind the AEAD.
    fn seal_raw(inner: &[u8]) -> Vec<u8> {
        let eph = StaticSecret::from([7u8; 32]);
        encrypt_inner(&bob().account(), inner, &eph, &[9u8; 24]).unwrap()
    }

    fn inner_of(plaintext: &[u8]) -> Zeroizing<Vec<u8>> {
        inner_bytes(alice(), &bob().account(), plaintext)
    }

    /// 32 bytes that are not the encoding of any Ed25519 point.
    fn not_a_point() -> [u8; 32] {
        (2u8..)
            .map(|b| [b; 32])
            .find(|k| VerifyingKey::from_bytes(k).is_err())
            .unwrap()
    }

    /// The encoding of the identity point: valid, but of order 1.
    const SMALL_ORDER_POINT: [u8; 32] = {
        let mut k = [0u8; 32];
        k[0] = 1;
        k
    };

    fn open_bob(sealed: &[u8]) -> Result<OpenedMessage, SealedMessageError> {
        open_message(bob(), sealed)
    }

    #[test]
    fn a_message_opens_for_its_recipient_and_names_the_sender() {
        let sealed = seal_message(alice(), &bob().account(), b"lunch at noon?").unwrap();
        let opened = open_bob(&sealed).unwrap();
        assert_eq!(opened.sender, alice().account());
        assert_eq!(opened.plaintext.as_slice(), b"lunch at noon?");
        assert_eq!(sealed[0], VERSION);
        assert_eq!(sealed.len(), MIN_SEALED_LEN);
    }

    #[test]
    fn a_note_to_self_opens() {
        let sealed = seal_message(alice(), &alice().account(), b"").unwrap();
        let opened = open_message(alice(), &sealed).unwrap();
        assert_eq!(opened.sender, alice().account());
        assert!(opened.plaintext.is_empty());
    }

    #[test]
    fn every_seal_is_fresh_and_seal_with_is_deterministic() {
        let a = seal_message(alice(), &bob().account(), b"x").unwrap();
        let b = seal_message(alice(), &bob().account(), b"x").unwrap();
        assert_ne!(a, b);
        let eph = StaticSecret::from([3u8; 32]);
        let c = seal_with(alice(), &bob().account(), b"x", &eph, &[4; 24]).unwrap();
        let d = seal_with(alice(), &bob().account(), b"x", &eph, &[4; 24]).unwrap();
        assert_eq!(c, d);
    }

    #[test]
    fn buckets_are_powers_of_two_then_multiples_of_64_kib() {
        let table = [
            (0, 256),
            (1, 256),
            (256, 256),
            (257, 512),
            (1025, 2048),
            (65_536, 65_536),
            (65_537, 131_072),
            (131_073, 196_608),
        ];
        for (len, want) in table {
            assert_eq!(bucket(len), want, "bucket({len})");
        }
        assert_eq!(MAX_SEALED_LEN, 5 * 65_536);
    }

    #[test]
    fn sealed_messages_are_exactly_their_bucket() {
        let small = MIN_SEALED_LEN - OVERHEAD;
        let default_limit = LARGE_BUCKET - OVERHEAD;
        for (len, want) in [
            (0, 256),
            (small, 256),
            (small + 1, 512),
            (300, 512),
            (default_limit, 65_536),
            (default_limit + 1, 131_072),
            (MAX_PLAINTEXT, MAX_SEALED_LEN),
        ] {
            let sealed = seal_message(alice(), &bob().account(), &vec![0xa5; len]).unwrap();
            assert_eq!(sealed.len(), want, "plaintext of {len} bytes");
            assert_eq!(sealed_len(len), want);
            assert_eq!(open_bob(&sealed).unwrap().plaintext.len(), len);
        }
    }

    #[test]
    fn a_plaintext_over_the_maximum_is_refused() {
        let err = seal_message(alice(), &bob().account(), &vec![0; MAX_PLAINTEXT + 1]).unwrap_err();
        assert_eq!(
            err,
            SealedMessageError::TooLarge {
                len: MAX_PLAINTEXT + 1,
                max: MAX_PLAINTEXT
            }
        );
    }

    #[test]
    fn an_invalid_recipient_is_refused() {
        for bad in [not_a_point(), SMALL_ORDER_POINT] {
            assert_eq!(message_public_key(&bad), Err(SealedMessageError::BadRecipient));
            assert_eq!(
                seal_message(alice(), &bad, b"hi").unwrap_err(),
                SealedMessageError::BadRecipient
            );
        }
    }

    #[test]
    fn the_message_secret_matches_the_public_key_senders_derive() {
        for n in 0..3 {
            let id = identity(n);
            let public = PublicKey::from(&id.message_secret()).to_bytes();
            assert_eq!(message_public_key(&id.account()), Ok(public));
        }
    }

    #[test]
    fn another_account_cannot_open_it() {
        let sealed = seal_message(alice(), &bob().account(), b"for bob").unwrap();
        assert_eq!(open_message(carol(), &sealed), Err(SealedMessageError::Decrypt));
    }

    #[test]
    fn foreign_bytes_are_recognised_as_not_sealed() {
        let sealed = seal_message(alice(), &bob().account(), b"hi").unwrap();
        let mut other_version = sealed.clone();
        other_version[0] = 0x02;
        assert_eq!(open_bob(&other_version), Err(SealedMessageError::NotSealed));
        assert_eq!(open_bob(&[]), Err(SealedMessageError::NotSealed));
        assert_eq!(
            open_bob(b"{\"app\":\"json\"}"),
            Err(SealedMessageError::NotSealed)
        );
        assert_eq!(open_bob(&sealed[..255]), Err(SealedMessageError::NotSealed));
    }

    #[test]
    fn a_length_off_its_bucket_is_refused() {
        let sealed = seal_message(alice(), &bob().account(), &[1; 300]).unwrap();
        assert_eq!(
            open_bob(&sealed[..sealed.len() - 1]),
            Err(SealedMessageError::BadLength)
        );
        let mut longer = sealed.clone();
        longer.push(0);
        assert_eq!(open_bob(&longer), Err(SealedMessageError::BadLength));
        // Cut down to a smaller bucket, the length passes and the AEAD catches it.
        assert_eq!(open_bob(&sealed[..256]), Err(SealedMessageError::Decrypt));
        let mut huge = vec![0u8; MAX_SEALED_LEN + LARGE_BUCKET];
        huge[0] = VERSION;
        assert_eq!(open_bob(&huge), Err(SealedMessageError::BadLength));
    }

    #[test]
    fn a_changed_byte_anywhere_outside_is_refused() {
        let sealed = seal_message(alice(), &bob().account(), &[0x42; 300]).unwrap();
        let regions = [
            ("ephemeral key", 1..33),
            ("nonce", 33..57),
            ("ciphertext", 57..sealed.len() - TAG_LEN),
            ("tag", sealed.len() - TAG_LEN..sealed.len()),
        ];
        for (name, range) in regions {
            for i in [range.start, (range.start + range.end) / 2, range.end - 1] {
                let mut bad = sealed.clone();
                bad[i] ^= 0x01;
                assert_eq!(
                    open_bob(&bad),
                    Err(SealedMessageError::Decrypt),
                    "{name} byte {i}"
                );
            }
        }
    }

    #[test]
    fn a_low_order_ephemeral_key_is_refused() {
        let mut sealed = seal_message(alice(), &bob().account(), b"hi").unwrap();
        sealed[1..33].fill(0);
        assert_eq!(open_bob(&sealed), Err(SealedMessageError::WeakKey));
    }

    #[test]
    fn a_changed_sender_signature_or_plaintext_is_refused() {
        let plaintext = [0x42u8; 40];
        let regions = [
            ("sender", 0..32, SealedMessageError::BadSignature),
            ("signature", 32..96, SealedMessageError::BadSignature),
            ("plaintext", 100..140, SealedMessageError::BadSignature),
        ];
        for (name, range, want) in regions {
            for i in [range.start, range.end - 1] {
                let mut inner = inner_of(&plaintext);
                // Flipping the top bit of a key or signature keeps it parseable more often.
                inner[i] ^= 0x02;
                let got = open_bob(&seal_raw(&inner));
                assert!(
                    got == Err(want) || (name == "sender" && got == Err(SealedMessageError::BadSender)),
                    "{name} byte {i}: {got:?}"
                );
            }
        }
    }

    #[test]
    fn an_invalid_sender_key_is_refused() {
        for bad in [not_a_point(), SMALL_ORDER_POINT] {
            let mut inner = inner_of(b"hi");
            inner[..32].copy_from_slice(&bad);
            assert_eq!(open_bob(&seal_raw(&inner)), Err(SealedMessageError::BadSender));
        }
    }

    #[test]
    fn another_senders_name_does_not_verify() {
        let mut inner = inner_of(b"hi");
        inner[..32].copy_from_slice(&carol().account());
        assert_eq!(open_bob(&seal_raw(&inner)), Err(SealedMessageError::BadSignature));
    }

    #[test]
    fn a_message_resealed_to_someone_else_does_not_verify() {
        // Bob opens alice's message to him and re-seals her signed inner block to carol.
        let inner = inner_bytes(alice(), &bob().account(), b"I owe you 10");
        let eph = StaticSecret::from([5u8; 32]);
        let resealed = encrypt_inner(&carol().account(), &inner, &eph, &[1; 24]).unwrap();
        assert_eq!(
            open_message(carol(), &resealed),
            Err(SealedMessageError::BadSignature)
        );
    }

    #[test]
    fn a_wrong_plaintext_length_is_refused() {
        let plaintext = [0x42u8; 40];
        let set_len = |len: u32| {
            let mut inner = inner_of(&plaintext);
            inner[96..100].copy_from_slice(&len.to_be_bytes());
            open_bob(&seal_raw(&inner))
        };
        // Longer than the block, and far beyond it.
        assert_eq!(set_len(84), Err(SealedMessageError::BadPlaintextLength));
        assert_eq!(set_len(u32::MAX), Err(SealedMessageError::BadPlaintextLength));
        // Shorter: the plaintext's last byte becomes non-zero padding.
        assert_eq!(set_len(39), Err(SealedMessageError::BadPadding));
    }

    #[test]
    fn padding_to_a_larger_bucket_than_needed_is_refused() {
        let mut inner = inner_of(b"hi");
        inner.resize(512 - HEADER_LEN - TAG_LEN, 0);
        assert_eq!(
            open_bob(&seal_raw(&inner)),
            Err(SealedMessageError::BadPlaintextLength)
        );
    }

    #[test]
    fn non_zero_padding_is_refused() {
        for i in [102, 150, 182] {
            let mut inner = inner_of(b"hi");
            inner[i] = 1;
            assert_eq!(
                open_bob(&seal_raw(&inner)),
                Err(SealedMessageError::BadPadding),
                "byte {i}"
            );
        }
    }

    #[test]
    fn debug_and_errors_show_no_secret() {
        let sealed = seal_message(alice(), &bob().account(), b"secret words").unwrap();
        let opened = open_bob(&sealed).unwrap();
        let dbg = format!("{opened:?}");
        assert!(!dbg.contains("secret"), "{dbg}");
        assert!(!dbg.contains(&hex::encode(alice().account())), "{dbg}");
        assert!(!dbg.contains(&format!("{:?}", alice().account())), "{dbg}");
        let err = open_message(carol(), &sealed).unwrap_err();
        for text in [err.to_string(), format!("{err:?}")] {
            assert!(!text.contains(&hex::encode(bob().account())), "{text}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn any_plaintext_round_trips(plaintext in proptest::collection::vec(any::<u8>(), 0..3000)) {
            let sealed = seal_message(alice(), &bob().account(), &plaintext).unwrap();
            prop_assert_eq!(sealed.len(), sealed_len(plaintext.len()));
            let opened = open_bob(&sealed).unwrap();
            prop_assert_eq!(opened.sender, alice().account());
            prop_assert_eq!(opened.plaintext.as_slice(), plaintext.as_slice());
        }

        #[test]
        fn open_never_panics(mut bytes in proptest::collection::vec(any::<u8>(), 0..1100), sealed_version in any::<bool>()) {
            if sealed_version && !bytes.is_empty() {
                bytes[0] = VERSION;
            }
            prop_assert!(open_bob(&bytes).is_err());
        }
    }
}
