//! The JWTs the mocks check (APNs provider tokens, ES256; FCM service-account assertions,
//! RS256), verified with `ring`, and a signer for tests that need to forge or vary them.
//!
//! Written here rather than with `jsonwebtoken`, whose pure-Rust backend links the `rsa`
//! crate (RUSTSEC-2023-0071): with this module nothing in the workspace needs `rsa`. Only
//! what the real services check is checked: the header's `alg` (and the caller checks
//! `kid`), the signature over `header.claims`, and the claims' JSON shape; time and
//! audience rules are the callers'.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use p256::pkcs8::DecodePublicKey as _;
use ring::signature::{self, UnparsedPublicKey};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// Why a public key in a mock's configuration cannot verify tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

/// A JWS algorithm the mocks know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// ECDSA P-256 with SHA-256, the signature as r ‖ s (APNs).
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (Google's OAuth assertions).
    Rs256,
}

impl Alg {
    fn name(self) -> &'static str {
        match self {
            Alg::Es256 => "ES256",
            Alg::Rs256 => "RS256",
        }
    }
}

/// A token's header, as far as the mocks read it.
#[derive(Debug, Deserialize)]
pub(crate) struct Header {
    pub alg: String,
    #[serde(default)]
    pub kid: Option<String>,
}

/// The public half of a signing key, from its SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
pub(crate) struct VerifyingKey {
    alg: Alg,
    key: UnparsedPublicKey<Vec<u8>>,
}

impl VerifyingKey {
    /// A P-256 public key, for ES256.
    pub fn es256_from_pem(pem: &str) -> Result<VerifyingKey, KeyError> {
        let key = p256::PublicKey::from_public_key_pem(pem.trim())
            .map_err(|e| KeyError(format!("not a P-256 public key (SPKI PEM): {e}")))?;
        // ring takes the uncompressed point, which is what SPKI carries for P-256.
        let point = p256::EncodedPoint::from(key).as_bytes().to_vec();
        Ok(VerifyingKey {
            alg: Alg::Es256,
            key: UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point),
        })
    }

    /// An RSA public key, for RS256.
    pub fn rs256_from_pem(pem: &str) -> Result<VerifyingKey, KeyError> {
        use spki::der::Decode as _;
        const RSA_ENCRYPTION: spki::ObjectIdentifier =
            spki::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
        let (label, der) = pem_rfc7468::decode_vec(pem.trim().as_bytes())
            .map_err(|e| KeyError(format!("not a PEM public key: {e}")))?;
        if label != "PUBLIC KEY" {
            return Err(KeyError(format!(
                "PEM label {label:?}, expected \"PUBLIC KEY\" (SPKI)"
            )));
        }
        let info = spki::SubjectPublicKeyInfoRef::from_der(&der)
            .map_err(|e| KeyError(format!("not an SPKI public key: {e}")))?;
        if info.algorithm.oid != RSA_ENCRYPTION {
            return Err(KeyError("not an RSA public key".to_owned()));
        }
        // ring takes the PKCS#1 RSAPublicKey, the content of SPKI's bit string.
        let pkcs1 = info
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| KeyError("malformed RSA public key".to_owned()))?
            .to_vec();
        Ok(VerifyingKey {
            alg: Alg::Rs256,
            key: UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, pkcs1),
        })
    }

    /// The claims of `jwt` if its header names this key's algorithm and its signature is
    /// valid; `None` otherwise (the mocks answer every such failure alike).
    pub fn verify<C: DeserializeOwned>(&self, jwt: &str) -> Option<C> {
        let header = decode_header(jwt)?;
        if header.alg != self.alg.name() {
            return None;
        }
        let (input, sig) = jwt.rsplit_once('.')?;
        let (_, claims) = input.split_once('.')?;
        let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
        self.key.verify(input.as_bytes(), &sig).ok()?;
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).ok()?).ok()
    }
}

/// The header of a compact JWS with three parts, unverified.
pub(crate) fn decode_header(jwt: &str) -> Option<Header> {
    let mut parts = jwt.split('.');
    let header = parts.next()?;
    if parts.count() != 2 {
        return None;
    }
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()
}

/// Signs `claims` as a compact JWS with a PKCS#8 PEM private key (`-----BEGIN PRIVATE
/// KEY-----`: an APNs `.p8` for ES256, a service account's `private_key` for RS256).
///
/// For tests and demos that play the sender; panics on a key that does not fit `alg`.
pub fn sign(alg: Alg, private_key_pem: &str, kid: Option<&str>, claims: &serde_json::Value) -> String {
    let (label, der) = pem_rfc7468::decode_vec(private_key_pem.trim().as_bytes()).expect("PEM private key");
    assert_eq!(label, "PRIVATE KEY", "a PKCS#8 private key");
    let mut header = serde_json::json!({"typ": "JWT", "alg": alg.name()});
    if let Some(kid) = kid {
        header["kid"] = kid.into();
    }
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let rng = ring::rand::SystemRandom::new();
    let sig = match alg {
        Alg::Es256 => {
            let pair =
                signature::EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng)
                    .expect("a PKCS#8 P-256 key");
            pair.sign(&rng, input.as_bytes())
                .expect("ECDSA signing")
                .as_ref()
                .to_vec()
        }
        Alg::Rs256 => {
            let pair = signature::RsaKeyPair::from_pkcs8(&der).expect("a PKCS#8 RSA key");
            let mut out = vec![0u8; pair.public().modulus_len()];
            pair.sign(&signature::RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut out)
                .expect("RSA signing");
            out
        }
    };
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{ApnsKey, RsaKey};
    use serde_json::{Value, json};

    #[test]
    fn es256_tokens_round_trip_and_tampering_fails() {
        let key = ApnsKey::generate("KEYID12345", "TEAM123456");
        let verifier = VerifyingKey::es256_from_pem(&key.public_key_pem).unwrap();
        let claims = json!({"iss": "TEAM123456", "iat": 1_700_000_000u64});
        let jwt = sign(Alg::Es256, &key.private_key_pem, Some("KEYID12345"), &claims);
        let header = decode_header(&jwt).unwrap();
        assert_eq!(
            (header.alg.as_str(), header.kid.as_deref()),
            ("ES256", Some("KEYID12345"))
        );
        assert_eq!(verifier.verify::<Value>(&jwt), Some(claims));

        // Another key's signature, changed claims, an RS256 token: all refused.
        let other = ApnsKey::generate("KEYID12345", "TEAM123456");
        let forged = sign(Alg::Es256, &other.private_key_pem, Some("KEYID12345"), &json!({}));
        assert_eq!(verifier.verify::<Value>(&forged), None);
        let (h, rest) = jwt.split_once('.').unwrap();
        let (_, s) = rest.split_once('.').unwrap();
        let swapped = format!("{h}.{}.{s}", URL_SAFE_NO_PAD.encode(br#"{"iss":"X","iat":1}"#));
        assert_eq!(verifier.verify::<Value>(&swapped), None);
        let rs = sign(Alg::Rs256, &RsaKey::shared().private_key_pem, None, &json!({}));
        assert_eq!(verifier.verify::<Value>(&rs), None);
    }

    #[test]
    fn rs256_tokens_round_trip_and_tampering_fails() {
        let key = RsaKey::shared();
        let verifier = VerifyingKey::rs256_from_pem(&key.public_key_pem).unwrap();
        let claims = json!({"iss": "svc@example", "aud": "a", "iat": 1, "exp": 2});
        let jwt = sign(Alg::Rs256, &key.private_key_pem, Some("kid"), &claims);
        assert_eq!(verifier.verify::<Value>(&jwt), Some(claims));
        // One signature character changed (not the last, whose low bits are padding).
        let mut bad = jwt.clone().into_bytes();
        let at = bad.len() - 10;
        bad[at] = if bad[at] == b'A' { b'B' } else { b'A' };
        let bad = String::from_utf8(bad).unwrap();
        assert_eq!(verifier.verify::<Value>(&bad), None);
        assert_eq!(verifier.verify::<Value>("a.b"), None);
        assert_eq!(verifier.verify::<Value>("a.b.c.d"), None);
    }

    #[test]
    fn keys_of_the_wrong_kind_are_refused() {
        let ec = ApnsKey::generate("K", "T");
        assert!(VerifyingKey::rs256_from_pem(&ec.public_key_pem).is_err());
        assert!(VerifyingKey::es256_from_pem(&RsaKey::shared().public_key_pem).is_err());
        assert!(VerifyingKey::rs256_from_pem(&RsaKey::shared().private_key_pem).is_err());
        assert!(VerifyingKey::es256_from_pem("not a key").is_err());
    }
}
