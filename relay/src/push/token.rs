//! [`DeviceToken`]: a provider's device token, which must never be printed.

use std::fmt;
use std::ops::Deref;

/// An APNs, FCM or Huawei device token. Anyone holding it can push to the device, and it
/// links the device to whatever it is printed beside, so `Debug` shows only its length
/// and there is no `Display`: a token reaches a string only through [`DeviceToken::as_str`],
/// where a request needs it.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct DeviceToken(String);

impl DeviceToken {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> DeviceToken {
        DeviceToken(token.into())
    }

    /// The token itself, for the request that carries it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for DeviceToken {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<String> for DeviceToken {
    fn from(token: String) -> DeviceToken {
        DeviceToken(token)
    }
}

impl From<&str> for DeviceToken {
    fn from(token: &str) -> DeviceToken {
        DeviceToken(token.to_owned())
    }
}

impl fmt::Debug for DeviceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceToken(<{} bytes>)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_prints_nothing_of_the_token() {
        let t = DeviceToken::from("a1b2c3d4e5f6");
        assert_eq!(format!("{t:?}"), "DeviceToken(<12 bytes>)");
        assert_eq!(t.as_str(), "a1b2c3d4e5f6");
        assert_eq!(t.len(), 12);
    }

    #[test]
    fn the_push_structs_print_no_token() {
        let token = "f00dfeedf00dfeedf00dfeedf00dfeed";
        let apns = crate::push::ApnsPush {
            token: token.into(),
            sandbox: false,
            kind: crate::push::ApnsKind::Background,
            enc: "ZW5j".into(),
            expiration: 0,
            collapse_id: None,
        };
        let fcm = crate::push::FcmPush {
            token: token.into(),
            enc: "ZW5j".into(),
            high_priority: true,
            ttl_s: 60,
            collapse_key: None,
        };
        let hms = crate::push::HmsPush {
            token: token.into(),
            enc: "ZW5j".into(),
            high_priority: true,
            ttl_s: 60,
        };
        for printed in [format!("{apns:?}"), format!("{fcm:?}"), format!("{hms:?}")] {
            assert!(!printed.contains(token), "{printed}");
            assert!(printed.contains("DeviceToken(<32 bytes>)"), "{printed}");
        }
    }
}
