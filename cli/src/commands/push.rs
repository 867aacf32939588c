//! `tidings push subscribe-web-push | unsubscribe`: this device's push registration, for
//! demos (a terminal receives no pushes; a browser or a UnifiedPush distributor does, and
//! decrypts them with keys that never come here).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::{
    Engine, alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};
use serde_json::json;

use crate::{
    args::{PushAction, WebPushArgs},
    error::CliError,
    session::Session,
};

/// An uncompressed P-256 point: 0x04, x, y.
const P256DH_LEN: usize = 65;
/// The Web Push authentication secret (RFC 8291 §3.2).
const AUTH_LEN: usize = 16;

/// base64url, with or without its padding (browsers give it without, some tools with).
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Runs `tidings push …`.
pub async fn run(s: &Session, action: PushAction) -> Result<(), CliError> {
    match action {
        PushAction::SubscribeWebPush(args) => subscribe_web_push(s, args).await,
        PushAction::Unsubscribe => unsubscribe(s).await,
    }
}

/// The subscription's values, checked before anything is opened or sent.
struct WebPush {
    endpoint: String,
    p256dh: Vec<u8>,
    auth: Vec<u8>,
    app_id: String,
}

fn check(args: WebPushArgs) -> Result<WebPush, CliError> {
    let endpoint = args.endpoint.trim().to_owned();
    let is_url = endpoint
        .parse::<tonic::transport::Uri>()
        .ok()
        .is_some_and(|u| matches!(u.scheme_str(), Some("https" | "http")) && u.host().is_some());
    if !is_url {
        return Err(CliError::Input(
            "--endpoint must be the subscription's push resource URL (https://…, its `endpoint`)".into(),
        ));
    }
    let p256dh = decode("--p256dh", &args.p256dh)?;
    if p256dh.len() != P256DH_LEN || p256dh[0] != 0x04 {
        return Err(CliError::Input(format!(
            "--p256dh must be the subscription's P-256 public key, uncompressed: {P256DH_LEN} bytes \
             starting with 0x04 (87 base64url characters), got {} bytes{}",
            p256dh.len(),
            if p256dh.first().is_some_and(|b| *b != 0x04) {
                " not starting with 0x04"
            } else {
                ""
            }
        )));
    }
    let auth = decode("--auth", &args.auth)?;
    if auth.len() != AUTH_LEN {
        return Err(CliError::Input(format!(
            "--auth must be the subscription's authentication secret: {AUTH_LEN} bytes (22 base64url \
             characters), got {} bytes",
            auth.len()
        )));
    }
    let app_id = args.app_id.trim().to_owned();
    if app_id.is_empty() {
        return Err(CliError::Input(
            "--app-id must name one of the relay's apps (its [[apps]] id)".into(),
        ));
    }
    Ok(WebPush {
        endpoint,
        p256dh,
        auth,
        app_id,
    })
}

fn decode(flag: &str, text: &str) -> Result<Vec<u8>, CliError> {
    BASE64URL.decode(text.trim()).map_err(|_| {
        CliError::Input(format!(
            "{flag} is not base64url (A–Z, a–z, 0–9, '-' and '_', padded with '=' or not)"
        ))
    })
}

async fn subscribe_web_push(s: &Session, args: WebPushArgs) -> Result<(), CliError> {
    let sub = check(args)?;
    let opened = s.open().await?;
    let answer = opened
        .account
        .subscribe_web_push(&sub.endpoint, &sub.p256dh, &sub.auth, &sub.app_id)
        .await
        .map_err(|e| s.at.account(e))?;
    let how = if answer.added {
        "Subscribed"
    } else {
        "Updated the subscription of"
    };
    s.out.result(
        &format!(
            "{how} this device's Web Push endpoint for app {}: the relay pushes new messages and config \
             changes to it until {} (renew before then, or `tidings push unsubscribe`).",
            sub.app_id,
            when(answer.expires_ms)
        ),
        json!({
            "subscribed": true,
            "service": "webpush",
            "app_id": sub.app_id,
            "added": answer.added,
            "expires_ms": answer.expires_ms,
        }),
    )
}

async fn unsubscribe(s: &Session) -> Result<(), CliError> {
    let opened = s.open().await?;
    let removed = opened.account.unsubscribe().await.map_err(|e| s.at.account(e))?;
    s.out.result(
        if removed {
            "Removed this device's push registration: the relay pushes to it no more."
        } else {
            "The relay had no push registration for this device."
        },
        json!({"unsubscribed": removed}),
    )
}

/// `expires_ms` for people: how far ahead, and the value itself.
fn when(expires_ms: i64) -> String {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let left = Duration::from_millis(u64::try_from(expires_ms.saturating_sub(now_ms)).unwrap_or(0));
    let days = left.as_secs() / 86_400;
    let ahead = match days {
        0 => format!("{} hours from now", left.as_secs() / 3600),
        1 => "1 day from now".to_owned(),
        n => format!("{n} days from now"),
    };
    format!("{ahead} (expires_ms {expires_ms})")
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};

    use super::*;

    fn args(p256dh: &str, auth: &str) -> WebPushArgs {
        WebPushArgs {
            endpoint: "https://push.example/sub/1".into(),
            p256dh: p256dh.into(),
            auth: auth.into(),
            app_id: "com.example.messenger".into(),
        }
    }

    fn point() -> [u8; 65] {
        let mut p = [7u8; 65];
        p[0] = 4;
        p
    }

    #[test]
    fn keys_are_base64url_with_or_without_padding() {
        for encode in [
            |b: &[u8]| URL_SAFE_NO_PAD.encode(b),
            |b: &[u8]| URL_SAFE.encode(b),
        ] {
            let ok = check(args(&encode(&point()), &encode(&[1; 16]))).unwrap();
            assert_eq!(ok.p256dh, point());
            assert_eq!(ok.auth, [1; 16]);
        }
    }

    #[test]
    fn wrong_keys_are_named() {
        let auth = URL_SAFE_NO_PAD.encode([1; 16]);
        let message = |a: WebPushArgs| match check(a) {
            Err(CliError::Input(m)) => m,
            other => panic!("{:?}", other.map(|_| ())),
        };
        assert!(message(args(&URL_SAFE_NO_PAD.encode([4; 64]), &auth)).contains("got 64 bytes"));
        let mut compressed = point();
        compressed[0] = 2;
        assert!(message(args(&URL_SAFE_NO_PAD.encode(compressed), &auth)).contains("not starting with 0x04"));
        assert!(message(args("not base64!", &auth)).starts_with("--p256dh is not base64url"));
        let point = URL_SAFE_NO_PAD.encode(point());
        assert!(message(args(&point, &URL_SAFE_NO_PAD.encode([1; 15]))).contains("got 15 bytes"));
        let mut bad = args(&point, &auth);
        bad.endpoint = "push.example/sub".into();
        assert!(message(bad).starts_with("--endpoint"));
        let mut bad = args(&point, &auth);
        bad.app_id = " ".into();
        assert!(message(bad).starts_with("--app-id"));
    }
}
