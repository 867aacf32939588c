//! The QR payload: what the new device shows and the linked device scans.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::VerifyingKey;
use tonic::transport::Uri;

use super::PayloadError;

/// Scheme and version prefix of a QR payload.
pub const QR_PREFIX: &str = "tidings-link:v2:";
/// Longest relay address a payload may carry, in bytes.
pub const MAX_RELAY_ADDR_LEN: usize = 255;
/// Longest device name a payload may carry, in bytes of UTF-8.
pub const MAX_DEVICE_NAME_LEN: usize = 64;

const KEYS_LEN: usize = 64;

/// The public content of a QR code: who asks, where and to which keys to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferPayload {
    /// The relay the new device uses, as the linked device should dial it.
    pub relay_addr: String,
    /// The new device's display name, shown on the linked device before approval.
    pub device_name: String,
    /// The one-time mailbox's account key (Ed25519 public key).
    pub mailbox: [u8; 32],
    /// The one-time X25519 public key the handshake is made with.
    pub x25519: [u8; 32],
}

impl OfferPayload {
    /// `tidings-link:v2:` + base64url(mailbox(32) ‖ x25519(32) ‖ u8(len(name)) ‖ name ‖
    /// relay address), unpadded: URL-safe and compact enough for a small QR code.
    pub fn encode(&self) -> String {
        let name = self.device_name.as_bytes();
        let mut body = Vec::with_capacity(KEYS_LEN + 1 + name.len() + self.relay_addr.len());
        body.extend_from_slice(&self.mailbox);
        body.extend_from_slice(&self.x25519);
        // A valid name is at most MAX_DEVICE_NAME_LEN (64) bytes; a longer one (a caller
        // that skipped the checks) is cut to what the length byte can say and then fails
        // to parse, instead of shifting the relay address.
        let len = u8::try_from(name.len()).unwrap_or(u8::MAX);
        body.push(len);
        body.extend_from_slice(&name[..usize::from(len)]);
        body.extend_from_slice(self.relay_addr.as_bytes());
        format!("{QR_PREFIX}{}", URL_SAFE_NO_PAD.encode(body))
    }

    /// Parses a scanned payload; surrounding whitespace and base64 padding are tolerated.
    /// A `v1` code is refused with [`PayloadError::Outdated`]: its device would adopt
    /// whatever root reaches it, without the hello this version shows the code from.
    pub fn parse(payload: &str) -> Result<Self, PayloadError> {
        let rest = payload
            .trim()
            .strip_prefix("tidings-link:")
            .ok_or(PayloadError::NotALinkCode)?;
        let (version, body) = rest.split_once(':').ok_or(PayloadError::NotALinkCode)?;
        match version {
            "v2" => {}
            "v1" => return Err(PayloadError::Outdated),
            other => {
                return Err(PayloadError::UnsupportedVersion(other.chars().take(16).collect()));
            }
        }
        let body = URL_SAFE_NO_PAD
            .decode(body.trim_end_matches('='))
            .map_err(|_| PayloadError::Encoding)?;
        if body.len() <= KEYS_LEN {
            return Err(PayloadError::TooShort);
        }
        let (keys, rest) = body.split_at(KEYS_LEN);
        let (&name_len, rest) = rest.split_first().ok_or(PayloadError::TooShort)?;
        let name_len = usize::from(name_len);
        if rest.len() <= name_len {
            return Err(PayloadError::TooShort);
        }
        let (name, addr) = rest.split_at(name_len);
        let device_name = std::str::from_utf8(name).map_err(|_| PayloadError::DeviceName)?;
        check_device_name(device_name)?;
        let relay_addr = std::str::from_utf8(addr).map_err(|_| PayloadError::RelayAddress)?;
        check_relay_addr(relay_addr)?;
        let mut mailbox = [0u8; 32];
        let mut x25519 = [0u8; 32];
        mailbox.copy_from_slice(&keys[..32]);
        x25519.copy_from_slice(&keys[32..]);
        VerifyingKey::from_bytes(&mailbox).map_err(|_| PayloadError::MailboxKey)?;
        Ok(Self {
            relay_addr: relay_addr.to_owned(),
            device_name: device_name.to_owned(),
            mailbox,
            x25519,
        })
    }
}

/// Checks a relay address for a payload: 1 to [`MAX_RELAY_ADDR_LEN`] bytes, no spaces
/// or control characters.
pub fn check_relay_addr(addr: &str) -> Result<(), PayloadError> {
    let ok = !addr.is_empty()
        && addr.len() <= MAX_RELAY_ADDR_LEN
        && !addr.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(PayloadError::RelayAddress)
    }
}

/// Checks a device name for a payload: 1 to [`MAX_DEVICE_NAME_LEN`] bytes of UTF-8, not
/// blank, no control characters, line or paragraph separators, or bidirectional
/// formatting characters (which could make the name the linked device shows read as
/// something else).
pub fn check_device_name(name: &str) -> Result<(), PayloadError> {
    let ok = !name.trim().is_empty()
        && name.len() <= MAX_DEVICE_NAME_LEN
        && !name.chars().any(|c| c.is_control() || is_layout_control(c));
    if ok { Ok(()) } else { Err(PayloadError::DeviceName) }
}

/// Line and paragraph separators, and the bidirectional embeddings, overrides, isolates
/// and marks.
fn is_layout_control(c: char) -> bool {
    matches!(
        c,
        '\u{2028}' | '\u{2029}' | '\u{200E}' | '\u{200F}' | '\u{061C}'
            | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

/// Whether two relay addresses name the same relay: equal scheme (`http` when none is
/// given, as the client dials it), host (case-insensitive) and port (the scheme's
/// default when none is given). Addresses that do not parse are compared as written.
pub fn same_relay(a: &str, b: &str) -> bool {
    match (origin(a), origin(b)) {
        (Some(a), Some(b)) => a == b,
        _ => a.trim() == b.trim(),
    }
}

fn origin(addr: &str) -> Option<(String, String, u16)> {
    let addr = addr.trim();
    let full = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    let uri: Uri = full.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let host = uri.host()?.to_ascii_lowercase();
    let port = match (uri.port_u16(), scheme.as_str()) {
        (Some(p), _) => p,
        (None, "https") => 443,
        (None, "http") => 80,
        (None, _) => return None,
    };
    Some((scheme, host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_are_checked() {
        for good in [
            "Ada's iPad",
            "Pixel 9 Pro",
            "Téléphone de Zoë",
            "📱",
            &"x".repeat(64),
        ] {
            assert_eq!(check_device_name(good), Ok(()), "{good:?}");
        }
        for bad in [
            "",
            "   ",
            "tab\there",
            "line\nbreak",
            "\u{202E}daPi s'adA",
            "a\u{2066}b",
            "a\u{2028}b",
            &"x".repeat(65),
            &"é".repeat(33),
        ] {
            assert_eq!(check_device_name(bad), Err(PayloadError::DeviceName), "{bad:?}");
        }
    }

    #[test]
    fn relays_compare_by_origin() {
        assert!(same_relay("127.0.0.1:7400", "http://127.0.0.1:7400"));
        assert!(same_relay("https://Relay.Example", "https://relay.example:443/"));
        assert!(same_relay("http://relay.example", "relay.example:80"));
        assert!(!same_relay("https://relay.example", "http://relay.example"));
        assert!(!same_relay("https://relay.example", "https://relay.example.evil"));
        assert!(!same_relay(
            "https://relay.example:7400",
            "https://relay.example:7401"
        ));
    }

    #[test]
    fn an_overlong_name_does_not_shift_the_relay_address() {
        let p = OfferPayload {
            relay_addr: "relay.example:7400".into(),
            device_name: "x".repeat(300),
            mailbox: ed25519_dalek::SigningKey::from_bytes(&[3; 32])
                .verifying_key()
                .to_bytes(),
            x25519: [4; 32],
        };
        assert_eq!(OfferPayload::parse(&p.encode()), Err(PayloadError::DeviceName));
    }
}
