//! The one-time mailbox's messages (hello, root, decline) and the handshake behind them:
//! the key that seals the root and the code both screens show. No network here.

use std::fmt;

use hkdf::Hkdf;
use sha2::Sha256;
use tidings_proto::{aead, random_bytes};
use x25519_dalek::{PublicKey, SharedSecret, StaticSecret};
use zeroize::Zeroizing;

use super::{LINK_INFO, LinkError, OfferPayload, SAS_DIGITS, SAS_INFO};
use crate::identity::Identity;

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// kind(1) ‖ eph_pub(32).
const HEADER_LEN: usize = 1 + KEY_LEN;
/// A sealed message's shortest form: header, nonce and an empty ciphertext's tag.
const SEALED_MIN: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;

/// The first byte of a link message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MessageKind {
    /// The linked device's ephemeral public key; nothing secret.
    Hello = 0x01,
    /// The root secret, sealed under the handshake.
    Root = 0x02,
    /// The user declined on the linked device; authenticated under the handshake.
    Decline = 0x03,
}

impl MessageKind {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            0x01 => Some(Self::Hello),
            0x02 => Some(Self::Root),
            0x03 => Some(Self::Decline),
            _ => None,
        }
    }
}

/// One message of the one-time mailbox, split into its fields (DESIGN.md "Linking a
/// device"): `hello = 0x01 ‖ eph_pub`, `root | decline = kind ‖ eph_pub ‖ nonce ‖ sealed`.
#[derive(Clone, PartialEq, Eq)]
pub struct LinkMessage {
    /// What the message is.
    pub kind: MessageKind,
    /// The linked device's ephemeral X25519 public key: names the handshake.
    pub eph_pub: [u8; 32],
    /// The XChaCha20 nonce (zero for a hello, which has none).
    pub nonce: [u8; 24],
    /// The ciphertext and tag (empty for a hello).
    pub sealed: Vec<u8>,
}

impl fmt::Debug for LinkMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkMessage")
            .field("kind", &self.kind)
            .field("sealed_len", &self.sealed.len())
            .finish_non_exhaustive()
    }
}

impl LinkMessage {
    /// Splits a mailbox message; lengths are exact (a hello is 33 bytes, a decline 73, a
    /// root at least 73).
    pub fn parse(bytes: &[u8]) -> Result<Self, LinkError> {
        let (&kind, rest) = bytes.split_first().ok_or(LinkError::Malformed)?;
        let kind = MessageKind::from_byte(kind).ok_or(LinkError::Malformed)?;
        let well_sized = match kind {
            MessageKind::Hello => bytes.len() == HEADER_LEN,
            MessageKind::Decline => bytes.len() == SEALED_MIN,
            MessageKind::Root => bytes.len() >= SEALED_MIN,
        };
        if !well_sized {
            return Err(LinkError::Malformed);
        }
        let (eph_pub, rest) = rest.split_at(KEY_LEN);
        let mut message = LinkMessage {
            kind,
            eph_pub: eph_pub.try_into().map_err(|_| LinkError::Malformed)?,
            nonce: [0; NONCE_LEN],
            sealed: Vec::new(),
        };
        if kind != MessageKind::Hello {
            let (nonce, sealed) = rest.split_at(NONCE_LEN);
            message.nonce = nonce.try_into().map_err(|_| LinkError::Malformed)?;
            message.sealed = sealed.to_vec();
        }
        Ok(message)
    }

    /// The bytes to store in the one-time mailbox.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + NONCE_LEN + self.sealed.len());
        out.push(self.kind as u8);
        out.extend_from_slice(&self.eph_pub);
        if self.kind != MessageKind::Hello {
            out.extend_from_slice(&self.nonce);
            out.extend_from_slice(&self.sealed);
        }
        out
    }
}

/// What an answer to a hello says, once opened under its handshake.
#[derive(Debug)]
pub enum Answer {
    /// The linked device approved: the account, from the root sealed under this handshake.
    Root(Box<Identity>),
    /// The linked device declined.
    Declined,
}

/// One handshake between a QR offer and a linked device's ephemeral key: the key that
/// seals the root and the decline, and the short authentication string. Both sides
/// compute the same one; the ephemeral secret itself is not kept.
pub struct Handshake {
    mailbox: [u8; 32],
    eph_pub: [u8; 32],
    key: Zeroizing<[u8; 32]>,
    sas: String,
}

impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshake")
            .field("sas", &self.sas)
            .finish_non_exhaustive()
    }
}

impl Handshake {
    /// The linked device's side: a fresh ephemeral key for `offer`.
    pub fn start(offer: &OfferPayload) -> Result<Self, LinkError> {
        let eph = StaticSecret::from(random_bytes::<32>());
        let eph_pub = PublicKey::from(&eph).to_bytes();
        let shared = eph.diffie_hellman(&PublicKey::from(offer.x25519));
        Self::agree(&shared, offer, eph_pub)
    }

    /// The new device's side: the handshake a hello's `eph_pub` starts, with the offer's
    /// X25519 secret.
    pub fn accept(
        x25519: &StaticSecret,
        offer: &OfferPayload,
        eph_pub: &[u8; 32],
    ) -> Result<Self, LinkError> {
        let shared = x25519.diffie_hellman(&PublicKey::from(*eph_pub));
        Self::agree(&shared, offer, *eph_pub)
    }

    fn agree(shared: &SharedSecret, offer: &OfferPayload, eph_pub: [u8; 32]) -> Result<Self, LinkError> {
        if !shared.was_contributory() {
            return Err(LinkError::WeakKey);
        }
        Ok(Self {
            mailbox: offer.mailbox,
            eph_pub,
            key: Zeroizing::new(link_key(shared.as_bytes(), &eph_pub, &offer.x25519)),
            sas: sas(&offer.mailbox, &offer.x25519, &eph_pub, shared.as_bytes()),
        })
    }

    /// The six digits both screens show.
    pub fn sas(&self) -> &str {
        &self.sas
    }

    /// The linked device's ephemeral public key: what names this handshake.
    pub fn eph_pub(&self) -> &[u8; 32] {
        &self.eph_pub
    }

    /// The hello: `0x01 ‖ eph_pub`, public bytes only.
    pub fn hello(&self) -> Vec<u8> {
        LinkMessage {
            kind: MessageKind::Hello,
            eph_pub: self.eph_pub,
            nonce: [0; NONCE_LEN],
            sealed: Vec::new(),
        }
        .encode()
    }

    /// The root message: `root` (the phrase's entropy) sealed under this handshake.
    pub fn seal_root(&self, root: &[u8]) -> Vec<u8> {
        self.seal(MessageKind::Root, root)
    }

    /// The decline marker: an empty plaintext sealed under this handshake, so only a
    /// party to it can say "declined".
    pub fn decline(&self) -> Vec<u8> {
        self.seal(MessageKind::Decline, &[])
    }

    fn seal(&self, kind: MessageKind, plaintext: &[u8]) -> Vec<u8> {
        let nonce = random_bytes::<NONCE_LEN>();
        LinkMessage {
            kind,
            eph_pub: self.eph_pub,
            nonce,
            sealed: aead::encrypt(&self.key, &nonce, plaintext, &self.aad(kind)),
        }
        .encode()
    }

    /// Opens a root or decline of this handshake. `Ok(None)`: the message is not for this
    /// handshake (a hello, another ephemeral key, or bytes that do not authenticate under
    /// it). A root whose plaintext is no root secret is [`LinkError::Root`].
    pub fn open(&self, message: &LinkMessage) -> Result<Option<Answer>, LinkError> {
        if message.kind == MessageKind::Hello || message.eph_pub != self.eph_pub {
            return Ok(None);
        }
        let aad = self.aad(message.kind);
        let Some(plain) = aead::decrypt(&self.key, &message.nonce, &message.sealed, &aad) else {
            return Ok(None);
        };
        let plain = Zeroizing::new(plain);
        match message.kind {
            MessageKind::Root => Ok(Some(Answer::Root(Box::new(Identity::from_entropy(&plain)?)))),
            // The length check of `parse` leaves only an empty plaintext here.
            _ => Ok(Some(Answer::Declined)),
        }
    }

    /// `kind ‖ mailbox`: binds a sealed message to its kind and to the one-time mailbox.
    fn aad(&self, kind: MessageKind) -> [u8; 33] {
        let mut aad = [0u8; 33];
        aad[0] = kind as u8;
        aad[1..].copy_from_slice(&self.mailbox);
        aad
    }
}

fn link_key(shared: &[u8; 32], eph_pub: &[u8; 32], offer_x: &[u8; 32]) -> [u8; 32] {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(eph_pub);
    salt[32..].copy_from_slice(offer_x);
    let mut k = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's output limit.
    Hkdf::<Sha256>::new(Some(&salt), shared)
        .expand(LINK_INFO, &mut k)
        .expect("HKDF output length within limit");
    k
}

/// Six decimal digits from the whole handshake transcript.
fn sas(mailbox: &[u8; 32], offer_x: &[u8; 32], eph_pub: &[u8; 32], shared: &[u8; 32]) -> String {
    let mut salt = [0u8; 96];
    salt[..32].copy_from_slice(mailbox);
    salt[32..64].copy_from_slice(offer_x);
    salt[64..].copy_from_slice(eph_pub);
    let mut out = [0u8; 8];
    // 8 bytes is far below HKDF-SHA256's output limit.
    Hkdf::<Sha256>::new(Some(&salt), shared)
        .expand(SAS_INFO, &mut out)
        .expect("HKDF output length within limit");
    // 2^64 / 10^6 leaves a bias below 10^-13: negligible.
    format!(
        "{:0width$}",
        u64::from_be_bytes(out) % 1_000_000,
        width = SAS_DIGITS
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sas_has_six_digits() {
        let s = sas(&[1; 32], &[2; 32], &[3; 32], &[4; 32]);
        assert_eq!(s.len(), SAS_DIGITS);
        assert!(s.chars().all(|c| c.is_ascii_digit()));
    }

    #[test]
    fn message_lengths_are_exact() {
        assert!(LinkMessage::parse(&[]).is_err());
        assert!(LinkMessage::parse(&[0x01; 32]).is_err());
        assert!(LinkMessage::parse(&[0x01; 33]).is_ok());
        assert!(LinkMessage::parse(&[0x01; 34]).is_err());
        assert!(LinkMessage::parse(&[0x03; 72]).is_err());
        assert!(LinkMessage::parse(&[0x03; 73]).is_ok());
        assert!(LinkMessage::parse(&[0x03; 74]).is_err());
        assert!(LinkMessage::parse(&[0x02; 72]).is_err());
        assert!(LinkMessage::parse(&[0x02; 105]).is_ok());
        assert!(LinkMessage::parse(&[0x04; 33]).is_err());
        let m = LinkMessage::parse(&[0x02; 105]).unwrap();
        assert_eq!(m.encode(), vec![0x02; 105]);
    }
}
