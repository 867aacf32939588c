//! Fast Mode registrations: validating an unsealed `DeviceRegistration`, and keeping it
//! encrypted at rest.
//!
//! At rest a registration is `version(1) ‖ nonce(24) ‖ XChaCha20-Poly1305(at_rest_key,
//! nonce, DeviceRegistration protobuf, aad = "tidings/at-rest/v1" ‖ account_index ‖
//! device_id)`. The associated data binds a blob to its row, so somebody who can write the
//! database but not read the key cannot move a token to another account's row.

use prost::Message;
use tidings_proto::{
    DEVICE_ID_LEN, PUSH_KEY_LEN, aead, random_bytes,
    v1::{DeviceRegistration, PushService},
};

use crate::store::{AccountIndex, DeviceId};

const AT_REST_VERSION: u8 = 1;
const AT_REST_AAD: &[u8] = b"tidings/at-rest/v1";
/// APNs device tokens are 32 bytes today; Apple reserves the right to grow them.
const APNS_TOKEN_MIN_HEX: usize = 64;
const APNS_TOKEN_MAX_HEX: usize = 512;
/// FCM registration tokens are about 160 characters; this bound leaves ample room.
const FCM_TOKEN_MAX: usize = 4096;
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
}

impl Service {
    /// The label used in metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Service::Apns => "apns",
            Service::ApnsSandbox => "apns_sandbox",
            Service::Fcm => "fcm",
        }
    }

    fn to_proto(self) -> PushService {
        match self {
            Service::Apns => PushService::Apns,
            Service::ApnsSandbox => PushService::ApnsSandbox,
            Service::Fcm => PushService::Fcm,
        }
    }
}

/// A validated registration.
#[derive(Clone, PartialEq, Eq)]
pub struct Registration {
    pub service: Service,
    pub token: String,
    pub app_id: String,
    pub push_key: [u8; 32],
    pub device_id: DeviceId,
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
    /// Whether `app_id` is configured with APNs credentials.
    fn has_apns(&self, app_id: &str) -> bool;
    /// Whether `app_id` is configured with FCM credentials.
    fn has_fcm(&self, app_id: &str) -> bool;
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
        _ => return Err(field_error("service", "must be APNS, APNS_SANDBOX or FCM")),
    };
    validate_token(service, &reg.token)?;
    validate_app(service, &reg.app_id, apps)?;
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
        token: reg.token,
        app_id: reg.app_id,
        push_key,
        device_id,
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
    }
    Ok(())
}

fn validate_app(service: Service, app_id: &str, apps: &dyn AppCatalog) -> Result<(), FieldError> {
    if app_id.is_empty() || app_id.len() > APP_ID_MAX {
        return Err(field_error("app_id", format!("must be 1..={APP_ID_MAX} bytes")));
    }
    let served = match service {
        Service::Apns | Service::ApnsSandbox => apps.has_apns(app_id),
        Service::Fcm => apps.has_fcm(app_id),
    };
    if !served {
        let which = if service == Service::Fcm { "FCM" } else { "APNs" };
        return Err(field_error(
            "app_id",
            format!("this relay serves no app {app_id:?} with {which} (see GetRelayInfo.app_ids)"),
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
        token: reg.token.clone(),
        app_id: reg.app_id.clone(),
        push_key: reg.push_key.to_vec(),
        device_id: reg.device_id.to_vec(),
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
}

fn at_rest_aad(account_index: &AccountIndex, device_id: &DeviceId) -> Vec<u8> {
    [AT_REST_AAD, account_index, device_id].concat()
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
    }

    fn apns_reg() -> DeviceRegistration {
        DeviceRegistration {
            service: PushService::Apns as i32,
            token: "ab".repeat(32),
            app_id: "ios.app".into(),
            push_key: vec![1; 32],
            device_id: vec![2; 16],
        }
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
        assert!(m(|r| r.service = 9).starts_with("sealed.service:"));
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
        let blob = seal_at_rest(&key, &[1; 32], &reg);
        assert_eq!(open_at_rest(&key, &[1; 32], &reg.device_id, &blob).unwrap(), reg);
        assert_eq!(
            open_at_rest(&key, &[2; 32], &reg.device_id, &blob),
            Err(AtRestError::Decrypt)
        );
        assert_eq!(
            open_at_rest(&[8; 32], &[1; 32], &reg.device_id, &blob),
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
            let _ = open_at_rest(&[0; 32], &[0; 32], &[0; 16], &blob);
        }
    }
}
