//! Provider senders for Fast Mode: APNs, FCM and Huawei Push Kit over long-lived HTTP/2
//! connections, and Web Push to the endpoints clients register.
//!
//! The senders know nothing of the relay's configuration or store: they take plain settings,
//! send one push, and answer an [`Outcome`] that tells the notifier what to do with the
//! subscription and the job. No [`Outcome`] reason ever contains a device token.

pub mod apns;
pub mod fcm;
pub mod hms;
pub mod http;
pub mod jwt;
pub mod key;
pub mod token;
pub mod webpush;

use std::time::Duration;

pub use apns::{
    APNS_MAX_PAYLOAD, APNS_PRODUCTION_ENDPOINT, APNS_SANDBOX_ENDPOINT, ApnsKind, ApnsPush, ApnsSender,
    ApnsSettings, apns_max_enc_len,
};
pub use fcm::{FCM_ENDPOINT, FCM_MAX_DATA, FCM_MAX_ENC_LEN, FcmPush, FcmSender, FcmSettings};
pub use hms::{
    HMS_ENDPOINT, HMS_MAX_DATA, HMS_MAX_ENC_LEN, HMS_TOKEN_ENDPOINT, HmsPush, HmsSender, HmsSettings,
};
pub use key::PushKey;
pub use token::DeviceToken;
pub use webpush::{
    EndpointPolicy, Urgency, WEBPUSH_MAX_BODY, WEBPUSH_MAX_ENC_LEN, WebPushPush, WebPushSender,
    WebPushSettings, WebPushTarget,
};

/// What became of one push, and so what the notifier does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The provider accepted it.
    Delivered,
    /// The token is gone for good (app uninstalled, token rotated, wrong app): remove the
    /// subscription.
    TokenDead {
        /// The provider's reason, without the token.
        reason: String,
    },
    /// A transient failure (429, 5xx, connection trouble, timeout): try again later, after
    /// `after` when the provider said so.
    Retry {
        /// The provider's `Retry-After`, if it sent one.
        after: Option<Duration>,
        /// What went wrong, without the token.
        reason: String,
    },
    /// The relay is misconfigured for this provider (bad key, topic, project, credentials):
    /// report it loudly; the token is not at fault.
    ConfigError {
        /// What the provider objected to.
        reason: String,
    },
    /// This push was refused for itself (bad payload, unknown error): drop it, keep the token.
    Failed {
        /// What the provider objected to, without the token.
        reason: String,
    },
}

impl Outcome {
    /// Whether the provider accepted the push.
    pub fn is_delivered(&self) -> bool {
        matches!(self, Outcome::Delivered)
    }
}

/// What a sender that can refuse a payload for its size answers: either an outcome, or a
/// request to send the notification again without its data (Web Push 413, HMS 80300008).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// What became of the push.
    Done(Outcome),
    /// The provider refused the payload's size; nothing was delivered.
    TooLarge {
        /// The provider's words.
        reason: String,
    },
}

/// A sender could not be built from its settings.
#[derive(Debug, thiserror::Error)]
pub enum PushConfigError {
    /// The APNs `.p8` key or the service account's private key is unusable.
    #[error("bad signing key: {0}")]
    BadKey(String),
    /// The service-account JSON is malformed or incomplete.
    #[error("bad service account file: {0}")]
    BadServiceAccount(String),
    /// An endpoint is not an `http://` or `https://` base URL.
    #[error("bad endpoint {0}")]
    BadEndpoint(String),
    /// A setting is out of range.
    #[error("bad setting: {0}")]
    BadSetting(String),
    /// The TLS configuration (extra root certificate) is unusable.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Http(String),
    /// The OAuth token endpoint refused the service account's credentials.
    #[error("OAuth token request refused: {0}")]
    OAuthRejected(String),
}

/// Tells whoever watches (the relay's metrics) each time a sender mints provider
/// credentials: an APNs provider JWT signed, an FCM OAuth access token fetched. `true`
/// for success. The default watches nothing, so senders stay usable on their own.
#[derive(Clone, Default)]
pub struct TokenRefreshes(Option<std::sync::Arc<dyn Fn(bool) + Send + Sync>>);

impl TokenRefreshes {
    /// Calls `hook` with each refresh's success.
    pub fn new(hook: impl Fn(bool) + Send + Sync + 'static) -> Self {
        Self(Some(std::sync::Arc::new(hook)))
    }

    /// Reports one refresh.
    pub fn record(&self, ok: bool) {
        if let Some(hook) = &self.0 {
            hook(ok);
        }
    }
}

impl std::fmt::Debug for TokenRefreshes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRefreshes")
            .field("watched", &self.0.is_some())
            .finish()
    }
}

/// Removes every occurrence of `token` from provider-supplied text and bounds its length,
/// so reasons are safe to log.
pub(crate) fn scrub(text: &str, token: &str) -> String {
    const MAX: usize = 200;
    let text = if token.is_empty() {
        text.to_owned()
    } else {
        text.replace(token, "<token>")
    };
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_removes_the_token_and_bounds_the_length() {
        assert_eq!(scrub("bad token abc123 here", "abc123"), "bad token <token> here");
        assert_eq!(scrub("plain", ""), "plain");
        let long = "é".repeat(500);
        assert_eq!(scrub(&long, "x").chars().count(), 201);
    }
}

#[cfg(test)]
mod against_mocks;

#[cfg(test)]
mod webpush_against_mocks;
