//! Linking a new device by QR code (DESIGN.md "Linking a device").
//!
//! The new device makes a one-time mailbox (an ordinary account with a throw-away
//! Ed25519 key) and a one-time X25519 key and shows both, with its relay's address, as
//! a QR code. The linked device scans it and stores the account's root secret sealed to
//! that key in the one-time mailbox's public namespace 0:
//!
//! ```text
//! k       = HKDF-SHA256(ikm = X25519(eph, offer_x), salt = eph_pub ‖ offer_x, info = "tidings/link/v1")
//! message = eph_pub(32) ‖ nonce(24) ‖ XChaCha20-Poly1305(k, nonce, entropy, aad = offer_mailbox)
//! sas     = HKDF-SHA256(ikm = X25519 shared secret, salt = offer_mailbox ‖ offer_x ‖ eph_pub,
//!                       info = "tidings/link/sas/v1", L = 8) as be64, mod 10^6, 6 digits
//! ```
//!
//! Both screens show the six digits; the new device adopts the account only after the
//! user confirmed they are equal ([`PendingLink::confirm`]), then deletes the one-time
//! mailbox's messages.
//!
//! What the code protects: someone who saw the QR code (or the relay) can deposit their
//! own sealed root, but cannot make the new device show the linked device's code, so
//! the user rejects it. A party able to *replace* the QR code the linked device scans
//! learns the linked device's code and could search about 10^6 keys for a matching one
//! on the new device: the QR code is meant to be scanned straight off the new device's
//! screen.

use std::{
    fmt,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::{SigningKey, VerifyingKey};
use hkdf::Hkdf;
use sha2::Sha256;
use tidings_proto::{aead, random_bytes};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::{
    client::{ClientError, RelayClient},
    identity::{Identity, PhraseError},
};

/// Scheme and version prefix of a QR payload.
pub const QR_PREFIX: &str = "tidings-link:v1:";
/// HKDF info of the key that seals the root secret.
pub const LINK_INFO: &[u8] = b"tidings/link/v1";
/// HKDF info of the short authentication string.
pub const SAS_INFO: &[u8] = b"tidings/link/sas/v1";
/// The one-time mailbox's namespace that receives the sealed root (public deposit).
pub const LINK_NAMESPACE: i32 = 0;
/// How long the sealed root stays in the one-time mailbox if nobody deletes it.
pub const LINK_TTL_MS: i64 = 10 * 60 * 1000;
/// Longest relay address a payload may carry, in bytes.
pub const MAX_RELAY_ADDR_LEN: usize = 255;
/// Number of digits of the short authentication string.
pub const SAS_DIGITS: usize = 6;

const KEYS_LEN: usize = 64;
const MESSAGE_OVERHEAD: usize = 32 + 24 + 16;
/// The longest single long-poll while waiting for the root.
const MAX_POLL: Duration = Duration::from_secs(30);

/// Why a scanned QR payload was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Does not start with `tidings-link:`.
    #[error("this is not a tidings link code")]
    NotALinkCode,
    /// A link code of a version this app does not know.
    #[error("this link code has version {0:?}, which this app does not understand; update the app")]
    UnsupportedVersion(String),
    /// The body is not base64url.
    #[error("the link code is damaged (not base64url)")]
    Encoding,
    /// The body is too short for two keys and a relay address.
    #[error("the link code is damaged (too short)")]
    TooShort,
    /// The relay address is empty, too long, not UTF-8 or has spaces or control characters.
    #[error("the link code's relay address is invalid")]
    RelayAddress,
    /// The one-time mailbox key is not a valid Ed25519 public key.
    #[error("the link code's mailbox key is invalid")]
    MailboxKey,
}

/// Why linking failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The QR payload (or the relay address for a new offer) is invalid.
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// The offer's X25519 key is a low-order point: no secret can be agreed with it.
    #[error("the link code's key is degenerate")]
    WeakKey,
    /// A mailbox message too short or shaped wrong to be a sealed root.
    #[error("the message is not a sealed root secret")]
    Malformed,
    /// A sealed root that does not open with this offer's key (not for it, or altered).
    #[error("the sealed root secret does not decrypt with this link code's key")]
    Decrypt,
    /// The sealed plaintext is not a root secret.
    #[error("the linked device sent an invalid root secret: {0}")]
    Root(#[from] PhraseError),
    /// Nothing arrived in time.
    #[error("no root secret arrived within {0:?}")]
    Timeout(Duration),
    /// The relay call failed.
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// The public content of a QR code: where and to which keys to send the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferPayload {
    /// The relay the new device uses, as the linked device should dial it.
    pub relay_addr: String,
    /// The one-time mailbox's account key (Ed25519 public key).
    pub mailbox: [u8; 32],
    /// The one-time X25519 public key the root is sealed to.
    pub x25519: [u8; 32],
}

impl OfferPayload {
    /// `tidings-link:v1:` + base64url(mailbox(32) ‖ x25519(32) ‖ relay address (UTF-8)),
    /// unpadded: URL-safe and compact enough for a small QR code.
    pub fn encode(&self) -> String {
        let mut body = Vec::with_capacity(KEYS_LEN + self.relay_addr.len());
        body.extend_from_slice(&self.mailbox);
        body.extend_from_slice(&self.x25519);
        body.extend_from_slice(self.relay_addr.as_bytes());
        format!("{QR_PREFIX}{}", URL_SAFE_NO_PAD.encode(body))
    }

    /// Parses a scanned payload; surrounding whitespace and base64 padding are tolerated.
    pub fn parse(payload: &str) -> Result<Self, PayloadError> {
        let rest = payload
            .trim()
            .strip_prefix("tidings-link:")
            .ok_or(PayloadError::NotALinkCode)?;
        let (version, body) = rest.split_once(':').ok_or(PayloadError::NotALinkCode)?;
        if version != "v1" {
            return Err(PayloadError::UnsupportedVersion(
                version.chars().take(16).collect(),
            ));
        }
        let body = URL_SAFE_NO_PAD
            .decode(body.trim_end_matches('='))
            .map_err(|_| PayloadError::Encoding)?;
        if body.len() <= KEYS_LEN {
            return Err(PayloadError::TooShort);
        }
        let (keys, addr) = body.split_at(KEYS_LEN);
        let relay_addr = std::str::from_utf8(addr).map_err(|_| PayloadError::RelayAddress)?;
        check_relay_addr(relay_addr)?;
        let mut mailbox = [0u8; 32];
        let mut x25519 = [0u8; 32];
        mailbox.copy_from_slice(&keys[..32]);
        x25519.copy_from_slice(&keys[32..]);
        VerifyingKey::from_bytes(&mailbox).map_err(|_| PayloadError::MailboxKey)?;
        Ok(Self {
            relay_addr: relay_addr.to_owned(),
            mailbox,
            x25519,
        })
    }
}

fn check_relay_addr(addr: &str) -> Result<(), PayloadError> {
    let ok = !addr.is_empty()
        && addr.len() <= MAX_RELAY_ADDR_LEN
        && !addr.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(PayloadError::RelayAddress)
    }
}

/// The new device's side: the one-time keys behind a QR code.
pub struct LinkOffer {
    payload: OfferPayload,
    mailbox_key: SigningKey,
    x25519: StaticSecret,
    /// Highest seq already examined, so waiting again after a rejection moves on.
    cursor: AtomicU64,
}

impl fmt::Debug for LinkOffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkOffer")
            .field("relay_addr", &self.payload.relay_addr)
            .finish_non_exhaustive()
    }
}

impl LinkOffer {
    /// Makes fresh one-time keys for a new device that uses the relay at `relay_addr`.
    pub fn new(relay_addr: &str) -> Result<Self, LinkError> {
        check_relay_addr(relay_addr)?;
        let mailbox_key = SigningKey::from_bytes(&Zeroizing::new(random_bytes::<32>()));
        let x25519 = StaticSecret::from(random_bytes::<32>());
        let payload = OfferPayload {
            relay_addr: relay_addr.to_owned(),
            mailbox: mailbox_key.verifying_key().to_bytes(),
            x25519: PublicKey::from(&x25519).to_bytes(),
        };
        Ok(Self {
            payload,
            mailbox_key,
            x25519,
            cursor: AtomicU64::new(0),
        })
    }

    /// Parses a scanned QR payload (the linked device's side); see [`OfferPayload::parse`].
    pub fn parse(payload: &str) -> Result<OfferPayload, PayloadError> {
        OfferPayload::parse(payload)
    }

    /// The text to show as a QR code.
    pub fn qr_payload(&self) -> String {
        self.payload.encode()
    }

    /// The public part of the offer.
    pub fn payload(&self) -> &OfferPayload {
        &self.payload
    }

    /// The one-time mailbox's key (the mailbox is an ordinary account).
    pub fn mailbox_key(&self) -> &SigningKey {
        &self.mailbox_key
    }

    /// Opens one sealed root addressed to this offer (no network).
    pub fn open(&self, message: &[u8]) -> Result<PendingLink, LinkError> {
        let (root, sas) = open_root(&self.x25519, &self.payload, message)?;
        // Reject a plaintext that is no root secret now, before showing any code.
        Identity::from_entropy(&root)?;
        Ok(PendingLink {
            sas,
            root,
            mailbox_key: self.mailbox_key.clone(),
            hashes: Vec::new(),
        })
    }

    /// Long-polls the one-time mailbox until a sealed root for this offer arrives, or
    /// `timeout` passes. Messages that are not a sealed root for this offer are skipped.
    /// `client` must be connected to this offer's relay.
    pub async fn wait_for_root(
        &self,
        client: &RelayClient,
        timeout: Duration,
    ) -> Result<PendingLink, LinkError> {
        let end = Instant::now() + timeout;
        let mut seen: Vec<Vec<u8>> = Vec::new();
        loop {
            let remaining = end.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(LinkError::Timeout(timeout));
            }
            let wait_ms = u32::try_from(remaining.min(MAX_POLL).as_millis()).unwrap_or(u32::MAX);
            let cursor = self.cursor.load(Ordering::Acquire);
            let resp = client
                .retrieve(&self.mailbox_key, LINK_NAMESPACE, cursor, 16, wait_ms)
                .await?;
            for m in resp.messages {
                self.cursor.fetch_max(m.seq, Ordering::AcqRel);
                seen.push(m.hash.clone());
                match self.open(&m.data) {
                    Ok(mut pending) => {
                        pending.hashes = seen;
                        return Ok(pending);
                    }
                    Err(e) => tracing::debug!(error = %e, "skipping a one-time mailbox message"),
                }
            }
        }
    }
}

/// A root secret received and decrypted, waiting for the user to compare the codes.
pub struct PendingLink {
    sas: String,
    root: Zeroizing<Vec<u8>>,
    mailbox_key: SigningKey,
    hashes: Vec<Vec<u8>>,
}

impl fmt::Debug for PendingLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingLink")
            .field("sas", &self.sas)
            .finish_non_exhaustive()
    }
}

impl PendingLink {
    /// The code to show; the linked device shows the code [`send_root`] returned.
    pub fn sas(&self) -> &str {
        &self.sas
    }

    /// The user saw equal codes on both screens: adopt the account, and delete the
    /// one-time mailbox's messages. A failed deletion is only logged: the messages
    /// expire after [`LINK_TTL_MS`] anyway, and the account must not be lost over it.
    pub async fn confirm(self, client: &RelayClient) -> Result<Identity, LinkError> {
        let identity = Identity::from_entropy(&self.root)?;
        self.clean_up(client).await;
        Ok(identity)
    }

    /// The codes differed: forget the root and delete what the one-time mailbox received.
    pub async fn reject(self, client: &RelayClient) {
        self.clean_up(client).await;
    }

    async fn clean_up(&self, client: &RelayClient) {
        if self.hashes.is_empty() {
            return;
        }
        if let Err(e) = client
            .delete(&self.mailbox_key, LINK_NAMESPACE, &self.hashes)
            .await
        {
            tracing::warn!(error = %e, "could not delete the one-time link mailbox; it expires by itself");
        }
    }
}

/// The linked device's output: the mailbox message and the code to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedRoot {
    /// `eph_pub ‖ nonce ‖ ciphertext`, to store in the offer's one-time mailbox.
    pub message: Vec<u8>,
    /// The short authentication string to show.
    pub sas: String,
}

/// Seals `root` (the phrase's entropy) to an offer (no network).
pub fn seal_root(offer: &OfferPayload, root: &[u8]) -> Result<SealedRoot, LinkError> {
    let eph = StaticSecret::from(random_bytes::<32>());
    let eph_pub = PublicKey::from(&eph).to_bytes();
    let shared = eph.diffie_hellman(&PublicKey::from(offer.x25519));
    if !shared.was_contributory() {
        return Err(LinkError::WeakKey);
    }
    let k = Zeroizing::new(link_key(shared.as_bytes(), &eph_pub, &offer.x25519));
    let nonce = random_bytes::<24>();
    let mut message = Vec::with_capacity(MESSAGE_OVERHEAD + root.len());
    message.extend_from_slice(&eph_pub);
    message.extend_from_slice(&nonce);
    message.extend_from_slice(&aead::encrypt(&k, &nonce, root, &offer.mailbox));
    let sas = sas(&offer.mailbox, &offer.x25519, &eph_pub, shared.as_bytes());
    Ok(SealedRoot { message, sas })
}

/// Opens a sealed root with the X25519 secret behind `offer.x25519` (no network);
/// returns the root and the code. Apps use [`LinkOffer::open`], which withholds the
/// root until the user confirms.
pub fn open_root(
    x25519: &StaticSecret,
    offer: &OfferPayload,
    message: &[u8],
) -> Result<(Zeroizing<Vec<u8>>, String), LinkError> {
    if message.len() < MESSAGE_OVERHEAD {
        return Err(LinkError::Malformed);
    }
    let (eph_pub, rest) = message.split_at(32);
    let (nonce, ciphertext) = rest.split_at(24);
    let eph_pub: [u8; 32] = eph_pub.try_into().map_err(|_| LinkError::Malformed)?;
    let nonce: [u8; 24] = nonce.try_into().map_err(|_| LinkError::Malformed)?;
    let shared = x25519.diffie_hellman(&PublicKey::from(eph_pub));
    if !shared.was_contributory() {
        return Err(LinkError::WeakKey);
    }
    let k = Zeroizing::new(link_key(shared.as_bytes(), &eph_pub, &offer.x25519));
    let root = aead::decrypt(&k, &nonce, ciphertext, &offer.mailbox).ok_or(LinkError::Decrypt)?;
    let sas = sas(&offer.mailbox, &offer.x25519, &eph_pub, shared.as_bytes());
    Ok((Zeroizing::new(root), sas))
}

/// The linked device's side: seals the account's root secret to a scanned offer and
/// stores it in the offer's one-time mailbox. Returns the code to show. `client` must
/// be connected to `offer.relay_addr`.
pub async fn send_root(
    client: &RelayClient,
    identity: &Identity,
    offer: &OfferPayload,
) -> Result<String, LinkError> {
    let sealed = seal_root(offer, identity.entropy())?;
    client
        .store(&offer.mailbox, LINK_NAMESPACE, &sealed.message, LINK_TTL_MS)
        .await?;
    Ok(sealed.sas)
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
    fn payload_is_compact_and_url_safe() {
        let offer = LinkOffer::new("https://relay.example:7400").unwrap();
        let qr = offer.qr_payload();
        assert!(qr.starts_with(QR_PREFIX));
        assert!(qr.len() < 160, "{}", qr.len());
        assert!(
            qr[QR_PREFIX.len()..]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_eq!(LinkOffer::parse(&qr).unwrap(), *offer.payload());
    }

    #[test]
    fn sas_has_six_digits() {
        let s = sas(&[1; 32], &[2; 32], &[3; 32], &[4; 32]);
        assert_eq!(s.len(), SAS_DIGITS);
        assert!(s.chars().all(|c| c.is_ascii_digit()));
    }

    #[test]
    fn bad_relay_addresses_are_refused() {
        assert!(LinkOffer::new("").is_err());
        assert!(LinkOffer::new("relay example").is_err());
        assert!(LinkOffer::new(&"a".repeat(MAX_RELAY_ADDR_LEN + 1)).is_err());
    }

    #[test]
    fn a_low_order_offer_key_is_refused() {
        let offer = LinkOffer::new("127.0.0.1:7400").unwrap();
        let mut payload = offer.payload().clone();
        payload.x25519 = [0; 32];
        assert!(matches!(seal_root(&payload, &[7; 16]), Err(LinkError::WeakKey)));
    }
}
