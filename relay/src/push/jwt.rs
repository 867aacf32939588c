//! The JWTs the providers authenticate the relay with: APNs provider tokens (ES256) and
//! the FCM service account's OAuth assertion (RS256). About two signatures an hour.
//!
//! Written here, not with `jsonwebtoken`, whose only pure-Rust backend brings the `rsa`
//! crate (RUSTSEC-2023-0071, key recovery through timing) into the relay: RS256 signs with
//! `ring`, which the relay links already, and ES256 with RustCrypto's `p256`, which the
//! VAPID signer uses too. A JWS compact token is three base64url parts; nothing else of
//! the JWT format is needed to sign one.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use p256::ecdsa::signature::Signer as _;
use p256::pkcs8::DecodePrivateKey as _;
use serde::Serialize;
use zeroize::Zeroizing;

/// Why a key cannot sign.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtKeyError {
    /// Not PEM, or not the PEM label the algorithm needs.
    #[error("not a PEM private key ({0})")]
    NotPem(String),
    /// PEM, but not a key of the algorithm's type (named without any key bytes).
    #[error("not {0}")]
    WrongKey(&'static str),
}

/// Why a token could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtSignError {
    /// The claims did not serialise (a bug: they are plain structs).
    #[error("claims do not serialise: {0}")]
    Claims(String),
    /// The signing primitive failed (RSA: only on a broken random source).
    #[error("signing failed")]
    Sign,
}

enum Key {
    Es256(p256::ecdsa::SigningKey),
    Rs256(ring::signature::RsaKeyPair),
}

/// A key and the header every token it signs carries.
pub struct JwtSigner {
    key: Key,
    /// base64url of the header JSON, computed once.
    header: String,
}

impl std::fmt::Debug for JwtSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let alg = match self.key {
            Key::Es256(_) => "ES256",
            Key::Rs256(_) => "RS256",
        };
        f.debug_struct("JwtSigner")
            .field("alg", &alg)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Header<'a> {
    typ: &'static str,
    alg: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    kid: Option<&'a str>,
}

impl JwtSigner {
    /// ES256 with a P-256 key in PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`, an APNs .p8).
    pub fn es256_from_pem(pem: &str, kid: Option<&str>) -> Result<JwtSigner, JwtKeyError> {
        let der = pkcs8_der(pem)?;
        let key = p256::SecretKey::from_pkcs8_der(&der)
            .map_err(|_| JwtKeyError::WrongKey("a PKCS#8 P-256 private key"))?;
        Ok(JwtSigner {
            key: Key::Es256(key.into()),
            header: header("ES256", kid),
        })
    }

    /// RS256 with an RSA key in PKCS#8 PEM (a Google service account's `private_key`).
    pub fn rs256_from_pem(pem: &str, kid: Option<&str>) -> Result<JwtSigner, JwtKeyError> {
        let der = pkcs8_der(pem)?;
        let pair = ring::signature::RsaKeyPair::from_pkcs8(&der)
            .map_err(|_| JwtKeyError::WrongKey("a PKCS#8 RSA private key of 2048 to 8192 bits"))?;
        Ok(JwtSigner {
            key: Key::Rs256(pair),
            header: header("RS256", kid),
        })
    }

    /// `header.claims.signature`, each base64url without padding.
    pub fn sign(&self, claims: &impl Serialize) -> Result<String, JwtSignError> {
        let claims = serde_json::to_vec(claims).map_err(|e| JwtSignError::Claims(e.to_string()))?;
        let input = format!("{}.{}", self.header, URL_SAFE_NO_PAD.encode(claims));
        let signature = match &self.key {
            // JWS ES256 is the fixed-size r ‖ s, which is what p256's Signature encodes.
            Key::Es256(key) => {
                let signature: p256::ecdsa::Signature = key.sign(input.as_bytes());
                signature.to_bytes().to_vec()
            }
            Key::Rs256(pair) => {
                let mut out = vec![0u8; pair.public().modulus_len()];
                pair.sign(
                    &ring::signature::RSA_PKCS1_SHA256,
                    &ring::rand::SystemRandom::new(),
                    input.as_bytes(),
                    &mut out,
                )
                .map_err(|_| JwtSignError::Sign)?;
                out
            }
        };
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

/// The DER inside a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
fn pkcs8_der(pem: &str) -> Result<Zeroizing<Vec<u8>>, JwtKeyError> {
    let (label, der) =
        pem_rfc7468::decode_vec(pem.trim().as_bytes()).map_err(|e| JwtKeyError::NotPem(e.to_string()))?;
    if label != "PRIVATE KEY" {
        return Err(JwtKeyError::NotPem(format!(
            "label {label:?}, expected \"PRIVATE KEY\" (PKCS#8)"
        )));
    }
    Ok(Zeroizing::new(der))
}

fn header(alg: &'static str, kid: Option<&str>) -> String {
    let json = serde_json::to_vec(&Header { typ: "JWT", alg, kid })
        // Two static strings and an optional one always serialise.
        .unwrap_or_default();
    URL_SAFE_NO_PAD.encode(json)
}

/// The header of a compact JWS, decoded but not verified (for tests of the senders).
#[cfg(test)]
pub(crate) fn header_json(jwt: &str) -> serde_json::Value {
    let header = jwt.split('.').next().unwrap_or_default();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Verifier as _;
    use serde_json::{Value, json};

    fn ec_key() -> p256::SecretKey {
        // A random 32-byte string is a valid scalar except with probability ~2^-32.
        p256::SecretKey::from_slice(&tidings_proto::random_bytes::<32>()).unwrap()
    }

    fn parts(jwt: &str) -> (Value, Value, Vec<u8>, String) {
        let mut it = jwt.split('.');
        let (h, c, s) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
        assert!(it.next().is_none());
        let decode = |p: &str| URL_SAFE_NO_PAD.decode(p).unwrap();
        (
            serde_json::from_slice(&decode(h)).unwrap(),
            serde_json::from_slice(&decode(c)).unwrap(),
            decode(s),
            format!("{h}.{c}"),
        )
    }

    #[test]
    fn es256_tokens_verify_with_the_public_key() {
        let secret = ec_key();
        let pem = p256::pkcs8::EncodePrivateKey::to_pkcs8_pem(&secret, Default::default()).unwrap();
        let signer = JwtSigner::es256_from_pem(&pem, Some("KEYID12345")).unwrap();
        let jwt = signer
            .sign(&json!({"iss": "TEAM", "iat": 1_700_000_000}))
            .unwrap();
        let (header, claims, sig, input) = parts(&jwt);
        assert_eq!(header, json!({"typ": "JWT", "alg": "ES256", "kid": "KEYID12345"}));
        assert_eq!(claims, json!({"iss": "TEAM", "iat": 1_700_000_000}));
        assert_eq!(sig.len(), 64, "JWS wants r ‖ s, not DER");
        let verifying = p256::ecdsa::VerifyingKey::from(secret.public_key());
        let sig = p256::ecdsa::Signature::from_slice(&sig).unwrap();
        verifying.verify(input.as_bytes(), &sig).unwrap();
        assert_eq!(format!("{signer:?}"), "JwtSigner { alg: \"ES256\", .. }");
    }

    #[test]
    fn rs256_tokens_verify_with_the_public_key() {
        let pem = include_str!("../../../tests/mock-push/fixtures/service-account-rsa-2048.key.pem");
        let signer = JwtSigner::rs256_from_pem(pem, None).unwrap();
        let jwt = signer.sign(&json!({"iss": "svc@example"})).unwrap();
        let (header, _, sig, input) = parts(&jwt);
        assert_eq!(header, json!({"typ": "JWT", "alg": "RS256"}));
        let (_, der) = pem_rfc7468::decode_vec(pem.trim().as_bytes()).unwrap();
        let pair = ring::signature::RsaKeyPair::from_pkcs8(&der).unwrap();
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            pair.public().as_ref(),
        )
        .verify(input.as_bytes(), &sig)
        .unwrap();
    }

    #[test]
    fn wrong_keys_are_named_without_their_bytes() {
        let rsa = include_str!("../../../tests/mock-push/fixtures/service-account-rsa-2048.key.pem");
        let e = JwtSigner::es256_from_pem(rsa, None).unwrap_err();
        assert!(matches!(e, JwtKeyError::WrongKey(_)), "{e:?}");
        let ec = p256::pkcs8::EncodePrivateKey::to_pkcs8_pem(&ec_key(), Default::default()).unwrap();
        let e = JwtSigner::rs256_from_pem(&ec, None).unwrap_err();
        assert!(matches!(e, JwtKeyError::WrongKey(_)), "{e:?}");
        for bad in [
            "",
            "not a key",
            "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----",
        ] {
            assert!(JwtSigner::rs256_from_pem(bad, None).is_err());
            assert!(JwtSigner::es256_from_pem(bad, None).is_err());
        }
        let msg = JwtSigner::rs256_from_pem(&ec, None).unwrap_err().to_string();
        assert!(!msg.contains("MIG"), "{msg}");
    }
}
