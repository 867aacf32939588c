//! Linking a new device by QR code, asking first (DESIGN.md "Linking a device").
//!
//! The new device makes a one-time mailbox (an ordinary account with a throw-away
//! Ed25519 key) and a one-time X25519 key, and shows both, with its relay's address and
//! its display name, as a QR code ([`OfferPayload`], `tidings-link:v2:`). Then, in the
//! one-time mailbox's public namespace 0:
//!
//! 1. The linked device scans it ([`LinkResponder::new`]), makes an ephemeral X25519 key
//!    and deposits only a **hello**, its ephemeral public key. Nothing is sealed yet. It
//!    shows the new device's name, the relay (flagged when it is not the account's) and
//!    the six-digit code.
//! 2. The new device reads the hello ([`LinkOffer::wait_for_hello`]) and shows the same
//!    code, computed from the same handshake.
//! 3. The user compares the codes. On the linked device they approve
//!    ([`LinkResponder::approve`]: the root secret, sealed under the hello's handshake) or
//!    decline ([`LinkResponder::decline`]: an authenticated "declined" marker; the
//!    handshake key is forgotten). On the new device they confirm
//!    ([`PendingLink::wait_for_root`]: adopts only a root sealed under the hello it
//!    showed the code of) or reject ([`PendingLink::reject`]).
//!
//! ```text
//! shared  = X25519(eph, offer_x)
//! k       = HKDF-SHA256(ikm = shared, salt = eph_pub ‖ offer_x, info = "tidings/link/v2", L = 32)
//! sas     = HKDF-SHA256(ikm = shared, salt = mailbox ‖ offer_x ‖ eph_pub,
//!                       info = "tidings/link/sas/v2", L = 8) as be64, mod 10^6, 6 digits
//! hello   = 0x01 ‖ eph_pub(32)
//! root    = 0x02 ‖ eph_pub(32) ‖ nonce(24) ‖ XChaCha20-Poly1305(k, nonce, entropy, aad = 0x02 ‖ mailbox)
//! decline = 0x03 ‖ eph_pub(32) ‖ nonce(24) ‖ XChaCha20-Poly1305(k, nonce, "",     aad = 0x03 ‖ mailbox)
//! ```
//!
//! What this protects:
//! - Nothing secret leaves the linked device before the user approves there: a scanned QR
//!   code alone makes it store 33 public bytes.
//! - Someone who saw the QR code (or the relay, or both) can deposit their own hello and
//!   their own sealed root, but cannot make the new device show the linked device's code
//!   (that needs the secret half of `eph` or of `offer_x`), so the codes differ and the
//!   user declines on one screen and rejects on the other. The new device never adopts a
//!   root sealed under another handshake than the hello it showed the code of: an
//!   authentic root under another ephemeral key ends the attempt ([`LinkError::Mismatch`]),
//!   a message that does not authenticate is skipped. A decline is authenticated the same
//!   way, so only someone who saw the QR code can forge one (and could as well have
//!   spoiled the attempt with a hello of their own).
//! - Both confirmations matter: the approval keeps the root on the linked device unless
//!   the user saw equal codes there, and the confirmation on the new device keeps it from
//!   adopting an account that someone who saw the QR code sealed under their own hello.
//! - A party able to *replace* the QR code the linked device scans learns the code the
//!   linked device shows and could search about 10^6 ephemeral keys for one that makes the
//!   new device show it too: the QR code is meant to be scanned straight off the new
//!   device's screen, and an app asks the user to approve only a device they hold (the
//!   name and relay in the request help them notice a code from somewhere else).

mod linked_device;
mod message;
mod new_device;
mod payload;

use std::time::Duration;

pub use linked_device::LinkResponder;
pub use message::{Answer, Handshake, LinkMessage, MessageKind};
pub use new_device::{LinkOffer, PendingLink};
pub use payload::{
    MAX_DEVICE_NAME_LEN, MAX_RELAY_ADDR_LEN, OfferPayload, QR_PREFIX, check_device_name, check_relay_addr,
    same_relay,
};

use crate::{client::ClientError, identity::PhraseError};

/// HKDF info of the key that seals the root secret and the decline marker.
pub const LINK_INFO: &[u8] = b"tidings/link/v2";
/// HKDF info of the short authentication string.
pub const SAS_INFO: &[u8] = b"tidings/link/sas/v2";
/// The one-time mailbox's namespace that receives the hello, the root and the decline
/// (public deposit).
pub const LINK_NAMESPACE: i32 = 0;
/// How long link messages stay in the one-time mailbox if nobody deletes them.
pub const LINK_TTL_MS: i64 = 10 * 60 * 1000;
/// Number of digits of the short authentication string.
pub const SAS_DIGITS: usize = 6;

/// Why a scanned QR payload (or a new offer's device name or relay) was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Does not start with `tidings-link:`.
    #[error("this is not a tidings link code")]
    NotALinkCode,
    /// A `tidings-link:v1:` code: the other device's app links without asking first,
    /// which this app no longer does.
    #[error(
        "this link code comes from an older version of the app: update the other device and show its new code"
    )]
    Outdated,
    /// A link code of a version this app does not know.
    #[error("this link code has version {0:?}, which this app does not understand; update the app")]
    UnsupportedVersion(String),
    /// The body is not base64url.
    #[error("the link code is damaged (not base64url)")]
    Encoding,
    /// The body is too short for two keys, a device name and a relay address.
    #[error("the link code is damaged (too short)")]
    TooShort,
    /// The relay address is empty, too long, not UTF-8 or has spaces or control characters.
    #[error("the link code's relay address is invalid")]
    RelayAddress,
    /// The device name is blank, longer than [`MAX_DEVICE_NAME_LEN`] bytes, not UTF-8, or
    /// has control or bidirectional formatting characters.
    #[error("the device name is invalid (1 to 64 bytes of text, no control characters)")]
    DeviceName,
    /// The one-time mailbox key is not a valid Ed25519 public key.
    #[error("the link code's mailbox key is invalid")]
    MailboxKey,
}

/// Why linking failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The QR payload (or the relay address or device name of a new offer) is invalid.
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// An X25519 key of the handshake is a low-order point: no secret can be agreed.
    #[error("the link code's key is degenerate")]
    WeakKey,
    /// A mailbox message too short or shaped wrong to be a link message.
    #[error("the message is not a link message")]
    Malformed,
    /// The sealed plaintext is not a root secret.
    #[error("the linked device sent an invalid root secret: {0}")]
    Root(#[from] PhraseError),
    /// The linked device declined the request.
    #[error("the other device declined the link request")]
    Declined,
    /// An authentic root arrived sealed under another handshake than the hello whose code
    /// was shown (a second device answered the same code, or someone tried to substitute
    /// an account). Nothing was adopted; start over with a new code.
    #[error("a root secret arrived from another device than the one whose code was shown")]
    Mismatch,
    /// Nothing (no hello, or no answer to it) arrived in time.
    #[error("the other device did not answer within {0:?}")]
    Timeout(Duration),
    /// The relay call failed.
    #[error(transparent)]
    Client(#[from] ClientError),
}
