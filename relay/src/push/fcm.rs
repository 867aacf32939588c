//! FCM sender: HTTP v1 API with a service-account OAuth2 access token.
//!
//! The OAuth JWT-bearer grant is ours (an RS256 JWT signed by `push::jwt` + our HTTP/2 client) rather than
//! gcp_auth's: gcp_auth does honour `token_uri`, but its HTTP client trusts only the system's
//! roots with no way to add a CA, so it cannot reach a TLS mock (or a private token endpoint)
//! with `ca_file`, and it brings its own hyper-rustls client with its own retry loop.

use super::token::DeviceToken;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::jwt::{JwtSignError, JwtSigner};
use bytes::Bytes;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use super::http::{
    PushClient, describe_transport_error, endpoint_base, endpoint_uri, http2_client, retry_after,
};
use super::{Outcome, PushConfigError, TokenRefreshes, scrub, unix_now};

/// Google's FCM endpoint.
pub const FCM_ENDPOINT: &str = "https://fcm.googleapis.com";
/// FCM's limit on a message's `data` (keys plus values), in bytes.
pub const FCM_MAX_DATA: usize = 4000;
/// The longest `enc` that fits [`FCM_MAX_DATA`] as the only data entry (`"enc"` is the key).
pub const FCM_MAX_ENC_LEN: usize = FCM_MAX_DATA - DATA_KEY.len();

const DATA_KEY: &str = "enc";
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// Google accepts assertions valid for at most an hour.
const ASSERTION_LIFETIME: u64 = 3600;
/// Refresh this long before expiry (or at half-life for short-lived tokens).
const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// A token this close to expiry is not used at all.
const EXPIRY_SLACK: Duration = Duration::from_secs(10);

/// What an [`FcmSender`] needs.
#[derive(Clone)]
pub struct FcmSettings {
    /// The service-account key file's content (JSON); its `token_uri` is honoured.
    pub service_account_json: String,
    /// FCM base URL, e.g. [`FCM_ENDPOINT`].
    pub endpoint: String,
    /// Extra trusted root certificate(s), PEM, for both FCM and the token endpoint.
    pub ca_pem: Option<String>,
    /// Bound on one request, connect to end of answer.
    pub timeout: Duration,
}

impl std::fmt::Debug for FcmSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FcmSettings")
            .field("endpoint", &self.endpoint)
            .field("ca_pem", &self.ca_pem.is_some())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// One data-only push to one Android device.
#[derive(Clone, Debug)]
pub struct FcmPush {
    /// The FCM registration token.
    pub token: DeviceToken,
    /// The encrypted notification (base64), sent as `data.enc`.
    pub enc: String,
    /// `android.priority` HIGH (message namespaces) or NORMAL (config).
    pub high_priority: bool,
    /// `android.ttl` in seconds (time left until the message expires).
    pub ttl_s: u64,
    /// `android.collapse_key`.
    pub collapse_key: Option<String>,
}

/// Sends pushes through FCM; cheap to share (`Arc`) between tasks.
pub struct FcmSender {
    client: PushClient,
    /// Parsed once, not per push.
    send_url: http::Uri,
    project_id: String,
    oauth: OAuth,
}

impl std::fmt::Debug for FcmSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FcmSender")
            .field("send_url", &self.send_url)
            .finish_non_exhaustive()
    }
}

impl FcmSender {
    /// Parses the service account, builds the client and fetches the first access token.
    /// Credentials the token endpoint refuses are an error; an unreachable endpoint is only
    /// logged (the first send tries again), so a provider outage does not stop the relay.
    pub async fn new(settings: FcmSettings) -> Result<FcmSender, PushConfigError> {
        Self::new_with_refreshes(settings, TokenRefreshes::default()).await
    }

    /// [`FcmSender::new`], reporting every OAuth token fetch (the first included) to
    /// `refreshes` (the metrics).
    pub async fn new_with_refreshes(
        settings: FcmSettings,
        refreshes: TokenRefreshes,
    ) -> Result<FcmSender, PushConfigError> {
        if settings.timeout.is_zero() {
            return Err(PushConfigError::BadSetting("FCM timeout must be positive".into()));
        }
        let account = ServiceAccount::parse(&settings.service_account_json)?;
        let client = PushClient::new(settings.ca_pem.as_deref(), settings.timeout)?;
        let base = endpoint_base(&settings.endpoint)?;
        let path = format!("/v1/projects/{}/messages:send", account.project_id);
        let send_url = endpoint_uri(&base, &path).map_err(|e| {
            PushConfigError::BadEndpoint(format!("{base}{path}: {e} (is the project_id URL-safe?)"))
        })?;
        // The token fetches are rare and go to another host: reqwest does them.
        let mut oauth = OAuth::new(
            http2_client(settings.ca_pem.as_deref(), settings.timeout)?,
            &account,
        )?;
        oauth.refreshes = refreshes;
        let sender = FcmSender {
            client,
            send_url,
            project_id: account.project_id,
            oauth,
        };
        match sender.oauth.token().await {
            Ok(_) => {}
            Err(Outcome::ConfigError { reason }) => return Err(PushConfigError::OAuthRejected(reason)),
            Err(other) => tracing::warn!(
                ?other,
                "FCM access token not fetched yet; will retry on first push"
            ),
        }
        Ok(sender)
    }

    /// The Firebase project pushes go to.
    pub fn project_id(&self) -> &str {
        &self.project_id
    }

    /// Sends one push and says what became of it. A 401 (token revoked early) is retried
    /// once with a fresh access token before it counts as a configuration problem.
    pub async fn send(&self, push: &FcmPush) -> Outcome {
        if push.token.is_empty() {
            return Outcome::TokenDead {
                reason: "empty FCM registration token".into(),
            };
        }
        // Serialising plain strings into a Vec cannot fail.
        let body = Bytes::from(serde_json::to_vec(&message(push)).expect("FCM message serialises"));
        for attempt in 0..2 {
            let access = match self.oauth.token().await {
                Ok(access) => access,
                Err(outcome) => return outcome,
            };
            let response = match self
                .client
                .post_json_with_bearer(&self.send_url, &access, &body, &push.token)
                .await
            {
                Ok(response) => response,
                Err(outcome) => return outcome,
            };
            let status = response.status;
            if status == StatusCode::OK {
                return Outcome::Delivered;
            }
            if status == StatusCode::UNAUTHORIZED && attempt == 0 {
                self.oauth.forget(&access);
                continue;
            }
            let after = retry_after(&response.headers);
            let error = serde_json::from_slice::<GoogleErrorBody>(&response.body)
                .map(|b| b.error)
                .unwrap_or_default();
            return classify(status.as_u16(), &error, after, &push.token);
        }
        // Invariant: the second pass never `continue`s (attempt == 1), so it always returns.
        unreachable!("the loop returns on its second pass")
    }
}

/// The v1 request: a data-only message (DESIGN.md's shape).
fn message(push: &FcmPush) -> SendRequest<'_> {
    SendRequest {
        message: Message {
            token: &push.token,
            data: Data { enc: &push.enc },
            android: Android {
                priority: if push.high_priority { "HIGH" } else { "NORMAL" },
                ttl: format!("{}s", push.ttl_s),
                collapse_key: push.collapse_key.as_deref(),
            },
        },
    }
}

/// Maps Google's answer to what the notifier does.
fn classify(status: u16, error: &GoogleError, after: Option<Duration>, token: &str) -> Outcome {
    let code = error
        .details
        .iter()
        .find_map(|d| d.error_code.as_deref())
        .unwrap_or("");
    let mut text = format!(
        "FCM {status} {}",
        error.status.as_deref().unwrap_or("(no status)")
    );
    if !code.is_empty() {
        text = format!("{text} {code}");
    }
    if let Some(message) = error.message.as_deref().filter(|m| !m.is_empty()) {
        text = format!("{text}: {message}");
    }
    let text = scrub(&text, token);
    let invalid_argument = code == "INVALID_ARGUMENT" || error.status.as_deref() == Some("INVALID_ARGUMENT");
    match (status, code) {
        (_, "UNREGISTERED") | (404, _) => Outcome::TokenDead { reason: text },
        // FCM answers a token it cannot parse (or no longer knows the format of) with
        // 400 INVALID_ARGUMENT too; only what names the token means the token is dead.
        (400, _) if invalid_argument && about_the_token(error) => Outcome::TokenDead { reason: text },
        (429 | 500..=599, _) | (_, "QUOTA_EXCEEDED" | "UNAVAILABLE" | "INTERNAL") => {
            Outcome::Retry { after, reason: text }
        }
        // Any other invalid argument is about the request the relay built or the project it
        // sent to: no device's fault, and every push would fail the same way.
        (400, _) if invalid_argument => Outcome::ConfigError { reason: text },
        (401 | 403, _) | (_, "SENDER_ID_MISMATCH" | "THIRD_PARTY_AUTH_ERROR" | "PERMISSION_DENIED") => {
            Outcome::ConfigError { reason: text }
        }
        _ => Outcome::Failed { reason: text },
    }
}

/// Whether an INVALID_ARGUMENT names the registration token: a `google.rpc.BadRequest`
/// field violation on `message.token`, or Google's message for it ("The registration
/// token is not a valid FCM registration token"), which often comes without details.
fn about_the_token(error: &GoogleError) -> bool {
    let field = error
        .details
        .iter()
        .flat_map(|d| &d.field_violations)
        .any(|v| v.field.as_deref() == Some("message.token"));
    let message = error
        .message
        .as_deref()
        .is_some_and(|m| m.to_ascii_lowercase().contains("registration token"));
    field || message
}

#[derive(Serialize)]
struct SendRequest<'a> {
    message: Message<'a>,
}

#[derive(Serialize)]
struct Message<'a> {
    token: &'a str,
    data: Data<'a>,
    android: Android<'a>,
}

#[derive(Serialize)]
struct Data<'a> {
    enc: &'a str,
}

#[derive(Serialize)]
struct Android<'a> {
    priority: &'static str,
    ttl: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    collapse_key: Option<&'a str>,
}

#[derive(Deserialize, Default)]
struct GoogleErrorBody {
    #[serde(default)]
    error: GoogleError,
}

#[derive(Deserialize, Default)]
struct GoogleError {
    message: Option<String>,
    status: Option<String>,
    #[serde(default)]
    details: Vec<GoogleErrorDetail>,
}

#[derive(Deserialize)]
struct GoogleErrorDetail {
    /// Of a `google.firebase.fcm.v1.FcmError`.
    #[serde(rename = "errorCode")]
    error_code: Option<String>,
    /// Of a `google.rpc.BadRequest`.
    #[serde(rename = "fieldViolations", default)]
    field_violations: Vec<FieldViolation>,
}

#[derive(Deserialize)]
struct FieldViolation {
    field: Option<String>,
}

/// The fields of a service-account key file the sender uses.
#[derive(Deserialize)]
struct ServiceAccount {
    #[serde(rename = "type")]
    kind: Option<String>,
    project_id: String,
    private_key_id: Option<String>,
    private_key: String,
    client_email: String,
    token_uri: Option<String>,
}

impl ServiceAccount {
    fn parse(json: &str) -> Result<ServiceAccount, PushConfigError> {
        let account: ServiceAccount =
            serde_json::from_str(json).map_err(|e| PushConfigError::BadServiceAccount(e.to_string()))?;
        if account.kind.as_deref().is_some_and(|k| k != "service_account") {
            return Err(PushConfigError::BadServiceAccount(
                "\"type\" is not \"service_account\"".into(),
            ));
        }
        let bad_project = account.project_id.is_empty()
            || !account
                .project_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b':' || b == b'.');
        if bad_project {
            return Err(PushConfigError::BadServiceAccount(format!(
                "project_id {:?}",
                account.project_id
            )));
        }
        if account.client_email.is_empty() {
            return Err(PushConfigError::BadServiceAccount("client_email is empty".into()));
        }
        Ok(account)
    }
}

/// Access tokens for one service account: fetched with the JWT-bearer grant, cached, and
/// refreshed ahead of expiry by one caller at a time while the others keep using the
/// current token.
struct OAuth {
    client: reqwest::Client,
    token_uri: String,
    client_email: String,
    signer: JwtSigner,
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

#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

#[derive(Deserialize, Default)]
struct OAuthError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

impl OAuth {
    fn new(client: reqwest::Client, account: &ServiceAccount) -> Result<OAuth, PushConfigError> {
        let signer = JwtSigner::rs256_from_pem(&account.private_key, account.private_key_id.as_deref())
            .map_err(|e| PushConfigError::BadKey(format!("service account private_key: {e}")))?;
        let token_uri = account
            .token_uri
            .clone()
            .unwrap_or_else(|| DEFAULT_TOKEN_URI.to_owned());
        reqwest::Url::parse(&token_uri)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| PushConfigError::BadServiceAccount(format!("token_uri {token_uri:?}")))?;
        let oauth = OAuth {
            client,
            token_uri,
            client_email: account.client_email.clone(),
            signer,
            cached: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(()),
            refreshes: TokenRefreshes::default(),
        };
        // Signing once proves the key is an RSA key before the first push.
        oauth
            .assertion()
            .map_err(|e| PushConfigError::BadKey(format!("service account private_key: {e}")))?;
        Ok(oauth)
    }

    fn cached(&self) -> Option<AccessToken> {
        self.cached
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// A usable access token, or the outcome a send must report when none can be had.
    async fn token(&self) -> Result<Arc<str>, Outcome> {
        let now = Instant::now();
        if let Some(current) = self.cached().filter(|c| now < c.usable_until) {
            if now < current.refresh_at {
                return Ok(current.token);
            }
            // Due for refresh but still valid: whoever gets the lock refreshes, the rest
            // carry on with the current token; a failed early refresh is not fatal.
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

    /// Drops `token` from the cache (FCM said 401), unless it was already replaced.
    fn forget(&self, token: &str) {
        let mut cached = self
            .cached
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cached.as_ref().is_some_and(|c| &*c.token == token) {
            *cached = None;
        }
    }

    fn assertion(&self) -> Result<String, JwtSignError> {
        let iat = unix_now();
        let claims = AssertionClaims {
            iss: &self.client_email,
            scope: SCOPE,
            aud: &self.token_uri,
            iat,
            exp: iat + ASSERTION_LIFETIME,
        };
        self.signer.sign(&claims)
    }

    /// Fetches a new access token and reports the attempt to the watcher.
    async fn fetch(&self) -> Result<Arc<str>, Outcome> {
        let fetched = self.request_token().await;
        self.refreshes.record(fetched.is_ok());
        fetched
    }

    async fn request_token(&self) -> Result<Arc<str>, Outcome> {
        let assertion = self.assertion().map_err(|e| Outcome::ConfigError {
            reason: format!("cannot sign OAuth assertion: {e}"),
        })?;
        let form = [
            ("grant_type", JWT_BEARER_GRANT),
            ("assertion", assertion.as_str()),
        ];
        let started = Instant::now();
        let response = self
            .client
            .post(&self.token_uri)
            .form(&form)
            .send()
            .await
            .map_err(|err| Outcome::Retry {
                after: None,
                reason: format!("OAuth token request {}", describe_transport_error(err)),
            })?;
        let status = response.status();
        if status != StatusCode::OK {
            let after = retry_after(response.headers());
            let error = response.json::<OAuthError>().await.unwrap_or_default();
            let reason = scrub(
                &format!(
                    "OAuth token request {status}: {} {}",
                    error.error, error.error_description
                ),
                "",
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
                reason: format!("OAuth token response unreadable: {}", describe_transport_error(e)),
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
        tracing::debug!(expires_in = granted.expires_in, "FCM access token refreshed");
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push() -> FcmPush {
        FcmPush {
            token: "tok".into(),
            enc: "ENC".into(),
            high_priority: true,
            ttl_s: 3600,
            collapse_key: None,
        }
    }

    #[test]
    fn message_has_exactly_designs_shape() {
        assert_eq!(
            serde_json::to_string(&message(&push())).unwrap(),
            r#"{"message":{"token":"tok","data":{"enc":"ENC"},"android":{"priority":"HIGH","ttl":"3600s"}}}"#
        );
        let config = FcmPush {
            high_priority: false,
            collapse_key: Some("cfg".into()),
            ..push()
        };
        assert_eq!(
            serde_json::to_value(message(&config)).unwrap()["message"]["android"],
            serde_json::json!({"priority": "NORMAL", "ttl": "3600s", "collapse_key": "cfg"})
        );
    }

    fn error(status: &str, code: Option<&str>, message: &str) -> GoogleError {
        GoogleError {
            message: Some(message.into()),
            status: Some(status.into()),
            details: vec![GoogleErrorDetail {
                error_code: code.map(Into::into),
                field_violations: Vec::new(),
            }],
        }
    }

    /// Google's answer, parsed from its JSON as the sender does.
    fn parsed(json: serde_json::Value) -> GoogleError {
        serde_json::from_value::<GoogleErrorBody>(json).unwrap().error
    }

    #[test]
    fn an_invalid_argument_is_a_dead_token_only_when_it_names_the_token() {
        // What FCM answers for a token it cannot parse (as reported against
        // firebase-admin): the message names the token, the details only INVALID_ARGUMENT.
        let bad_token = parsed(serde_json::json!({"error": {
            "code": 400,
            "message": "The registration token is not a valid FCM registration token",
            "status": "INVALID_ARGUMENT",
            "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                         "errorCode": "INVALID_ARGUMENT"}]
        }}));
        assert!(matches!(
            classify(400, &bad_token, None, "t"),
            Outcome::TokenDead { .. }
        ));
        let token_field = parsed(serde_json::json!({"error": {
            "code": 400,
            "message": "Request contains an invalid argument.",
            "status": "INVALID_ARGUMENT",
            "details": [
                {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "INVALID_ARGUMENT"},
                {"@type": "type.googleapis.com/google.rpc.BadRequest",
                 "fieldViolations": [{"field": "message.token", "description": "Invalid registration token"}]}
            ]
        }}));
        assert!(matches!(
            classify(400, &token_field, None, "t"),
            Outcome::TokenDead { .. }
        ));
        // The message the relay built is wrong: a configuration problem, not the device's.
        let shape = parsed(serde_json::json!({"error": {
            "code": 400,
            "message": "Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration), \"x\"",
            "status": "INVALID_ARGUMENT",
            "details": [{"@type": "type.googleapis.com/google.rpc.BadRequest",
                         "fieldViolations": [{"field": "message.android.ttl", "description": "Invalid value"}]}]
        }}));
        assert!(matches!(
            classify(400, &shape, None, "tok-xyz"),
            Outcome::ConfigError { reason } if reason.contains("message.android.ttl")
        ));
        let bare = parsed(serde_json::json!({"error": {
            "code": 400, "message": "Request contains an invalid argument.", "status": "INVALID_ARGUMENT"
        }}));
        assert!(matches!(
            classify(400, &bare, None, "t"),
            Outcome::ConfigError { .. }
        ));
        let denied = parsed(serde_json::json!({"error": {
            "code": 403,
            "message": "Permission 'cloudmessaging.messages.create' denied on resource.",
            "status": "PERMISSION_DENIED"
        }}));
        assert!(matches!(
            classify(403, &denied, None, "t"),
            Outcome::ConfigError { .. }
        ));
    }

    #[test]
    fn answers_map_to_outcomes() {
        let after = Some(Duration::from_secs(9));
        let dead = classify(
            404,
            &error("NOT_FOUND", Some("UNREGISTERED"), "gone tok-123"),
            None,
            "tok-123",
        );
        assert_eq!(
            dead,
            Outcome::TokenDead {
                reason: "FCM 404 NOT_FOUND UNREGISTERED: gone <token>".into()
            }
        );
        assert!(matches!(
            classify(
                400,
                &error("INVALID_ARGUMENT", Some("UNREGISTERED"), ""),
                None,
                "t"
            ),
            Outcome::TokenDead { .. }
        ));
        assert!(matches!(
            classify(404, &GoogleError::default(), None, "t"),
            Outcome::TokenDead { .. }
        ));
        assert!(matches!(
            classify(429, &error("RESOURCE_EXHAUSTED", Some("QUOTA_EXCEEDED"), ""), after, "t"),
            Outcome::Retry { after: Some(a), .. } if a == Duration::from_secs(9)
        ));
        assert!(matches!(
            classify(503, &GoogleError::default(), None, "t"),
            Outcome::Retry { after: None, .. }
        ));
        assert!(matches!(
            classify(500, &error("INTERNAL", Some("INTERNAL"), ""), None, "t"),
            Outcome::Retry { .. }
        ));
        for (status, code) in [
            (403, Some("SENDER_ID_MISMATCH")),
            (401, Some("THIRD_PARTY_AUTH_ERROR")),
            (403, None),
            (401, None),
        ] {
            assert!(matches!(
                classify(status, &error("X", code, ""), None, "t"),
                Outcome::ConfigError { .. }
            ));
        }
        assert!(matches!(
            classify(
                400,
                &error("INVALID_ARGUMENT", Some("INVALID_ARGUMENT"), ""),
                None,
                "t"
            ),
            Outcome::ConfigError { .. }
        ));
        assert!(matches!(
            classify(418, &GoogleError::default(), None, "t"),
            Outcome::Failed { .. }
        ));
    }

    #[test]
    fn service_accounts_are_checked() {
        let good = tidings_mock_push::ServiceAccount::generate("proj-1").to_json();
        let account = ServiceAccount::parse(&good).unwrap();
        assert_eq!(account.project_id, "proj-1");
        let mut value: serde_json::Value = serde_json::from_str(&good).unwrap();
        value["type"] = "authorized_user".into();
        assert!(ServiceAccount::parse(&value.to_string()).is_err());
        value["type"] = "service_account".into();
        value["project_id"] = "a/b".into();
        assert!(ServiceAccount::parse(&value.to_string()).is_err());
        assert!(ServiceAccount::parse("{}").is_err());
        value["project_id"] = "ok".into();
        value["private_key"] = "garbage".into();
        let client = http2_client(None, Duration::from_secs(1)).unwrap();
        let account = ServiceAccount::parse(&value.to_string()).unwrap();
        assert!(matches!(
            OAuth::new(client, &account),
            Err(PushConfigError::BadKey(_))
        ));
    }

    #[test]
    fn max_enc_len_is_the_data_limit_minus_the_key() {
        assert_eq!(FCM_MAX_ENC_LEN, 3997);
    }
}
