//! RFC 8292 VAPID: the relay identifies itself to Web Push services with an ES256 JWT
//! per endpoint origin, signed by the app's key, whose public half clients gave the push
//! service when they subscribed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use p256::ecdsa::{Signature, SigningKey, signature::Signer};
use p256::pkcs8::DecodePrivateKey;

use super::super::unix_now;

/// How long a token is valid (RFC 8292 allows up to 24 hours).
const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// A cached token is replaced this long before it expires.
const RENEW_BEFORE: Duration = Duration::from_secs(3600);
/// Origins are chosen by clients: the cache forgets everything past this many.
const MAX_CACHED_ORIGINS: usize = 4096;

/// The VAPID key is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a P-256 private key in PEM (PKCS#8 \"PRIVATE KEY\" or SEC1 \"EC PRIVATE KEY\"): {0}")]
pub struct VapidKeyError(String);

/// An app's VAPID key pair.
#[derive(Clone)]
pub struct VapidKey {
    signing: SigningKey,
    public: [u8; 65],
}

impl std::fmt::Debug for VapidKey {
    // The private key is a secret; the public one is published anyway.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VapidKey")
            .field("public", &URL_SAFE_NO_PAD.encode(self.public))
            .finish_non_exhaustive()
    }
}

impl VapidKey {
    /// Reads a P-256 private key from PEM: PKCS#8 (`openssl genpkey`) or SEC1
    /// (`openssl ecparam -genkey`).
    pub fn from_pem(pem: &str) -> Result<Self, VapidKeyError> {
        let secret = p256::SecretKey::from_pkcs8_pem(pem)
            .or_else(|_| p256::SecretKey::from_sec1_pem(pem))
            .map_err(|e| VapidKeyError(e.to_string()))?;
        let point = secret.public_key().to_sec1_bytes();
        let public: [u8; 65] = point
            .as_ref()
            .try_into()
            .map_err(|_| VapidKeyError("public key is not an uncompressed point".into()))?;
        Ok(Self {
            signing: SigningKey::from(secret),
            public,
        })
    }

    /// The public key clients pass to their push service: an uncompressed P-256 point.
    pub fn public_key(&self) -> &[u8; 65] {
        &self.public
    }

    /// A signed JWT for `aud` (an origin) that expires at `exp` (Unix seconds).
    fn jwt(&self, aud: &str, sub: &str, exp: u64) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = serde_json::json!({ "aud": aud, "exp": exp, "sub": sub });
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let input = format!("{header}.{claims}");
        let signature: Signature = self.signing.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }
}

/// `Authorization: vapid t=…, k=…` values per origin, signed once and cached until near
/// expiry.
pub struct VapidTokens {
    key: VapidKey,
    subject: String,
    public_b64: String,
    cache: Mutex<HashMap<String, Cached>>,
}

struct Cached {
    header: Arc<str>,
    renew_at: Instant,
}

impl std::fmt::Debug for VapidTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VapidTokens")
            .field("key", &self.key)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl VapidTokens {
    /// Tokens signed by `key` naming `subject` (a `mailto:` or `https:` contact).
    pub fn new(key: VapidKey, subject: &str) -> Self {
        Self {
            public_b64: URL_SAFE_NO_PAD.encode(key.public_key()),
            key,
            subject: subject.to_owned(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The key.
    pub fn key(&self) -> &VapidKey {
        &self.key
    }

    /// The `Authorization` header value for a request to `origin`
    /// (`https://host[:port]`).
    pub fn authorization(&self, origin: &str) -> Arc<str> {
        let now = Instant::now();
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = cache.get(origin).filter(|c| now < c.renew_at) {
            return c.header.clone();
        }
        if cache.len() >= MAX_CACHED_ORIGINS {
            cache.retain(|_, c| now < c.renew_at);
            if cache.len() >= MAX_CACHED_ORIGINS {
                cache.clear();
            }
        }
        let exp = unix_now() + LIFETIME.as_secs();
        let jwt = self.key.jwt(origin, &self.subject, exp);
        let header: Arc<str> = Arc::from(format!("vapid t={jwt}, k={}", self.public_b64));
        cache.insert(
            origin.to_owned(),
            Cached {
                header: header.clone(),
                renew_at: now + LIFETIME - RENEW_BEFORE,
            },
        );
        header
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::{VerifyingKey, signature::Verifier};

    pub(crate) fn test_key_pem() -> String {
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .unwrap()
            .serialize_pem()
    }

    #[test]
    fn tokens_verify_with_the_published_key_and_are_cached_per_origin() {
        let key = VapidKey::from_pem(&test_key_pem()).unwrap();
        let tokens = VapidTokens::new(key.clone(), "mailto:ops@example.com");
        let a = tokens.authorization("https://push.example.com");
        assert!(Arc::ptr_eq(&a, &tokens.authorization("https://push.example.com")));
        assert!(!Arc::ptr_eq(&a, &tokens.authorization("https://other.example")));
        let (t, k) = a
            .strip_prefix("vapid t=")
            .and_then(|r| r.split_once(", k="))
            .unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(k).unwrap(), key.public_key());
        let (input, sig) = t.rsplit_once('.').unwrap();
        let verifier = VerifyingKey::from_sec1_bytes(key.public_key()).unwrap();
        let sig = Signature::from_slice(&URL_SAFE_NO_PAD.decode(sig).unwrap()).unwrap();
        verifier.verify(input.as_bytes(), &sig).unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(input.split_once('.').unwrap().1).unwrap())
                .unwrap();
        assert_eq!(claims["aud"], "https://push.example.com");
        assert_eq!(claims["sub"], "mailto:ops@example.com");
        let exp = claims["exp"].as_u64().unwrap();
        assert!(exp > unix_now() + 11 * 3600 && exp <= unix_now() + 12 * 3600);
    }

    #[test]
    fn keys_are_read_from_pkcs8_and_sec1_pem() {
        let pem = test_key_pem();
        let from_pkcs8 = VapidKey::from_pem(&pem).unwrap();
        let secret = p256::SecretKey::from_pkcs8_pem(&pem).unwrap();
        let sec1 = secret.to_sec1_pem(p256::pkcs8::LineEnding::LF).unwrap();
        assert_eq!(
            VapidKey::from_pem(&sec1).unwrap().public_key(),
            from_pkcs8.public_key()
        );
        assert!(VapidKey::from_pem("garbage").is_err());
        let rsa = "-----BEGIN PRIVATE KEY-----\nMIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEA\n-----END PRIVATE KEY-----\n";
        assert!(VapidKey::from_pem(rsa).is_err());
        assert!(!format!("{from_pkcs8:?}").contains("signing"));
    }
}
