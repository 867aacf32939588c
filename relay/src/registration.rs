//! Fast Mode registrations: validating an unsealed `DeviceRegistration`, and keeping it
//! encrypted at rest.
//!
//! At rest a registration is `version(1) ‖ nonce(24) ‖ XChaCha20-Poly1305(at_rest_key,
//! nonce, DeviceRegistration protobuf, aad = "tidings/at-rest/v1" ‖ account_index ‖
//! device_id)`. The associated data binds a blob to its row, so somebody who can write the
//! database but not read the key cannot move a token to another account's row. A Web Push
//! registration's endpoint and keys are inside the same protobuf, so they are encrypted
//! and bound exactly like a token.

use prost::Message;
use tidings_proto::{
    DEVICE_ID_LEN, PUSH_KEY_LEN, aead, random_bytes,
    v1::{DeviceRegistration, PushService, WebPushSubscription},
};

use crate::{
    config::ServiceName,
    push::{
        DeviceToken, PushKey, WebPushTarget,
        webpush::{
            ece::{AUTH_LEN, P256DH_LEN},
            endpoint::{self, EndpointPolicy},
        },
    },
    store::{AccountIndex, DeviceId},
};

const AT_REST_VERSION: u8 = 1;
const AT_REST_AAD: &[u8] = b"tidings/at-rest/v1";
/// APNs device tokens are 32 bytes today; Apple reserves the right to grow them.
const APNS_TOKEN_MIN_HEX: usize = 64;
const APNS_TOKEN_MAX_HEX: usize = 512;
/// FCM registration tokens are about 160 characters; this bound leaves ample room.
const FCM_TOKEN_MAX: usize = 4096;
/// Push Kit tokens are about 130 characters; the same room as FCM's.
const HMS_TOKEN_MAX: usize = 4096;
const APP_ID_MAX: usize = 255;

/// The provider a device is reached through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// APNs production.
    Apns,
    /// APNs sandbox (development builds).
    ApnsSandbox,
    /// Firebase Cloud Messaging.
    Fcm,
    /// Web Push (UnifiedPush distributors, browsers).
    WebPush,
    /// Huawei Push Kit.
    Hms,
}

impl Service {
    /// The label used in metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Service::Apns => "apns",
            Service::ApnsSandbox => "apns_sandbox",
            Service::Fcm => "fcm",
            Service::WebPush => "webpush",
            Service::Hms => "hms",
        }
    }

    /// The name of the service in the config's `apps[].services`.
    pub fn config_name(self) -> ServiceName {
        match self {
            Service::Apns | Service::ApnsSandbox => ServiceName::Apns,
            Service::Fcm => ServiceName::Fcm,
            Service::WebPush => ServiceName::Webpush,
            Service::Hms => ServiceName::Hms,
        }
    }

    fn to_proto(self) -> PushService {
        match self {
            Service::Apns => PushService::Apns,
            Service::ApnsSandbox => PushService::ApnsSandbox,
            Service::Fcm => PushService::Fcm,
            Service::WebPush => PushService::Webpush,
            Service::Hms => PushService::Hms,
        }
    }

    /// How the service is named in messages to clients.
    fn display(self) -> &'static str {
        match self {
            Service::Apns | Service::ApnsSandbox => "APNs",
            Service::Fcm => "FCM",
            Service::WebPush => "Web Push",
            Service::Hms => "HMS",
        }
    }
}

/// A validated registration.
#[derive(Clone, PartialEq, Eq)]
pub struct Registration {
    /// The provider.
    pub service: Service,
    /// The provider's device token; empty for Web Push.
    pub token: DeviceToken,
    /// The app it belongs to.
    pub app_id: String,
    /// The key its pushes are encrypted with.
    pub push_key: PushKey,
    /// The install.
    pub device_id: DeviceId,
    /// The subscription, for Web Push only.
    pub web_push: Option<WebPushTarget>,
}

impl std::fmt::Debug for Registration {
    // The token and push key are secrets: never print them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("service", &self.service)
            .field("app_id", &self.app_id)
            .finish_non_exhaustive()
    }
}

/// What the relay serves, for validating `app_id` against `service`.
pub trait AppCatalog {
    /// Whether `app_id` accepts APNs registrations.
    fn has_apns(&self, app_id: &str) -> bool;
    /// Whether `app_id` accepts FCM registrations.
    fn has_fcm(&self, app_id: &str) -> bool;
    /// Whether `app_id` accepts Web Push registrations.
    fn has_webpush(&self, _app_id: &str) -> bool {
        false
    }
    /// Whether `app_id` accepts Huawei Push Kit registrations.
    fn has_hms(&self, _app_id: &str) -> bool {
        false
    }
    /// Which Web Push endpoints may be registered.
    fn webpush_policy(&self) -> &EndpointPolicy {
        &endpoint::STRICT
    }
    /// Whether `app_id` accepts registrations of `service`.
    fn serves(&self, app_id: &str, service: Service) -> bool {
        match service {
            Service::Apns | Service::ApnsSandbox => self.has_apns(app_id),
            Service::Fcm => self.has_fcm(app_id),
            Service::WebPush => self.has_webpush(app_id),
            Service::Hms => self.has_hms(app_id),
        }
    }
}

/// A registration field that breaks a rule; the message names both.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sealed.{field}: {rule}")]
pub struct FieldError {
    /// The field inside the sealed registration.
    pub field: &'static str,
    /// The rule it breaks.
    pub rule: String,
}

fn field_error(field: &'static str, rule: impl Into<String>) -> FieldError {
    FieldError {
        field,
        rule: rule.into(),
    }
}

/// Checks every field of an unsealed registration.
pub fn validate(reg: DeviceRegistration, apps: &dyn AppCatalog) -> Result<Registration, FieldError> {
    let service = match PushService::try_from(reg.service) {
        Ok(PushService::Apns) => Service::Apns,
        Ok(PushService::ApnsSandbox) => Service::ApnsSandbox,
        Ok(PushService::Fcm) => Service::Fcm,
        Ok(PushService::Webpush) => Service::WebPush,
        Ok(PushService::Hms) => Service::Hms,
        _ => {
            return Err(field_error(
                "service",
                "must be APNS, APNS_SANDBOX, FCM, WEBPUSH or HMS",
            ));
        }
    };
    validate_token(service, &reg.token)?;
    validate_app(service, &reg.app_id, apps)?;
    let web_push = validate_web_push(service, reg.web_push, apps.webpush_policy())?;
    let push_key: [u8; PUSH_KEY_LEN] = reg.push_key.as_slice().try_into().map_err(|_| {
        field_error(
            "push_key",
            format!("must be {PUSH_KEY_LEN} bytes (got {})", reg.push_key.len()),
        )
    })?;
    let device_id: [u8; DEVICE_ID_LEN] = reg.device_id.as_slice().try_into().map_err(|_| {
        field_error(
            "device_id",
            format!("must be {DEVICE_ID_LEN} bytes (got {})", reg.device_id.len()),
        )
    })?;
    Ok(Registration {
        service,
        token: DeviceToken::from(reg.token),
        app_id: reg.app_id,
        push_key: PushKey::new(push_key),
        device_id,
        web_push,
    })
}

fn validate_token(service: Service, token: &str) -> Result<(), FieldError> {
    match service {
        Service::Apns | Service::ApnsSandbox => {
            let ok_len = (APNS_TOKEN_MIN_HEX..=APNS_TOKEN_MAX_HEX).contains(&token.len());
            if !ok_len || !token.len().is_multiple_of(2) || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(field_error(
                    "token",
                    format!(
                        "an APNs token must be hex of {}..={} bytes",
                        APNS_TOKEN_MIN_HEX / 2,
                        APNS_TOKEN_MAX_HEX / 2
                    ),
                ));
            }
        }
        Service::Fcm => {
            // FCM tokens are URL-safe base64-ish with ':' separators; refusing anything
            // else keeps them safe to put in JSON and logs never need to escape them.
            let ok_chars = token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_:.".contains(&b));
            if token.is_empty() || token.len() > FCM_TOKEN_MAX || !ok_chars {
                return Err(field_error(
                    "token",
                    format!("an FCM token must be 1..={FCM_TOKEN_MAX} characters of [A-Za-z0-9-_:.]"),
                ));
            }
        }
        Service::Hms => {
            let ok_chars = token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_:.".contains(&b));
            if token.is_empty() || token.len() > HMS_TOKEN_MAX || !ok_chars {
                return Err(field_error(
                    "token",
                    format!("an HMS token must be 1..={HMS_TOKEN_MAX} characters of [A-Za-z0-9-_:.]"),
                ));
            }
        }
        Service::WebPush => {
            if !token.is_empty() {
                return Err(field_error(
                    "token",
                    "must be empty for WEBPUSH (the subscription goes in web_push)",
                ));
            }
        }
    }
    Ok(())
}

/// A Web Push subscription: present exactly for WEBPUSH, its endpoint allowed by the
/// policy, `p256dh` a point on P-256, `auth` 16 bytes.
fn validate_web_push(
    service: Service,
    sub: Option<WebPushSubscription>,
    policy: &EndpointPolicy,
) -> Result<Option<WebPushTarget>, FieldError> {
    let sub = match (service, sub) {
        (Service::WebPush, Some(sub)) => sub,
        (Service::WebPush, None) => {
            return Err(field_error("web_push", "is required for WEBPUSH"));
        }
        (_, None) => return Ok(None),
        (_, Some(_)) => {
            return Err(field_error(
                "web_push",
                "must be absent unless the service is WEBPUSH",
            ));
        }
    };
    policy
        .check_url(&sub.endpoint)
        .map_err(|e| field_error("web_push.endpoint", e.to_string()))?;
    let p256dh: [u8; P256DH_LEN] = sub.p256dh.as_slice().try_into().map_err(|_| {
        field_error(
            "web_push.p256dh",
            format!(
                "must be {P256DH_LEN} bytes, an uncompressed P-256 point (got {})",
                sub.p256dh.len()
            ),
        )
    })?;
    if p256dh[0] != 4 || p256::PublicKey::from_sec1_bytes(&p256dh).is_err() {
        return Err(field_error(
            "web_push.p256dh",
            "is not a point on P-256 (uncompressed: 0x04 ‖ x ‖ y)",
        ));
    }
    let auth: [u8; AUTH_LEN] = sub.auth.as_slice().try_into().map_err(|_| {
        field_error(
            "web_push.auth",
            format!("must be {AUTH_LEN} bytes (got {})", sub.auth.len()),
        )
    })?;
    Ok(Some(WebPushTarget {
        endpoint: sub.endpoint,
        p256dh,
        auth,
    }))
}

fn validate_app(service: Service, app_id: &str, apps: &dyn AppCatalog) -> Result<(), FieldError> {
    if app_id.is_empty() || app_id.len() > APP_ID_MAX {
        return Err(field_error("app_id", format!("must be 1..={APP_ID_MAX} bytes")));
    }
    if !apps.serves(app_id, service) {
        return Err(field_error(
            "app_id",
            format!(
                "this relay serves no app {app_id:?} with {} (see GetRelayInfo.app_ids and .apps)",
                service.display()
            ),
        ));
    }
    Ok(())
}

/// Why a stored registration could not be read back.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AtRestError {
    /// Written by another version, or not a registration blob at all.
    #[error("stored registration has an unknown format")]
    Format,
    /// The at-rest key is not the one it was written with, or the row was tampered with.
    #[error("stored registration does not decrypt with this relay's key")]
    Decrypt,
}

/// Encrypts a registration for storage in the row (account_index, device_id).
pub fn seal_at_rest(key: &[u8; 32], account_index: &AccountIndex, reg: &Registration) -> Vec<u8> {
    let plain = DeviceRegistration {
        service: reg.service.to_proto() as i32,
        token: reg.token.as_str().to_owned(),
        app_id: reg.app_id.clone(),
        push_key: reg.push_key.as_bytes().to_vec(),
        device_id: reg.device_id.to_vec(),
        web_push: reg.web_push.as_ref().map(|w| WebPushSubscription {
            endpoint: w.endpoint.clone(),
            p256dh: w.p256dh.to_vec(),
            auth: w.auth.to_vec(),
        }),
    }
    .encode_to_vec();
    let nonce = random_bytes::<24>();
    let mut out = vec![AT_REST_VERSION];
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&aead::encrypt(
        key,
        &nonce,
        &plain,
        &at_rest_aad(account_index, &reg.device_id),
    ));
    out
}

/// Decrypts a registration stored in the row (account_index, device_id).
// A stage boundary of `tidings-bench push-profile`, which finds stages by symbol name.
#[inline(never)]
pub fn open_at_rest(
    key: &[u8; 32],
    account_index: &AccountIndex,
    device_id: &DeviceId,
    blob: &[u8],
) -> Result<Registration, AtRestError> {
    let (version, rest) = blob.split_first().ok_or(AtRestError::Format)?;
    if *version != AT_REST_VERSION || rest.len() < 24 {
        return Err(AtRestError::Format);
    }
    let (nonce, ct) = rest.split_at(24);
    let nonce: [u8; 24] = nonce.try_into().map_err(|_| AtRestError::Format)?;
    let plain =
        aead::decrypt(key, &nonce, ct, &at_rest_aad(account_index, device_id)).ok_or(AtRestError::Decrypt)?;
    let reg = DeviceRegistration::decode(plain.as_slice()).map_err(|_| AtRestError::Format)?;
    validate(reg, &AnyApp).map_err(|_| AtRestError::Format)
}

/// Reading back does not re-check the app list: an app removed from the config is
/// handled by the notifier (as a configuration problem), not as a corrupt row.
struct AnyApp;

impl AppCatalog for AnyApp {
    fn has_apns(&self, _: &str) -> bool {
        true
    }
    fn has_fcm(&self, _: &str) -> bool {
        true
    }
    fn has_webpush(&self, _: &str) -> bool {
        true
    }
    fn has_hms(&self, _: &str) -> bool {
        true
    }
    fn webpush_policy(&self) -> &EndpointPolicy {
        &endpoint::ANY
    }
}

fn at_rest_aad(account_index: &AccountIndex, device_id: &DeviceId) -> Vec<u8> {
    [AT_REST_AAD, account_index.as_slice(), device_id].concat()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    struct Apps;
    impl AppCatalog for Apps {
        fn has_apns(&self, app_id: &str) -> bool {
            app_id == "ios.app"
        }
        fn has_fcm(&self, app_id: &str) -> bool {
            app_id == "android.app"
        }
        fn has_webpush(&self, app_id: &str) -> bool {
            app_id == "android.app"
        }
        fn has_hms(&self, app_id: &str) -> bool {
            app_id == "android.app"
        }
    }

    fn apns_reg() -> DeviceRegistration {
        DeviceRegistration {
            service: PushService::Apns as i32,
            token: "ab".repeat(32),
            app_id: "ios.app".into(),
            push_key: vec![1; 32],
            device_id: vec![2; 16],
            web_push: None,
        }
    }

    /// A valid P-256 public key (the RFC 8291 example's subscriber).
    pub(crate) fn p256dh() -> Vec<u8> {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode("BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4")
            .unwrap()
    }

    fn webpush_reg() -> DeviceRegistration {
        DeviceRegistration {
            service: PushService::Webpush as i32,
            token: String::new(),
            app_id: "android.app".into(),
            web_push: Some(WebPushSubscription {
                endpoint: "https://push.example.com/wpush/v2/gAAAAABk".into(),
                p256dh: p256dh(),
                auth: vec![3; 16],
            }),
            ..apns_reg()
        }
    }

    #[test]
    fn web_push_and_hms_registrations_are_checked() {
        let ok = validate(webpush_reg(), &Apps).unwrap();
        assert_eq!(ok.service, Service::WebPush);
        assert_eq!(ok.web_push.as_ref().unwrap().auth, [3; 16]);
        let hms = DeviceRegistration {
            service: PushService::Hms as i32,
            token: "IQAAAACy0kYhAAD-hms_token.1:x".into(),
            app_id: "android.app".into(),
            ..apns_reg()
        };
        assert_eq!(validate(hms.clone(), &Apps).unwrap().service, Service::Hms);

        type Change = fn(&mut DeviceRegistration);
        let cases: &[(&str, Change, &str)] = &[
            (
                "no subscription",
                |r| r.web_push = None,
                "sealed.web_push: is required for WEBPUSH",
            ),
            (
                "a token too",
                |r| r.token = "t".into(),
                "sealed.token: must be empty for WEBPUSH",
            ),
            (
                "other app",
                |r| r.app_id = "ios.app".into(),
                "sealed.app_id: this relay serves no app \"ios.app\" with Web Push",
            ),
            (
                "http",
                |r| r.web_push.as_mut().unwrap().endpoint = "http://push.example.com/x".into(),
                "sealed.web_push.endpoint: must be an https:// URL (got http://)",
            ),
            (
                "loopback",
                |r| r.web_push.as_mut().unwrap().endpoint = "https://127.0.0.1/x".into(),
                "sealed.web_push.endpoint: host is a loopback address (127.0.0.1)",
            ),
            (
                "private",
                |r| r.web_push.as_mut().unwrap().endpoint = "https://10.0.0.1/x".into(),
                "sealed.web_push.endpoint: host is a private address (10.0.0.1)",
            ),
            (
                "v6 loopback",
                |r| r.web_push.as_mut().unwrap().endpoint = "https://[::1]:8443/x".into(),
                "sealed.web_push.endpoint: host is a loopback address (::1)",
            ),
            (
                "metadata",
                |r| r.web_push.as_mut().unwrap().endpoint = "https://169.254.169.254/latest".into(),
                "sealed.web_push.endpoint: host is a link-local address (169.254.169.254)",
            ),
            (
                "too long",
                |r| r.web_push.as_mut().unwrap().endpoint = format!("https://p.example/{}", "a".repeat(1000)),
                "sealed.web_push.endpoint: must be at most 1000 bytes (got 1018)",
            ),
            (
                "short key",
                |r| r.web_push.as_mut().unwrap().p256dh = vec![4; 33],
                "sealed.web_push.p256dh: must be 65 bytes, an uncompressed P-256 point (got 33)",
            ),
            (
                "off the curve",
                |r| r.web_push.as_mut().unwrap().p256dh[64] ^= 1,
                "sealed.web_push.p256dh: is not a point on P-256",
            ),
            (
                "compressed tag",
                |r| r.web_push.as_mut().unwrap().p256dh[0] = 2,
                "sealed.web_push.p256dh: is not a point on P-256",
            ),
            (
                "auth",
                |r| r.web_push.as_mut().unwrap().auth = vec![0; 15],
                "sealed.web_push.auth: must be 16 bytes (got 15)",
            ),
        ];
        for (what, change, says) in cases {
            let mut r = webpush_reg();
            change(&mut r);
            let rule = rule_of(r);
            assert!(rule.starts_with(says), "{what}: {rule}");
        }
        let mut with_sub = hms.clone();
        with_sub.web_push = webpush_reg().web_push;
        assert_eq!(
            rule_of(with_sub),
            "sealed.web_push: must be absent unless the service is WEBPUSH"
        );
        let mut bad_token = hms;
        bad_token.token = "has space".into();
        assert!(rule_of(bad_token).starts_with("sealed.token: an HMS token must be"));
    }

    #[test]
    fn a_web_push_registration_round_trips_at_rest_without_its_endpoint_in_clear() {
        let reg = validate(webpush_reg(), &Apps).unwrap();
        let key = [9u8; 32];
        let blob = seal_at_rest(&key, &AccountIndex([1; 32]), &reg);
        assert_eq!(
            open_at_rest(&key, &AccountIndex([1; 32]), &reg.device_id, &blob).unwrap(),
            reg
        );
        let endpoint = reg.web_push.as_ref().unwrap().endpoint.as_bytes();
        assert!(
            !blob.windows(endpoint.len()).any(|w| w == endpoint),
            "endpoint in clear"
        );
        assert!(!blob.windows(16).any(|w| w == [3; 16]), "auth in clear");
        // An endpoint the operator allowed when it was registered still reads back.
        let nets = vec![crate::config::IpBlock::parse("127.0.0.1").unwrap()];
        struct Allowing(EndpointPolicy);
        impl AppCatalog for Allowing {
            fn has_apns(&self, _: &str) -> bool {
                false
            }
            fn has_fcm(&self, _: &str) -> bool {
                false
            }
            fn has_webpush(&self, _: &str) -> bool {
                true
            }
            fn webpush_policy(&self) -> &EndpointPolicy {
                &self.0
            }
        }
        let mut local = webpush_reg();
        local.web_push.as_mut().unwrap().endpoint = "http://127.0.0.1:9/push/x".into();
        let local = validate(local, &Allowing(EndpointPolicy::new(true, &[], nets))).unwrap();
        let blob = seal_at_rest(&key, &AccountIndex([1; 32]), &local);
        assert_eq!(
            open_at_rest(&key, &AccountIndex([1; 32]), &local.device_id, &blob).unwrap(),
            local
        );
    }

    fn rule_of(reg: DeviceRegistration) -> String {
        validate(reg, &Apps).unwrap_err().to_string()
    }

    #[test]
    fn a_good_registration_passes() {
        let r = validate(apns_reg(), &Apps).unwrap();
        assert_eq!(r.service, Service::Apns);
        let fcm = DeviceRegistration {
            service: PushService::Fcm as i32,
            token: "fcm:tok-en_1.x".into(),
            app_id: "android.app".into(),
            ..apns_reg()
        };
        assert_eq!(validate(fcm, &Apps).unwrap().service, Service::Fcm);
    }

    #[test]
    fn each_rule_names_its_field() {
        let m = |f: fn(&mut DeviceRegistration)| {
            let mut r = apns_reg();
            f(&mut r);
            rule_of(r)
        };
        assert!(m(|r| r.service = 0).starts_with("sealed.service:"));
        assert!(
            m(|r| r.service = 9)
                .starts_with("sealed.service: must be APNS, APNS_SANDBOX, FCM, WEBPUSH or HMS")
        );
        assert!(m(|r| r.token = "ab".repeat(31)).starts_with("sealed.token:"));
        assert!(m(|r| r.token = "zz".repeat(32)).starts_with("sealed.token:"));
        assert!(m(|r| r.token = format!("{}a", "ab".repeat(32))).starts_with("sealed.token:"));
        assert!(m(|r| r.app_id = "android.app".into()).starts_with("sealed.app_id:"));
        assert!(m(|r| r.app_id = String::new()).starts_with("sealed.app_id:"));
        assert!(m(|r| r.push_key = vec![0; 31]).starts_with("sealed.push_key: must be 32 bytes (got 31)"));
        assert!(m(|r| r.device_id = vec![]).starts_with("sealed.device_id: must be 16 bytes (got 0)"));
        assert!(
            m(|r| {
                r.service = PushService::Fcm as i32;
                r.app_id = "android.app".into();
                r.token = "has space".into();
            })
            .starts_with("sealed.token:")
        );
    }

    #[test]
    fn at_rest_blob_is_bound_to_its_row() {
        let reg = validate(apns_reg(), &Apps).unwrap();
        let key = [9u8; 32];
        let blob = seal_at_rest(&key, &AccountIndex([1; 32]), &reg);
        assert_eq!(
            open_at_rest(&key, &AccountIndex([1; 32]), &reg.device_id, &blob).unwrap(),
            reg
        );
        assert_eq!(
            open_at_rest(&key, &AccountIndex([2; 32]), &reg.device_id, &blob),
            Err(AtRestError::Decrypt)
        );
        assert_eq!(
            open_at_rest(&[8; 32], &AccountIndex([1; 32]), &reg.device_id, &blob),
            Err(AtRestError::Decrypt)
        );
        let token_hex = reg.token.as_bytes();
        assert!(
            !blob.windows(token_hex.len()).any(|w| w == token_hex),
            "token in clear"
        );
    }

    proptest! {
        #[test]
        fn garbage_blobs_never_panic(blob in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = open_at_rest(&[0; 32], &AccountIndex([0; 32]), &[0; 16], &blob);
        }
    }
}
