//! APNs sender: token-based (ES256 JWT) provider authentication over HTTP/2.
//!
//! apns-h2 was meant to supply the payload and error types, but it refuses to build without
//! either aws-lc-rs or OpenSSL (a second TLS/crypto stack next to rustls on ring) and pulls
//! its own hyper-rustls client; the two payload shapes and the error body we need are a few
//! serde structs, so they are ours.

use super::token::DeviceToken;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::jwt::{JwtSignError, JwtSigner};
use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

use super::http::{PushClient, endpoint_base, endpoint_uri, retry_after};
use super::{Outcome, PushConfigError, TokenRefreshes, scrub, unix_now};

/// Apple's production endpoint.
pub const APNS_PRODUCTION_ENDPOINT: &str = "https://api.push.apple.com";
/// Apple's development (sandbox) endpoint.
pub const APNS_SANDBOX_ENDPOINT: &str = "https://api.sandbox.push.apple.com";
/// Apple's limit on a notification body, in bytes.
pub const APNS_MAX_PAYLOAD: usize = 4096;

/// Apple wants provider tokens renewed at least hourly and at most every 20 minutes.
const TOKEN_REFRESH: Duration = Duration::from_secs(50 * 60);
/// A token younger than this is never replaced: Apple answers `TooManyProviderTokenUpdates`.
const MIN_TOKEN_AGE: Duration = Duration::from_secs(20 * 60);
/// Apple's limit on `apns-collapse-id`.
const MAX_COLLAPSE_ID: usize = 64;
/// Upper bound on a device token's hex length (Apple's are 64 today; leave room). The same
/// bound as Subscribe's (`registration`), so every accepted token can be pushed.
const MAX_DEVICE_TOKEN: usize = 512;

/// What an [`ApnsSender`] needs: the `.p8` key and its ids, the app's topic, the endpoints.
#[derive(Clone)]
pub struct ApnsSettings {
    /// The `.p8` file's content: a PKCS#8 PEM P-256 private key.
    pub key_pem: String,
    /// The key's 10-character id (`kid`).
    pub key_id: String,
    /// The developer team id (`iss`).
    pub team_id: String,
    /// The app's bundle id, sent as `apns-topic`.
    pub topic: String,
    /// Production base URL, e.g. [`APNS_PRODUCTION_ENDPOINT`].
    pub endpoint: String,
    /// Sandbox base URL, e.g. [`APNS_SANDBOX_ENDPOINT`].
    pub sandbox_endpoint: String,
    /// Extra trusted root certificate(s), PEM.
    pub ca_pem: Option<String>,
    /// Bound on one request, connect to end of answer.
    pub timeout: Duration,
}

impl std::fmt::Debug for ApnsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApnsSettings")
            .field("key_id", &self.key_id)
            .field("team_id", &self.team_id)
            .field("topic", &self.topic)
            .field("endpoint", &self.endpoint)
            .field("sandbox_endpoint", &self.sandbox_endpoint)
            .field("ca_pem", &self.ca_pem.is_some())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Which kind of notification: visible alert (message namespaces) or silent background
/// (owner-only namespaces).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApnsKind {
    /// `alert` push, priority 10, `mutable-content` so the app's extension can decrypt.
    Alert {
        /// Placeholder title shown if the extension cannot run.
        title: String,
        /// Placeholder body shown if the extension cannot run.
        body: String,
    },
    /// `background` push, priority 5, `content-available`.
    Background,
}

/// One push to one device.
#[derive(Clone, Debug)]
pub struct ApnsPush {
    /// The device token, hex.
    pub token: DeviceToken,
    /// Send to the sandbox endpoint (APNS_SANDBOX registrations).
    pub sandbox: bool,
    /// Alert or background.
    pub kind: ApnsKind,
    /// The encrypted notification (base64).
    pub enc: String,
    /// `apns-expiration`: Unix seconds after which Apple stops trying (the message's expiry).
    pub expiration: u64,
    /// `apns-collapse-id`, at most 64 bytes.
    pub collapse_id: Option<String>,
}

/// Sends pushes through APNs; cheap to share (`Arc`) between tasks.
pub struct ApnsSender {
    client: PushClient,
    production: String,
    sandbox: String,
    topic: HeaderValue,
    tokens: ProviderTokens,
}

impl std::fmt::Debug for ApnsSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApnsSender")
            .field("production", &self.production)
            .field("sandbox", &self.sandbox)
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl ApnsSender {
    /// Parses the key once, signs the first provider token and builds the HTTP/2 client.
    pub fn new(settings: ApnsSettings) -> Result<ApnsSender, PushConfigError> {
        if settings.timeout.is_zero() {
            return Err(PushConfigError::BadSetting(
                "APNs timeout must be positive".into(),
            ));
        }
        let topic = HeaderValue::from_str(&settings.topic)
            .ok()
            .filter(|_| !settings.topic.is_empty())
            .ok_or_else(|| PushConfigError::BadSetting(format!("APNs topic {:?}", settings.topic)))?;
        let tokens = ProviderTokens::new(&settings.key_pem, &settings.key_id, &settings.team_id)?;
        Ok(ApnsSender {
            client: PushClient::new(settings.ca_pem.as_deref(), settings.timeout)?,
            production: device_base(&settings.endpoint)?,
            sandbox: device_base(&settings.sandbox_endpoint)?,
            topic,
            tokens,
        })
    }

    /// Reports every re-signed provider token to `refreshes` (the metrics).
    #[must_use]
    pub fn with_token_refreshes(mut self, refreshes: TokenRefreshes) -> Self {
        self.tokens.refreshes = refreshes;
        self
    }

    /// The `apns-topic` this sender uses.
    pub fn topic(&self) -> &str {
        self.topic.to_str().unwrap_or_default()
    }

    /// Sends one push and says what became of it.
    pub async fn send(&self, push: &ApnsPush) -> Outcome {
        if push.token.is_empty()
            || push.token.len() > MAX_DEVICE_TOKEN
            || !push.token.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Outcome::TokenDead {
                reason: "malformed APNs device token".into(),
            };
        }
        if push
            .collapse_id
            .as_ref()
            .is_some_and(|id| id.len() > MAX_COLLAPSE_ID)
        {
            return Outcome::Failed {
                reason: "apns-collapse-id longer than 64 bytes".into(),
            };
        }
        let jwt = match self.tokens.current() {
            Ok(jwt) => jwt,
            Err(err) => {
                return Outcome::ConfigError {
                    reason: format!("cannot sign APNs provider token: {err}"),
                };
            }
        };
        let base = if push.sandbox {
            &self.sandbox
        } else {
            &self.production
        };
        let (push_type, priority) = match push.kind {
            ApnsKind::Alert { .. } => ("alert", "10"),
            ApnsKind::Background => ("background", "5"),
        };
        // The token is hex (checked above) and `new` checked both bases with a token path,
        // so this cannot fail; were it to, the push fails, not the device's registration.
        let Ok(uri) = device_uri(base, push.token.as_str()) else {
            return Outcome::Failed {
                reason: "the APNs endpoint makes no valid request URI".into(),
            };
        };
        let headers = match self.headers(&jwt, push_type, priority, push) {
            Ok(headers) => headers,
            Err(reason) => return Outcome::Failed { reason },
        };
        let body = Bytes::from(payload(&push.kind, &push.enc));
        let response = match self.client.post(uri, headers, body).await {
            Ok(response) => response,
            Err(err) => {
                return Outcome::Retry {
                    after: None,
                    reason: scrub(&err.describe(), &push.token),
                };
            }
        };
        let status = response.status.as_u16();
        if status == 200 {
            return Outcome::Delivered;
        }
        let after = retry_after(&response.headers);
        let reason = serde_json::from_slice::<ErrorBody>(&response.body)
            .ok()
            .map(|b| scrub(&b.reason, &push.token));
        if reason.as_deref() == Some("ExpiredProviderToken") {
            self.tokens.expire();
        }
        classify(status, reason.as_deref(), after)
    }

    /// The header fields of one push; a collapse id that is no header value is refused.
    fn headers(
        &self,
        jwt: &str,
        push_type: &'static str,
        priority: &'static str,
        push: &ApnsPush,
    ) -> Result<HeaderMap, String> {
        let mut headers = HeaderMap::with_capacity(7);
        let mut bearer = HeaderValue::try_from(format!("bearer {jwt}"))
            .map_err(|_| "APNs provider token is no header value".to_owned())?;
        // Never put into HPACK's dynamic table.
        bearer.set_sensitive(true);
        headers.insert(AUTHORIZATION, bearer);
        headers.insert(HeaderName::from_static("apns-topic"), self.topic.clone());
        headers.insert(
            HeaderName::from_static("apns-push-type"),
            HeaderValue::from_static(push_type),
        );
        headers.insert(
            HeaderName::from_static("apns-priority"),
            HeaderValue::from_static(priority),
        );
        headers.insert(
            HeaderName::from_static("apns-expiration"),
            HeaderValue::from(push.expiration),
        );
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(id) = &push.collapse_id {
            let id = HeaderValue::try_from(id.as_str())
                .map_err(|_| "apns-collapse-id is not a valid header value".to_owned())?;
            headers.insert(HeaderName::from_static("apns-collapse-id"), id);
        }
        Ok(headers)
    }
}

/// An endpoint base (as [`endpoint_base`] checks it) that also makes a valid request URI
/// with a device path, so a push never finds out that it does not.
fn device_base(endpoint: &str) -> Result<String, PushConfigError> {
    let base = endpoint_base(endpoint)?;
    device_uri(&base, "00").map_err(|e| PushConfigError::BadEndpoint(format!("{endpoint:?}: {e}")))?;
    Ok(base)
}

/// The request URI of a push to the device `token` (hex).
fn device_uri(base: &str, token: &str) -> Result<http::Uri, http::uri::InvalidUri> {
    endpoint_uri(base, &format!("/3/device/{token}"))
}

/// The request body, exactly DESIGN.md's shape.
fn payload(kind: &ApnsKind, enc: &str) -> Vec<u8> {
    let aps = match kind {
        ApnsKind::Alert { title, body } => Aps::Alert {
            alert: Alert { title, body },
            mutable_content: 1,
        },
        ApnsKind::Background => Aps::Background { content_available: 1 },
    };
    // Serialising plain strings and integers into a Vec cannot fail.
    serde_json::to_vec(&Payload { aps, enc }).expect("APNs payload serialises")
}

/// The longest `enc` whose body still fits Apple's 4096 bytes for `kind`. `enc` is base64,
/// which JSON never escapes, so every byte of it costs one byte of body.
pub fn apns_max_enc_len(kind: &ApnsKind) -> usize {
    APNS_MAX_PAYLOAD.saturating_sub(payload(kind, "").len())
}

/// Maps Apple's answer to what the notifier does.
fn classify(status: u16, reason: Option<&str>, after: Option<Duration>) -> Outcome {
    const DEAD: [&str; 4] = [
        "BadDeviceToken",
        "Unregistered",
        "DeviceTokenNotForTopic",
        "ExpiredToken",
    ];
    const CONFIG: [&str; 13] = [
        "TopicDisallowed",
        "BadTopic",
        "MissingTopic",
        "BadCertificate",
        "BadCertificateEnvironment",
        "BadEnvironmentKeyIdInToken",
        "UnrelatedKeyIdInToken",
        "InvalidProviderToken",
        "MissingProviderToken",
        "ExpiredProviderToken",
        "Forbidden",
        "BadPath",
        "MethodNotAllowed",
    ];
    let text = format!("APNs {status} {}", reason.unwrap_or("(no reason)"));
    let reason = reason.unwrap_or("");
    if status == 410 || DEAD.contains(&reason) {
        Outcome::TokenDead { reason: text }
    } else if status == 429 || status >= 500 {
        Outcome::Retry { after, reason: text }
    } else if CONFIG.contains(&reason) || matches!(status, 401 | 403 | 404 | 405) {
        Outcome::ConfigError { reason: text }
    } else {
        Outcome::Failed { reason: text }
    }
}

#[derive(Serialize)]
struct Payload<'a> {
    aps: Aps<'a>,
    enc: &'a str,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Aps<'a> {
    Alert {
        alert: Alert<'a>,
        #[serde(rename = "mutable-content")]
        mutable_content: u8,
    },
    Background {
        #[serde(rename = "content-available")]
        content_available: u8,
    },
}

#[derive(Serialize)]
struct Alert<'a> {
    title: &'a str,
    body: &'a str,
}

#[derive(Deserialize)]
struct ErrorBody {
    reason: String,
}

/// The provider token: signed once, shared by every request, re-signed every
/// [`TOKEN_REFRESH`] (never per request: Apple throttles token changes).
struct ProviderTokens {
    signer: JwtSigner,
    team_id: String,
    current: Mutex<SignedToken>,
    refreshes: TokenRefreshes,
}

struct SignedToken {
    jwt: Arc<str>,
    signed_at: Instant,
    stale: bool,
}

#[derive(Serialize)]
struct ProviderClaims<'a> {
    iss: &'a str,
    iat: u64,
}

impl ProviderTokens {
    fn new(key_pem: &str, key_id: &str, team_id: &str) -> Result<ProviderTokens, PushConfigError> {
        if key_id.is_empty() || team_id.is_empty() {
            return Err(PushConfigError::BadSetting(
                "APNs key_id and team_id are required".into(),
            ));
        }
        let signer = JwtSigner::es256_from_pem(key_pem, Some(key_id))
            .map_err(|e| PushConfigError::BadKey(format!("APNs .p8 key: {e}")))?;
        let mut tokens = ProviderTokens {
            signer,
            team_id: team_id.to_owned(),
            refreshes: TokenRefreshes::default(),
            current: Mutex::new(SignedToken {
                jwt: Arc::from(""),
                signed_at: Instant::now(),
                stale: true,
            }),
        };
        // Signing now proves the key really is a P-256 key before the first push.
        let first = tokens
            .sign()
            .map_err(|e| PushConfigError::BadKey(format!("APNs .p8 key: {e}")))?;
        *tokens
            .current
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = first;
        Ok(tokens)
    }

    fn sign(&self) -> Result<SignedToken, JwtSignError> {
        let claims = ProviderClaims {
            iss: &self.team_id,
            iat: unix_now(),
        };
        let jwt = self.signer.sign(&claims)?;
        Ok(SignedToken {
            jwt: Arc::from(jwt),
            signed_at: Instant::now(),
            stale: false,
        })
    }

    /// The token to use now; re-signed under the lock, so concurrent senders sign once.
    fn current(&self) -> Result<Arc<str>, JwtSignError> {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.stale || current.signed_at.elapsed() >= TOKEN_REFRESH {
            let signed = self.sign();
            self.refreshes.record(signed.is_ok());
            *current = signed?;
        }
        Ok(current.jwt.clone())
    }

    /// Apple called the token expired (clock skew): re-sign on next use, unless that would
    /// change it sooner than Apple allows.
    fn expire(&self) {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.signed_at.elapsed() >= MIN_TOKEN_AGE {
            current.stale = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_have_exactly_designs_shape() {
        let alert = ApnsKind::Alert {
            title: "New message".into(),
            body: "Open to read".into(),
        };
        assert_eq!(
            String::from_utf8(payload(&alert, "ENC")).unwrap(),
            r#"{"aps":{"alert":{"title":"New message","body":"Open to read"},"mutable-content":1},"enc":"ENC"}"#
        );
        assert_eq!(
            String::from_utf8(payload(&ApnsKind::Background, "ENC")).unwrap(),
            r#"{"aps":{"content-available":1},"enc":"ENC"}"#
        );
    }

    #[test]
    fn max_enc_len_fills_the_payload_exactly() {
        for kind in [
            ApnsKind::Alert {
                title: "t\"é".into(),
                body: "b".into(),
            },
            ApnsKind::Background,
        ] {
            let max = apns_max_enc_len(&kind);
            assert_eq!(payload(&kind, &"A".repeat(max)).len(), APNS_MAX_PAYLOAD);
        }
    }

    #[test]
    fn answers_map_to_outcomes() {
        let dead = |o: Outcome| matches!(o, Outcome::TokenDead { .. });
        let config = |o: Outcome| matches!(o, Outcome::ConfigError { .. });
        let failed = |o: Outcome| matches!(o, Outcome::Failed { .. });
        assert!(dead(classify(410, Some("Unregistered"), None)));
        assert!(dead(classify(410, Some("ExpiredToken"), None)));
        assert!(dead(classify(400, Some("BadDeviceToken"), None)));
        assert!(dead(classify(400, Some("DeviceTokenNotForTopic"), None)));
        assert_eq!(
            classify(429, Some("TooManyRequests"), Some(Duration::from_secs(3))),
            Outcome::Retry {
                after: Some(Duration::from_secs(3)),
                reason: "APNs 429 TooManyRequests".into()
            }
        );
        assert!(matches!(
            classify(503, None, None),
            Outcome::Retry { after: None, .. }
        ));
        assert!(matches!(
            classify(500, Some("InternalServerError"), None),
            Outcome::Retry { .. }
        ));
        assert!(config(classify(403, Some("InvalidProviderToken"), None)));
        assert!(config(classify(403, Some("ExpiredProviderToken"), None)));
        assert!(config(classify(400, Some("TopicDisallowed"), None)));
        assert!(config(classify(400, Some("BadTopic"), None)));
        assert!(config(classify(404, Some("BadPath"), None)));
        assert!(failed(classify(413, Some("PayloadTooLarge"), None)));
        assert!(failed(classify(400, Some("BadPriority"), None)));
        assert!(failed(classify(400, None, None)));
    }

    fn test_key() -> String {
        tidings_mock_push::ApnsKey::generate("KEYID12345", "TEAM123456").private_key_pem
    }

    #[test]
    fn provider_token_is_reused_then_renewed() {
        let tokens = ProviderTokens::new(&test_key(), "KEYID12345", "TEAM123456").unwrap();
        let first = tokens.current().unwrap();
        assert!(
            Arc::ptr_eq(&first, &tokens.current().unwrap()),
            "no re-signing per request"
        );
        tokens.expire();
        assert!(
            Arc::ptr_eq(&first, &tokens.current().unwrap()),
            "too young to replace"
        );
        let old = Instant::now().checked_sub(TOKEN_REFRESH).unwrap();
        tokens.current.lock().unwrap().signed_at = old;
        assert!(
            !Arc::ptr_eq(&first, &tokens.current().unwrap()),
            "renewed after 50 minutes"
        );
        assert_eq!(
            crate::push::jwt::header_json(&tokens.current().unwrap()),
            serde_json::json!({"typ": "JWT", "alg": "ES256", "kid": "KEYID12345"})
        );
    }

    #[test]
    fn bad_keys_and_settings_are_refused() {
        assert!(matches!(
            ProviderTokens::new("not a key", "K", "T"),
            Err(PushConfigError::BadKey(_))
        ));
        let rsa = tidings_mock_push::RsaKey::shared().private_key_pem.clone();
        assert!(matches!(
            ProviderTokens::new(&rsa, "K", "T"),
            Err(PushConfigError::BadKey(_))
        ));
        let settings = |topic: &str, endpoint: &str| ApnsSettings {
            key_pem: test_key(),
            key_id: "KEYID12345".into(),
            team_id: "TEAM123456".into(),
            topic: topic.into(),
            endpoint: endpoint.into(),
            sandbox_endpoint: APNS_SANDBOX_ENDPOINT.into(),
            ca_pem: None,
            timeout: Duration::from_secs(5),
        };
        assert!(ApnsSender::new(settings("com.example", APNS_PRODUCTION_ENDPOINT)).is_ok());
        assert!(matches!(
            ApnsSender::new(settings("", APNS_PRODUCTION_ENDPOINT)),
            Err(PushConfigError::BadSetting(_))
        ));
        assert!(matches!(
            ApnsSender::new(settings("x", "ftp://x")),
            Err(PushConfigError::BadEndpoint(_))
        ));
    }
}
