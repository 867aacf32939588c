//! RFC 8291 message encryption for Web Push: one `aes128gcm` record (RFC 8188) under a key
//! agreed with the subscriber's `p256dh` and bound to its `auth` secret.
//!
//! ring does the ECDH (a fresh P-256 key per message) and AES-128-GCM; HKDF-SHA256 is the
//! RustCrypto `hkdf` the relay already uses. ring rejects a `p256dh` that is not a point on
//! the curve, so a bad key can never leak anything about the ephemeral secret.

use hkdf::Hkdf;
use ring::{aead, agreement, rand::SystemRandom};
use sha2::Sha256;

/// Length of a `p256dh`: an uncompressed P-256 point.
pub const P256DH_LEN: usize = 65;
/// Length of an `auth` secret.
pub const AUTH_LEN: usize = 16;
/// The record size written in the header. One record holds the whole message.
pub const RECORD_SIZE: u32 = 4096;
/// Bytes the encoding adds to a plaintext: salt(16) ‖ rs(4) ‖ idlen(1) ‖ keyid(65), then the
/// padding delimiter (1) and the AEAD tag (16).
pub const OVERHEAD: usize = 16 + 4 + 1 + P256DH_LEN + 1 + 16;

/// Why a message could not be encrypted for a subscription.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EceError {
    /// The subscription's `p256dh` is not a valid P-256 public key.
    #[error("the subscription's p256dh is not a P-256 public key")]
    BadKey,
    /// The plaintext does not fit one record.
    #[error("plaintext of {0} bytes does not fit one record")]
    TooLong(usize),
    /// The system random generator failed.
    #[error("random generator failed")]
    Random,
}

/// Encrypts `plaintext` for the subscription (`p256dh`, `auth`): the whole request body.
pub fn encrypt(
    p256dh: &[u8; P256DH_LEN],
    auth: &[u8; AUTH_LEN],
    plaintext: &[u8],
) -> Result<Vec<u8>, EceError> {
    let salt: [u8; 16] = tidings_proto::random_bytes();
    encrypt_with(p256dh, auth, plaintext, &salt, &SystemRandom::new())
}

/// [`encrypt`] with a given salt and ephemeral-key source.
fn encrypt_with(
    p256dh: &[u8; P256DH_LEN],
    auth: &[u8; AUTH_LEN],
    plaintext: &[u8],
    salt: &[u8; 16],
    rng: &dyn ring::rand::SecureRandom,
) -> Result<Vec<u8>, EceError> {
    if plaintext.len() + 1 + 16 > RECORD_SIZE as usize {
        return Err(EceError::TooLong(plaintext.len()));
    }
    let ephemeral =
        agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P256, rng).map_err(|_| EceError::Random)?;
    let as_public = ephemeral.compute_public_key().map_err(|_| EceError::Random)?;
    let as_public: [u8; P256DH_LEN] = as_public.as_ref().try_into().map_err(|_| EceError::Random)?;
    let peer = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, p256dh);
    let shared = agreement::agree_ephemeral(ephemeral, &peer, |secret| {
        <[u8; 32]>::try_from(secret).map_err(|_| EceError::BadKey)
    })
    .map_err(|_| EceError::BadKey)??;
    let (cek, nonce) = derive(&shared, auth, p256dh, &as_public, salt);

    let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
    out.extend_from_slice(salt);
    out.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    out.push(P256DH_LEN as u8);
    out.extend_from_slice(&as_public);
    let header = out.len();
    out.extend_from_slice(plaintext);
    // The last (and only) record ends with delimiter 2 and no padding.
    out.push(2);
    let key = aead::LessSafeKey::new(
        // Invariant: the CEK is exactly AES-128's key length.
        aead::UnboundKey::new(&aead::AES_128_GCM, &cek).map_err(|_| EceError::BadKey)?,
    );
    let mut record = out.split_off(header);
    key.seal_in_place_append_tag(
        aead::Nonce::assume_unique_for_key(nonce),
        aead::Aad::empty(),
        &mut record,
    )
    .map_err(|_| EceError::TooLong(plaintext.len()))?;
    out.extend_from_slice(&record);
    Ok(out)
}

/// RFC 8291 section 3.4 and RFC 8188 section 2.2: the content-encryption key and nonce.
fn derive(
    ecdh: &[u8; 32],
    auth: &[u8; AUTH_LEN],
    ua_public: &[u8; P256DH_LEN],
    as_public: &[u8; P256DH_LEN],
    salt: &[u8; 16],
) -> ([u8; 16], [u8; 12]) {
    let mut key_info = Vec::with_capacity(14 + 2 * P256DH_LEN);
    key_info.extend_from_slice(b"WebPush: info\0");
    key_info.extend_from_slice(ua_public);
    key_info.extend_from_slice(as_public);
    let mut ikm = [0u8; 32];
    // Invariant: HKDF-SHA256 can expand to 32, 16 and 12 bytes (at most 255 × 32).
    Hkdf::<Sha256>::new(Some(auth), ecdh)
        .expand(&key_info, &mut ikm)
        .expect("32 bytes is a valid HKDF length");
    let prk = Hkdf::<Sha256>::new(Some(salt), &ikm);
    let mut cek = [0u8; 16];
    let mut nonce = [0u8; 12];
    prk.expand(b"Content-Encoding: aes128gcm\0", &mut cek)
        .expect("16 bytes is a valid HKDF length");
    prk.expand(b"Content-Encoding: nonce\0", &mut nonce)
        .expect("12 bytes is a valid HKDF length");
    (cek, nonce)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

    fn b64(s: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(s).unwrap()
    }

    /// RFC 8291 appendix A, byte for byte. ring's random source is sealed; its own test
    /// helper is the one way to make the ephemeral key the RFC's (ring uses the bytes as
    /// the scalar).
    #[test]
    #[allow(deprecated)]
    fn matches_the_rfc_8291_example() {
        let plaintext = b"When I grow up, I want to be a watermelon";
        let as_private = b64("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw");
        let ua_public: [u8; 65] =
            b64("BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4")
                .try_into()
                .unwrap();
        let auth: [u8; 16] = b64("BTBZMqHH6r4Tts7J_aSIgg").try_into().unwrap();
        let salt: [u8; 16] = b64("DGv6ra1nlYgDCS1FRnbzlw").try_into().unwrap();
        let body = encrypt_with(
            &ua_public,
            &auth,
            plaintext,
            &salt,
            &ring::test::rand::FixedSliceRandom { bytes: &as_private },
        )
        .unwrap();
        let want = b64(
            "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN",
        );
        assert_eq!(body, want);
        assert_eq!(body.len(), plaintext.len() + OVERHEAD);
    }

    #[test]
    fn a_key_off_the_curve_is_refused() {
        let mut bad = [0u8; 65];
        bad[0] = 4;
        bad[1] = 1;
        assert_eq!(encrypt(&bad, &[0; 16], b"x"), Err(EceError::BadKey));
    }

    #[test]
    fn a_record_holds_at_most_the_record_size() {
        let ua = ring::agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P256, &SystemRandom::new())
            .unwrap()
            .compute_public_key()
            .unwrap();
        let ua: [u8; 65] = ua.as_ref().try_into().unwrap();
        let max = RECORD_SIZE as usize - 17;
        assert_eq!(
            encrypt(&ua, &[1; 16], &vec![0; max]).unwrap().len(),
            max + OVERHEAD
        );
        assert_eq!(
            encrypt(&ua, &[1; 16], &vec![0; max + 1]),
            Err(EceError::TooLong(max + 1))
        );
    }
}
