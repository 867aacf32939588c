//! The subscriber side of Web Push (RFC 8291): the keys an install registers with a
//! UnifiedPush distributor or a browser-style push service, and the decryption of what the
//! relay sends through it.
//!
//! The relay encrypts every Web Push body twice: the `enc` string of an ordinary push
//! (under the install's push key), then RFC 8291 `aes128gcm` for the subscription. The
//! distributor sees only the outer ciphertext; [`WebPushKeys::decrypt`] removes the outer
//! layer and gives back the `enc` string that `Account::handle_push` takes.
//!
//! Written here on RustCrypto (p256, hkdf, aes-gcm) because the one packaged RFC 8188/8291
//! implementation for Rust, Mozilla's `ece`, needs OpenSSL, which the phone library does
//! not link. The relay's encryption is ring's and the tests decrypt it with this code and
//! with Python's `http_ece`, so the two sides are checked against independent code.

use aes_gcm::aead::{Aead, KeyInit};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hkdf::Hkdf;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use sha2::Sha256;
use zeroize::Zeroizing;

/// The state blob the install's Web Push keys are kept in (sealed like every blob). It is
/// removed at sign-out, with the device id and push key it belongs beside.
pub const WEB_PUSH_KEYS_BLOB: &str = "webpush-keys";

/// Length of `p256dh`: an uncompressed P-256 point.
pub const P256DH_LEN: usize = 65;
/// Length of the `auth` secret.
pub const AUTH_LEN: usize = 16;
/// salt(16) ‖ rs(4) ‖ idlen(1): the header before the sender's key id.
const HEADER_LEN: usize = 21;
/// The stored form: version(1) ‖ private scalar(32) ‖ auth(16).
const SAVED_LEN: usize = 1 + 32 + AUTH_LEN;
const SAVED_VERSION: u8 = 1;

/// Why a Web Push body or the saved keys could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebPushError {
    /// The body is not an `aes128gcm` message (RFC 8188 header).
    #[error("not an aes128gcm message: {0}")]
    Malformed(&'static str),
    /// A record did not authenticate: encrypted for other keys, or altered.
    #[error("the Web Push message does not decrypt with this install's keys")]
    Rejected,
    /// The plaintext is not a push's `enc` string.
    #[error("the decrypted Web Push message is not a tidings push")]
    NotAPush,
    /// The saved keys are damaged.
    #[error("the saved Web Push keys are damaged")]
    CorruptKeys,
}

/// An install's Web Push subscription keys: the P-256 key pair whose public half is the
/// subscription's `p256dh`, and the `auth` secret. The private half never leaves the
/// install.
#[derive(Clone)]
pub struct WebPushKeys {
    secret: p256::SecretKey,
    p256dh: [u8; P256DH_LEN],
    auth: Zeroizing<[u8; AUTH_LEN]>,
}

impl std::fmt::Debug for WebPushKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The public key is not secret, but it identifies the subscription: keep it out too.
        f.debug_struct("WebPushKeys").finish_non_exhaustive()
    }
}

impl WebPushKeys {
    /// Fresh keys from the system's random generator.
    pub fn generate() -> WebPushKeys {
        loop {
            let raw = Zeroizing::new(tidings_proto::random_bytes::<32>());
            // A random 32-byte string is a valid scalar except with probability ~2^-32.
            if let Ok(secret) = p256::SecretKey::from_slice(raw.as_slice()) {
                return WebPushKeys::from_parts(secret, tidings_proto::random_bytes());
            }
        }
    }

    fn from_parts(secret: p256::SecretKey, auth: [u8; AUTH_LEN]) -> WebPushKeys {
        let mut p256dh = [0u8; P256DH_LEN];
        p256dh.copy_from_slice(secret.public_key().to_encoded_point(false).as_bytes());
        WebPushKeys {
            secret,
            p256dh,
            auth: Zeroizing::new(auth),
        }
    }

    /// The keys with this private scalar and auth secret (test vectors).
    pub fn from_secret(private: &[u8; 32], auth: [u8; AUTH_LEN]) -> Option<WebPushKeys> {
        Some(WebPushKeys::from_parts(
            p256::SecretKey::from_slice(private).ok()?,
            auth,
        ))
    }

    /// The subscription's `p256dh`: the uncompressed public key.
    pub fn p256dh(&self) -> [u8; P256DH_LEN] {
        self.p256dh
    }

    /// The subscription's `auth` secret (shared with the relay through the sealed
    /// registration; never give it to anyone else).
    pub fn auth(&self) -> [u8; AUTH_LEN] {
        *self.auth
    }

    /// `p256dh` in base64url without padding, as Web Push APIs and distributors write it.
    pub fn p256dh_base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.p256dh)
    }

    /// The form kept in the sealed state: version ‖ private scalar ‖ auth.
    pub fn to_saved(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(SAVED_LEN));
        out.push(SAVED_VERSION);
        out.extend_from_slice(&self.secret.to_bytes()[..]);
        out.extend_from_slice(self.auth.as_slice());
        out
    }

    /// Reads what [`WebPushKeys::to_saved`] wrote.
    pub fn from_saved(bytes: &[u8]) -> Result<WebPushKeys, WebPushError> {
        if bytes.len() != SAVED_LEN || bytes[0] != SAVED_VERSION {
            return Err(WebPushError::CorruptKeys);
        }
        let secret = p256::SecretKey::from_slice(&bytes[1..33]).map_err(|_| WebPushError::CorruptKeys)?;
        let auth: [u8; AUTH_LEN] = bytes[33..].try_into().map_err(|_| WebPushError::CorruptKeys)?;
        Ok(WebPushKeys::from_parts(secret, auth))
    }

    /// Removes the `aes128gcm` layer (RFC 8291 keys, every RFC 8188 record) and returns the
    /// plaintext.
    pub fn decrypt(&self, body: &[u8]) -> Result<Zeroizing<Vec<u8>>, WebPushError> {
        let header = Header::parse(body)?;
        let (cek, base_nonce) = self.content_keys(&header)?;
        let cipher = aes_gcm::Aes128Gcm::new(&(*cek).into());
        let records: Vec<&[u8]> = body[header.data_start..].chunks(header.record_size).collect();
        if records.is_empty() {
            return Err(WebPushError::Malformed("no record"));
        }
        let mut out = Zeroizing::new(Vec::new());
        for (seq, record) in records.iter().enumerate() {
            let plain = Zeroizing::new(
                cipher
                    .decrypt(&record_nonce(&base_nonce, seq).into(), *record)
                    .map_err(|_| WebPushError::Rejected)?,
            );
            let last = seq + 1 == records.len();
            out.extend_from_slice(unpad(&plain, last)?);
        }
        Ok(out)
    }

    /// The `enc` string of a Web Push `body` with the keys saved in the state
    /// ([`WEB_PUSH_KEYS_BLOB`]): none saved means this install never registered for Web
    /// Push, so the body is not for it.
    pub fn open_with_saved(saved: Option<&[u8]>, body: &[u8]) -> Result<String, WebPushError> {
        let saved = saved.ok_or(WebPushError::Rejected)?;
        WebPushKeys::from_saved(saved)?.decrypt_enc(body)
    }

    /// [`WebPushKeys::decrypt`], then the plaintext as the push's `enc` string.
    pub fn decrypt_enc(&self, body: &[u8]) -> Result<String, WebPushError> {
        let plain = self.decrypt(body)?;
        let enc = std::str::from_utf8(&plain).map_err(|_| WebPushError::NotAPush)?;
        if enc.is_empty() || !enc.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(WebPushError::NotAPush);
        }
        Ok(enc.to_owned())
    }

    /// RFC 8291 §3.3–3.4: the content-encryption key and base nonce for this message.
    #[allow(clippy::type_complexity)]
    fn content_keys(&self, h: &Header<'_>) -> Result<(Zeroizing<[u8; 16]>, [u8; 12]), WebPushError> {
        let sender = p256::PublicKey::from_sec1_bytes(h.key_id)
            .map_err(|_| WebPushError::Malformed("the key id is not a P-256 point"))?;
        let shared = p256::ecdh::diffie_hellman(self.secret.to_nonzero_scalar(), sender.as_affine());
        let mut key_info = b"WebPush: info\0".to_vec();
        key_info.extend_from_slice(&self.p256dh);
        key_info.extend_from_slice(h.key_id);
        let mut ikm = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(Some(self.auth.as_slice()), &shared.raw_secret_bytes()[..])
            .expand(&key_info, ikm.as_mut_slice())
            .map_err(|_| WebPushError::Malformed("key derivation"))?;
        let prk = Hkdf::<Sha256>::new(Some(h.salt), ikm.as_slice());
        let mut cek = Zeroizing::new([0u8; 16]);
        let mut nonce = [0u8; 12];
        prk.expand(b"Content-Encoding: aes128gcm\0", cek.as_mut_slice())
            .and_then(|()| prk.expand(b"Content-Encoding: nonce\0", &mut nonce))
            .map_err(|_| WebPushError::Malformed("key derivation"))?;
        Ok((cek, nonce))
    }
}

/// The RFC 8188 header of a message.
struct Header<'a> {
    salt: &'a [u8],
    record_size: usize,
    key_id: &'a [u8],
    data_start: usize,
}

impl Header<'_> {
    fn parse(body: &[u8]) -> Result<Header<'_>, WebPushError> {
        if body.len() < HEADER_LEN {
            return Err(WebPushError::Malformed("shorter than its header"));
        }
        let record_size = u32::from_be_bytes([body[16], body[17], body[18], body[19]]);
        // 18: one byte of data, the delimiter and the 16-byte tag (RFC 8188 §2.1).
        if record_size < 18 {
            return Err(WebPushError::Malformed("record size below 18"));
        }
        let id_len = usize::from(body[20]);
        let data_start = HEADER_LEN + id_len;
        let key_id = body
            .get(HEADER_LEN..data_start)
            .ok_or(WebPushError::Malformed("key id cut short"))?;
        Ok(Header {
            salt: &body[..16],
            record_size: usize::try_from(record_size).map_err(|_| WebPushError::Malformed("record size"))?,
            key_id,
            data_start,
        })
    }
}

/// The nonce of record `seq`: the base nonce XOR the 96-bit big-endian sequence number.
fn record_nonce(base: &[u8; 12], seq: usize) -> [u8; 12] {
    let mut nonce = *base;
    for (n, s) in nonce[4..].iter_mut().zip((seq as u64).to_be_bytes()) {
        *n ^= s;
    }
    nonce
}

/// A record's data without its padding: the delimiter is 2 in the last record, 1 before.
fn unpad(plain: &[u8], last: bool) -> Result<&[u8], WebPushError> {
    let end = plain
        .iter()
        .rposition(|&b| b != 0)
        .ok_or(WebPushError::Malformed("a record without its delimiter"))?;
    let want = if last { 2 } else { 1 };
    if plain[end] != want {
        return Err(WebPushError::Malformed("a record with the wrong delimiter"));
    }
    Ok(&plain[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8291 Appendix A's example, as docs/test-vectors.json "web_push_body" publishes
    /// it for the layout of DESIGN.md.
    #[test]
    fn decrypts_the_published_vector() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../docs/test-vectors.json")).unwrap();
        let v = &doc["web_push_body"];
        let b64 = |field: &str| URL_SAFE_NO_PAD.decode(v[field].as_str().unwrap()).unwrap();
        let private: [u8; 32] = b64("ua_private_key").try_into().unwrap();
        let auth: [u8; 16] = b64("auth_secret").try_into().unwrap();
        let keys = WebPushKeys::from_secret(&private, auth).unwrap();
        assert_eq!(keys.p256dh_base64url(), v["ua_public_key"].as_str().unwrap());
        let plain = keys.decrypt(&b64("body")).unwrap();
        assert_eq!(&plain[..], v["plaintext"].as_str().unwrap().as_bytes());
    }

    #[test]
    fn saved_keys_round_trip_and_damage_is_named() {
        let keys = WebPushKeys::generate();
        let back = WebPushKeys::from_saved(&keys.to_saved()).unwrap();
        assert_eq!(back.p256dh(), keys.p256dh());
        assert_eq!(back.auth(), keys.auth());
        assert_eq!(keys.p256dh()[0], 0x04);
        let mut bad = keys.to_saved().to_vec();
        bad[0] = 9;
        assert_eq!(
            WebPushKeys::from_saved(&bad).unwrap_err(),
            WebPushError::CorruptKeys
        );
        assert_eq!(
            WebPushKeys::from_saved(&bad[..10]).unwrap_err(),
            WebPushError::CorruptKeys
        );
        assert_eq!(format!("{keys:?}"), "WebPushKeys { .. }");
    }

    #[test]
    fn bad_bodies_are_refused_with_their_reason() {
        let keys = WebPushKeys::generate();
        assert!(matches!(keys.decrypt(b"short"), Err(WebPushError::Malformed(_))));
        let mut body = vec![0u8; 16];
        body.extend_from_slice(&4096u32.to_be_bytes());
        body.push(65);
        body.extend_from_slice(&keys.p256dh());
        body.extend_from_slice(&[7u8; 40]);
        assert_eq!(keys.decrypt(&body).unwrap_err(), WebPushError::Rejected);
        body[20] = 200;
        assert!(matches!(keys.decrypt(&body), Err(WebPushError::Malformed(_))));
    }
}
