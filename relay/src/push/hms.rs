//! Huawei Push Kit sender: `POST {endpoint}/v1/{app_id}/messages:send` with an OAuth2
//! client-credentials access token, for Huawei phones without Google services.
//!
//! The token handling mirrors the FCM sender's: one token cached, refreshed ahead of
//! expiry by one caller while the others keep using it, and dropped when Huawei answers
//! `80200003` (expired), after which the push is tried once more with a fresh one.

use super::token::DeviceToken;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use super::http::{
    PushClient, describe_transport_error, endpoint_base, endpoint_uri, http2_client, retry_after,
};
use super::{Delivery, Outcome, PushConfigError, TokenRefreshes, scrub};

/// Huawei's Push Kit endpoint.
pub const HMS_ENDPOINT: &str = "https://push-api.cloud.huawei.com";
/// Huawei's OAuth 2.0 token endpoint.
pub const HMS_TOKEN_ENDPOINT: &str = "https://oauth-login.cloud.huawei.com/oauth2/v3/token";
/// Push Kit's limit on a message's `data`, in bytes.
pub const HMS_MAX_DATA: usize = 4096;
/// The longest `enc` whose `data` (`{"enc":"…"}`) fits [`HMS_MAX_DATA`].
pub const HMS_MAX_ENC_LEN: usize = HMS_MAX_DATA - DATA_WRAPPER.len();
/// Push Kit keeps a message at most 15 days.
pub const HMS_MAX_TTL_S: u64 = 15 * 24 * 3600;

const DATA_WRAPPER: &str = r#"{"enc":""}"#;
const SUCCESS: &str = "80000000";
const TOKEN_EXPIRED: &str = "80200003";
const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
const EXPIRY_SLACK: Duration = Duration::from_secs(10);

/// What an [`HmsSender`] needs.
#[derive(Clone)]
pub struct HmsSettings {
    /// The AppGallery Connect app id (the path's `{app_id}`).
    pub app_id: String,
    /// The OAuth client id (Huawei's "client ID", often the app id).
    pub client_id: String,
    /// The OAuth client secret.
    pub client_secret: String,
    /// Push Kit base URL, e.g. [`HMS_ENDPOINT`].
    pub endpoint: String,
    /// The token URL, e.g. [`HMS_TOKEN_ENDPOINT`].
    pub token_endpoint: String,
    /// Extra trusted root certificate(s), PEM.
    pub ca_pem: Option<String>,
    /// Bound on one request, connect to end of answer.
    pub timeout: Duration,
}

impl std::fmt::Debug for HmsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HmsSettings")
            .field("app_id", &self.app_id)
            .field("endpoint", &self.endpoint)
            .field("token_endpoint", &self.token_endpoint)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// One data message to one Huawei device.
#[derive(Clone, Debug)]
pub struct HmsPush {
    /// The Push Kit token.
    pub token: DeviceToken,
    /// The encrypted notification (base64), sent as `data` = `{"enc":"…"}`.
    pub enc: String,
    /// `android.urgency` HIGH (message namespaces) or NORMAL (config).
    pub high_priority: bool,
    /// `android.ttl`, in seconds.
    pub ttl_s: u64,
}

/// Sends pushes through Push Kit; cheap to share (`Arc`) between tasks.
pub struct HmsSender {
    client: PushClient,
    /// Parsed once, not per push.
    send_url: http::Uri,
    oauth: OAuth,
}

impl std::fmt::Debug for HmsSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HmsSender")
            .field("send_url", &self.send_url)
            .finish_non_exhaustive()
    }
}

impl HmsSender {
    /// Builds the client and fetches the first access token: credentials the token
    /// endpoint refuses are an error; an unreachable one is only logged.
    pub async fn new(settings: HmsSettings, refreshes: TokenRefreshes) -> Result<Self, PushConfigError> {
        if settings.timeout.is_zero() {
            return Err(PushConfigError::BadSetting("HMS timeout must be positive".into()));
        }
        let ok_app =
            !settings.app_id.is_empty() && settings.app_id.bytes().all(|b| b.is_ascii_alphanumeric());
        if !ok_app {
            return Err(PushConfigError::BadSetting(format!(
                "HMS app_id must be letters and digits (got {:?})",
                settings.app_id
            )));
        }
        let base = endpoint_base(&settings.endpoint)?;
        let path = format!("/v1/{}/messages:send", settings.app_id);
        // The app id is letters and digits (checked above), so this only fails on the base.
        let send_url = endpoint_uri(&base, &path)
            .map_err(|e| PushConfigError::BadEndpoint(format!("{base}{path}: {e}")))?;
        let token_url = endpoint_base(&settings.token_endpoint)?;
        let sender = Self {
            send_url,
            oauth: OAuth {
                // The token fetches are rare and go to another host: reqwest does them.
                client: http2_client(settings.ca_pem.as_deref(), settings.timeout)?,
                token_url,
                client_id: settings.client_id,
                client_secret: settings.client_secret,
                cached: RwLock::new(None),
                refresh: tokio::sync::Mutex::new(()),
                refreshes,
            },
            client: PushClient::new(settings.ca_pem.as_deref(), settings.timeout)?,
        };
        match sender.oauth.token().await {
            Ok(_) => {}
            Err(Outcome::ConfigError { reason }) => return Err(PushConfigError::OAuthRejected(reason)),
            Err(other) => tracing::warn!(
                ?other,
                "HMS access token not fetched yet; will retry on first push"
            ),
        }
        Ok(sender)
    }

    /// Sends one push. An expired access token is replaced and the push tried once more.
    pub async fn send(&self, push: &HmsPush) -> Delivery {
        if push.token.is_empty() {
            return Delivery::Done(Outcome::TokenDead {
                reason: "empty HMS token".into(),
            });
        }
        // Serialising strings and integers into a Vec cannot fail.
        let body = Bytes::from(serde_json::to_vec(&message(push)).expect("HMS message serialises"));
        for attempt in 0..2 {
            let access = match self.oauth.token().await {
                Ok(access) => access,
                Err(outcome) => return Delivery::Done(outcome),
            };
            let response = match self
                .client
                .post_json_with_bearer(&self.send_url, &access, &body, &push.token)
                .await
            {
                Ok(response) => response,
                Err(outcome) => return Delivery::Done(outcome),
            };
            let status = response.status;
            let after = retry_after(&response.headers);
            let answer = serde_json::from_slice::<Answer>(&response.body).unwrap_or_default();
            if status == StatusCode::OK && answer.code == SUCCESS {
                return Delivery::Done(Outcome::Delivered);
            }
            if answer.code == TOKEN_EXPIRED && attempt == 0 {
                self.oauth.forget(&access);
                continue;
            }
            return classify(status.as_u16(), &answer, after, &push.token);
        }
        // Invariant: the second pass never `continue`s (attempt == 1), so it always returns.
        unreachable!("the loop returns on its second pass")
    }
}

/// The request: a data message (DESIGN.md's shape).
fn message(push: &HmsPush) -> SendRequest {
    SendRequest {
        validate_only: false,
        message: Message {
            // Serialising one string field cannot fail.
            data: serde_json::json!({ "enc": push.enc }).to_string(),
            token: [push.token.as_str().to_owned()],
            android: Android {
                urgency: if push.high_priority { "HIGH" } else { "NORMAL" },
                ttl: format!("{}s", push.ttl_s.min(HMS_MAX_TTL_S)),
            },
        },
    }
}

/// Maps Push Kit's answer (HTTP status and result code) to what the notifier does.
fn classify(status: u16, answer: &Answer, after: Option<Duration>, token: &str) -> Delivery {
    let code = answer.code.as_str();
    let reason = scrub(&format!("HMS {status} {code}: {}", answer.msg), token);
    let outcome = match (status, code) {
        // The token is not (or no longer) a token of this app.
        (_, "80300007") => Outcome::TokenDead { reason },
        (_, "80300008" | "80300010") => return Delivery::TooLarge { reason },
        // Flow control and Huawei's internal errors pass.
        (429 | 500..=599, _) | (_, "80100003" | "81000001") => Outcome::Retry { after, reason },
        // OAuth problems, a token still refused after a refresh, no permission.
        (401 | 403, _) | (_, "80200001" | "80200003" | "80300002" | "80600003") => {
            Outcome::ConfigError { reason }
        }
        // Anything else about the request is about what the relay built.
        (400, _) => Outcome::ConfigError { reason },
        _ => Outcome::Failed { reason },
    };
    Delivery::Done(outcome)
}

#[derive(Serialize)]
struct SendRequest {
    validate_only: bool,
    message: Message,
}

#[derive(Serialize)]
struct Message {
    data: String,
    token: [String; 1],
    android: Android,
}

#[derive(Serialize)]
struct Android {
    urgency: &'static str,
    ttl: String,
}

/// `{"code": "80000000", "msg": "Success", "requestId": "…"}`.
#[derive(Deserialize, Default)]
struct Answer {
    #[serde(default)]
    code: String,
    #[serde(default)]
    msg: String,
}

/// Access tokens from the client-credentials grant, cached and refreshed ahead of expiry.
struct OAuth {
    client: reqwest::Client,
    token_url: String,
    client_id: String,
    client_secret: String,
    cached: RwLock<Option<AccessToken>>,
    refresh: tokio::sync::Mutex<()>,
    refreshes: TokenRefreshes,
}

#[derive(Clone)]
struct AccessToken {
    token: Arc<str>,
    refresh_at: Instant,
    usable_until: Instant,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

impl OAuth {
    fn cached(&self) -> Option<AccessToken> {
        self.cached
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    async fn token(&self) -> Result<Arc<str>, Outcome> {
        let now = Instant::now();
        if let Some(current) = self.cached().filter(|c| now < c.usable_until) {
            if now < current.refresh_at {
                return Ok(current.token);
            }
            return match self.refresh.try_lock() {
                Ok(_guard) => Ok(self.fetch().await.unwrap_or(current.token)),
                Err(_) => Ok(current.token),
            };
        }
        let _guard = self.refresh.lock().await;
        if let Some(current) = self.cached().filter(|c| Instant::now() < c.usable_until) {
            return Ok(current.token);
        }
        self.fetch().await
    }

    fn forget(&self, token: &str) {
        let mut cached = self
            .cached
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cached.as_ref().is_some_and(|c| &*c.token == token) {
            *cached = None;
        }
    }

    async fn fetch(&self) -> Result<Arc<str>, Outcome> {
        let fetched = self.request_token().await;
        self.refreshes.record(fetched.is_ok());
        fetched
    }

    async fn request_token(&self) -> Result<Arc<str>, Outcome> {
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.as_str()),
        ];
        let started = Instant::now();
        let response = self
            .client
            .post(&self.token_url)
            .form(&form)
            .send()
            .await
            .map_err(|err| Outcome::Retry {
                after: None,
                reason: format!("HMS token request {}", describe_transport_error(err)),
            })?;
        let status = response.status();
        if status != StatusCode::OK {
            let after = retry_after(response.headers());
            // Huawei's errors: {"error": 1101, "sub_error": 20152, "error_description": "…"}.
            let error = response.json::<serde_json::Value>().await.unwrap_or_default();
            let reason = scrub(
                &format!(
                    "HMS token request {status}: {} {}",
                    error.get("error").map(ToString::to_string).unwrap_or_default(),
                    error
                        .get("error_description")
                        .and_then(|d| d.as_str())
                        .unwrap_or_default()
                ),
                &self.client_secret,
            );
            return Err(match status.as_u16() {
                429 | 500..=599 => Outcome::Retry { after, reason },
                _ => Outcome::ConfigError { reason },
            });
        }
        let granted = response
            .json::<TokenResponse>()
            .await
            .map_err(|e| Outcome::Retry {
                after: None,
                reason: format!("HMS token response unreadable: {}", describe_transport_error(e)),
            })?;
        let lifetime = Duration::from_secs(granted.expires_in);
        let token: Arc<str> = Arc::from(granted.access_token);
        *self
            .cached
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(AccessToken {
            token: token.clone(),
            refresh_at: started + lifetime.saturating_sub(REFRESH_MARGIN.min(lifetime / 2)),
            usable_until: started + lifetime.saturating_sub(EXPIRY_SLACK.min(lifetime / 10)),
        });
        tracing::debug!(expires_in = granted.expires_in, "HMS access token refreshed");
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push() -> HmsPush {
        HmsPush {
            token: "tok".into(),
            enc: "ENC".into(),
            high_priority: true,
            ttl_s: 3600,
        }
    }

    #[test]
    fn message_has_designs_shape() {
        assert_eq!(
            serde_json::to_string(&message(&push())).unwrap(),
            r#"{"validate_only":false,"message":{"data":"{\"enc\":\"ENC\"}","token":["tok"],"android":{"urgency":"HIGH","ttl":"3600s"}}}"#
        );
        let config = HmsPush {
            high_priority: false,
            ttl_s: 10 * HMS_MAX_TTL_S,
            ..push()
        };
        assert_eq!(
            serde_json::to_value(message(&config)).unwrap()["message"]["android"],
            serde_json::json!({"urgency": "NORMAL", "ttl": "1296000s"})
        );
        assert_eq!(HMS_MAX_ENC_LEN, 4086);
    }

    fn answer(code: &str, msg: &str) -> Answer {
        Answer {
            code: code.into(),
            msg: msg.into(),
        }
    }

    /// What `classify` decided, without the reason.
    #[derive(Debug, PartialEq, Eq)]
    enum Kind {
        TokenDead,
        TooLarge,
        Retry,
        ConfigError,
        Failed,
    }

    fn kind(delivery: &Delivery) -> Kind {
        match delivery {
            Delivery::TooLarge { .. } => Kind::TooLarge,
            Delivery::Done(Outcome::TokenDead { .. }) => Kind::TokenDead,
            Delivery::Done(Outcome::Retry { .. }) => Kind::Retry,
            Delivery::Done(Outcome::ConfigError { .. }) => Kind::ConfigError,
            Delivery::Done(Outcome::Failed { .. }) => Kind::Failed,
            Delivery::Done(Outcome::Delivered) => panic!("classify never delivers"),
        }
    }

    /// Every result code the relay acts on, with the HTTP status Push Kit sends it with.
    /// `80200003` reaches `classify` only when a fresh access token was refused too (the
    /// first one makes `send` refresh and try again:
    /// `an_hms_data_message_arrives_and_an_expired_token_is_renewed_once` and
    /// `hms_result_codes_become_outcomes` in `webpush_against_mocks.rs`).
    #[test]
    fn result_codes_map_to_outcomes() {
        let cases: &[(u16, &str, Kind)] = &[
            // the token is not (or no longer) this app's: registration removed
            (400, "80300007", Kind::TokenDead),
            (200, "80300007", Kind::TokenDead),
            // size: sent again without data, like FCM's size error
            (400, "80300008", Kind::TooLarge),
            (400, "80300010", Kind::TooLarge),
            // flow control and Huawei's internal errors: retried
            (503, "", Kind::Retry),
            (503, "80100017", Kind::Retry),
            (429, "", Kind::Retry),
            (200, "80100003", Kind::Retry),
            (400, "80100003", Kind::Retry),
            (500, "81000001", Kind::Retry),
            // still expired after a refresh, OAuth and permission problems: the config
            (401, "80200003", Kind::ConfigError),
            (401, "80200001", Kind::ConfigError),
            (403, "80300002", Kind::ConfigError),
            (200, "80600003", Kind::ConfigError),
            (401, "", Kind::ConfigError),
            (400, "80100001", Kind::ConfigError),
            // anything else: this push is dropped
            (418, "", Kind::Failed),
            (200, "80100000", Kind::Failed),
        ];
        for (status, code, want) in cases {
            let got = classify(*status, &answer(code, "msg"), None, "t");
            assert_eq!(kind(&got), *want, "HMS {status} {code:?}");
        }
    }

    #[test]
    fn classify_keeps_retry_after_and_no_token() {
        assert_eq!(
            classify(
                400,
                &answer("80300007", "All the tokens are invalid: IQAAAAy"),
                None,
                "IQAAAAy"
            ),
            Delivery::Done(Outcome::TokenDead {
                reason: "HMS 400 80300007: All the tokens are invalid: <token>".into()
            })
        );
        let after = Some(Duration::from_secs(3));
        assert!(matches!(
            classify(503, &Answer::default(), after, "t"),
            Delivery::Done(Outcome::Retry { after: Some(a), .. }) if a == Duration::from_secs(3)
        ));
    }
}
