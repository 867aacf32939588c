//! Web Push sender (RFC 8030 delivery, RFC 8291 encryption, RFC 8292 VAPID): how
//! UnifiedPush distributors (ntfy, NextPush, Sunup) and browsers are reached.
//!
//! The body is the push's `enc` string (already the padded `PushNotification` encrypted
//! under the device's push key), encrypted once more for the subscription with
//! `aes128gcm`; the push service sees only ciphertext either way. Endpoints are chosen by
//! clients, so each one passes the SSRF guard ([`endpoint`], [`resolve`]) before any
//! connection, redirects are never followed and answers are read only up to a small bound.

pub mod ece;
pub mod endpoint;
pub mod resolve;
pub mod vapid;

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};

use super::http::{describe_transport_error, retry_after, tls_config};
use super::{Delivery, Outcome, PushConfigError, scrub};
pub use endpoint::{EndpointError, EndpointPolicy, MAX_ENDPOINT_LEN};
use resolve::{ClientResolver, Guard, Refusal};
pub use resolve::{HostResolver, SystemResolver};
pub use vapid::{VapidKey, VapidKeyError, VapidTokens};

/// The largest request body push services accept (RFC 8030 section 7.2 asks for at least
/// 4096 bytes of payload; Mozilla, Google and Apple take no more).
pub const WEBPUSH_MAX_BODY: usize = 4096;
/// The longest `enc` that still fits [`WEBPUSH_MAX_BODY`] once encrypted.
pub const WEBPUSH_MAX_ENC_LEN: usize = WEBPUSH_MAX_BODY - ece::OVERHEAD;
/// Push services keep a message at most about four weeks.
pub const WEBPUSH_MAX_TTL_S: u64 = 28 * 24 * 3600;
/// The most of an answer's body the sender reads (for the log).
const MAX_ANSWER: usize = 1024;
/// The longest `Topic` (RFC 8030 section 5.4).
const MAX_TOPIC: usize = 32;

/// A validated Web Push subscription.
#[derive(Clone, PartialEq, Eq)]
pub struct WebPushTarget {
    /// The push resource URL.
    pub endpoint: String,
    /// The subscriber's P-256 key, uncompressed.
    pub p256dh: [u8; ece::P256DH_LEN],
    /// The subscriber's authentication secret.
    pub auth: [u8; ece::AUTH_LEN],
}

impl std::fmt::Debug for WebPushTarget {
    // The endpoint is as secret as a device token, the keys more so.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebPushTarget").finish_non_exhaustive()
    }
}

/// How urgently the push service should deliver (RFC 8030 section 5.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Urgency {
    /// Messages: deliver now, even to a device saving battery.
    High,
    /// Config changes.
    Normal,
}

impl Urgency {
    fn header(self) -> &'static str {
        match self {
            Urgency::High => "high",
            Urgency::Normal => "normal",
        }
    }
}

/// One push to one subscription.
#[derive(Clone, Debug)]
pub struct WebPushPush {
    /// Where, and for whom it is encrypted.
    pub target: WebPushTarget,
    /// The plaintext: the `enc` string.
    pub payload: Vec<u8>,
    /// `Urgency`.
    pub urgency: Urgency,
    /// `TTL`, in seconds.
    pub ttl_s: u64,
    /// `Topic`: a later push with the same topic replaces an undelivered one.
    pub topic: Option<String>,
}

/// What a [`WebPushSender`] needs.
#[derive(Clone)]
pub struct WebPushSettings {
    /// The app's VAPID private key (PEM).
    pub vapid_key_pem: String,
    /// The VAPID `sub`: a `mailto:` or `https:` contact for the push services.
    pub subject: String,
    /// Which endpoints may be reached.
    pub policy: EndpointPolicy,
    /// Extra trusted root certificate(s), PEM.
    pub ca_pem: Option<String>,
    /// Bound on one request, connect to end of answer.
    pub timeout: Duration,
}

impl std::fmt::Debug for WebPushSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebPushSettings")
            .field("subject", &self.subject)
            .field("policy", &self.policy)
            .field("ca_pem", &self.ca_pem.is_some())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Sends Web Push messages for one app; cheap to share (`Arc`) between tasks.
pub struct WebPushSender {
    client: reqwest::Client,
    vapid: VapidTokens,
    guard: Arc<Guard>,
}

impl std::fmt::Debug for WebPushSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebPushSender")
            .field("vapid", &self.vapid)
            .finish_non_exhaustive()
    }
}

impl WebPushSender {
    /// Parses the VAPID key and builds the client, resolving through the system resolver.
    pub fn new(settings: WebPushSettings) -> Result<Self, PushConfigError> {
        Self::with_resolver(settings, Arc::new(SystemResolver))
    }

    /// [`WebPushSender::new`] resolving host names with `resolver`.
    pub fn with_resolver(
        settings: WebPushSettings,
        resolver: Arc<dyn HostResolver>,
    ) -> Result<Self, PushConfigError> {
        if settings.timeout.is_zero() {
            return Err(PushConfigError::BadSetting(
                "Web Push timeout must be positive".into(),
            ));
        }
        let key = VapidKey::from_pem(&settings.vapid_key_pem)
            .map_err(|e| PushConfigError::BadKey(format!("VAPID key: {e}")))?;
        check_subject(&settings.subject).map_err(PushConfigError::BadSetting)?;
        let guard = Arc::new(Guard::new(settings.policy.clone(), resolver));
        let tls = tls_config(settings.ca_pem.as_deref(), &[b"h2", b"http/1.1"])?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            // A proxy would resolve (and reach) whatever the endpoint names: never.
            .no_proxy()
            .dns_resolver(Arc::new(ClientResolver(Arc::clone(&guard))))
            .redirect(reqwest::redirect::Policy::none())
            .https_only(!settings.policy.allows_http())
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .timeout(settings.timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .user_agent(concat!("tidings-relay/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| PushConfigError::Http(e.to_string()))?;
        Ok(Self {
            client,
            vapid: VapidTokens::new(key, &settings.subject),
            guard,
        })
    }

    /// The VAPID public key clients give their push service (65 bytes).
    pub fn vapid_public_key(&self) -> [u8; 65] {
        *self.vapid.key().public_key()
    }

    /// The endpoint policy in force.
    pub fn policy(&self) -> &EndpointPolicy {
        self.guard.policy()
    }

    /// Sends one push. An endpoint the policy refuses is a dead subscription, and nothing
    /// is sent; 413 asks the caller to send a smaller payload.
    pub async fn send(&self, push: &WebPushPush) -> Delivery {
        let endpoint = push.target.endpoint.as_str();
        let url = match self.guard.check(endpoint).await {
            Ok(url) => url,
            Err(refusal @ Refusal::Policy(_)) => {
                return Delivery::Done(Outcome::TokenDead {
                    reason: refusal.to_string(),
                });
            }
            Err(refusal @ Refusal::Dns(_)) => {
                return Delivery::Done(Outcome::Retry {
                    after: None,
                    reason: refusal.to_string(),
                });
            }
        };
        let body = match ece::encrypt(&push.target.p256dh, &push.target.auth, &push.payload) {
            Ok(body) => body,
            Err(ece::EceError::BadKey) => {
                return Delivery::Done(Outcome::TokenDead {
                    reason: "web push subscription key p256dh is unusable".into(),
                });
            }
            Err(e @ ece::EceError::TooLong(_)) => {
                return Delivery::TooLarge {
                    reason: e.to_string(),
                };
            }
            Err(e @ ece::EceError::Random) => {
                return Delivery::Done(Outcome::Retry {
                    after: None,
                    reason: e.to_string(),
                });
            }
        };
        if body.len() > WEBPUSH_MAX_BODY {
            return Delivery::TooLarge {
                reason: format!(
                    "encrypted body of {} bytes exceeds {WEBPUSH_MAX_BODY}",
                    body.len()
                ),
            };
        }
        let origin = url.origin().ascii_serialization();
        // Answers may quote the push resource; its path is the subscription's secret.
        let secret_path = (url.path().len() > 8).then(|| url.path().to_owned());
        let mut request = self
            .client
            .post(url)
            .header(AUTHORIZATION, &*self.vapid.authorization(&origin))
            .header("ttl", push.ttl_s.min(WEBPUSH_MAX_TTL_S).to_string())
            .header("urgency", push.urgency.header())
            .header(CONTENT_ENCODING, "aes128gcm")
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(body);
        if let Some(topic) = push.topic.as_deref().filter(|t| valid_topic(t)) {
            request = request.header("topic", topic);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) => {
                return Delivery::Done(Outcome::Retry {
                    after: None,
                    reason: scrub(&describe_transport_error(err), endpoint),
                });
            }
        };
        let status = response.status().as_u16();
        let after = retry_after(response.headers());
        let mut text = scrub(&bounded_text(response).await, endpoint);
        if let Some(path) = &secret_path {
            text = scrub(&text, path);
        }
        classify(status, after, &text)
    }
}

/// RFC 8292 asks for a contact: `mailto:` or an `https:` URL.
fn check_subject(subject: &str) -> Result<(), String> {
    let ok = subject
        .strip_prefix("mailto:")
        .or_else(|| subject.strip_prefix("https://"))
        .is_some_and(|rest| !rest.trim().is_empty());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "VAPID subject must be a mailto: or https:// contact (got {subject:?})"
        ))
    }
}

/// RFC 8030 section 5.4: at most 32 characters of the URL-safe base64 alphabet.
fn valid_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= MAX_TOPIC
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The start of an answer's body, as text, reading no more than [`MAX_ANSWER`] bytes.
async fn bounded_text(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < MAX_ANSWER {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk[..chunk.len().min(MAX_ANSWER - body.len())]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&body).trim().to_owned()
}

/// Maps a push service's answer to what the notifier does.
fn classify(status: u16, after: Option<Duration>, text: &str) -> Delivery {
    let reason = if text.is_empty() {
        format!("Web Push {status}")
    } else {
        format!("Web Push {status}: {text}")
    };
    let outcome = match status {
        200..=299 => Outcome::Delivered,
        404 | 410 => Outcome::TokenDead { reason },
        413 => return Delivery::TooLarge { reason },
        429 | 500..=599 => Outcome::Retry { after, reason },
        300..=399 => Outcome::ConfigError {
            reason: format!("{reason} (a redirect; the relay does not follow redirects)"),
        },
        _ => Outcome::ConfigError { reason },
    };
    Delivery::Done(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_map_to_outcomes() {
        let done = |d: Delivery| match d {
            Delivery::Done(o) => o,
            Delivery::TooLarge { .. } => panic!("too large"),
        };
        assert_eq!(done(classify(201, None, "")), Outcome::Delivered);
        assert_eq!(done(classify(202, None, "")), Outcome::Delivered);
        assert!(matches!(done(classify(404, None, "")), Outcome::TokenDead { .. }));
        assert!(
            matches!(done(classify(410, None, "gone")), Outcome::TokenDead { reason } if reason == "Web Push 410: gone")
        );
        assert!(matches!(classify(413, None, ""), Delivery::TooLarge { .. }));
        let after = Some(Duration::from_secs(7));
        assert!(
            matches!(done(classify(429, after, "")), Outcome::Retry { after: Some(a), .. } if a.as_secs() == 7)
        );
        assert!(matches!(
            done(classify(503, None, "")),
            Outcome::Retry { after: None, .. }
        ));
        assert!(
            matches!(done(classify(307, None, "")), Outcome::ConfigError { reason } if reason.contains("redirect"))
        );
        for status in [400, 401, 403, 415] {
            assert!(matches!(
                done(classify(status, None, "")),
                Outcome::ConfigError { .. }
            ));
        }
    }

    #[test]
    fn topics_and_subjects_are_checked() {
        assert!(valid_topic("0123456789abcdef0123456789abcdef"));
        assert!(!valid_topic(&"a".repeat(33)));
        assert!(!valid_topic("has space"));
        assert!(check_subject("mailto:ops@example.com").is_ok());
        assert!(check_subject("https://example.com/contact").is_ok());
        assert!(check_subject("ops@example.com").is_err());
        assert!(check_subject("mailto:").is_err());
    }

    #[test]
    fn the_largest_enc_fits_the_body_limit() {
        assert_eq!(WEBPUSH_MAX_ENC_LEN, 4096 - 103);
    }
}
