//! Mock APNs, FCM, Web Push and Huawei Push Kit servers that check requests the way
//! Apple, Google, the Web Push services and Huawei do.
//!
//! Both serve HTTP/2 over TLS (a generated CA whose PEM clients trust, ALPN `h2`) or as
//! cleartext h2c, listen on port 0 by default, record what they receive, and can be told to
//! fail, hang or treat tokens as dead. [`fixtures`] makes the credentials a sender needs: an
//! APNs `.p8` key and a Google service-account file.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use tidings_mock_push::{ApnsKey, ApnsMockConfig, MockApns, Transport};
//! let key = ApnsKey::generate("ABC123DEFG", "TEAM123456");
//! let apns = MockApns::start(ApnsMockConfig::new(&key, "com.example.app", Transport::Tls)).await?;
//! // point a sender at apns.endpoint(), trusting apns.ca_pem(), then:
//! let pushes = apns.wait_for(1, std::time::Duration::from_secs(5)).await?;
//! # Ok(()) }
//! ```

pub mod apns;
pub mod fcm;
pub mod fixtures;
pub mod hms;
pub mod jwt;
mod record;
mod server;
pub mod tls;
pub mod webpush;

pub use apns::{APNS_MAX_BODY, ApnsFailure, ApnsMockConfig, ApnsRequest, MockApns};
pub use fcm::{FCM_MAX_DATA, FcmFailure, FcmMockConfig, FcmRequest, JWT_BEARER_GRANT, MockFcm};
pub use fixtures::{ApnsKey, GOOGLE_TOKEN_URI, RsaKey, ServiceAccount, VapidKeyPair};
pub use hms::{HMS_MAX_DATA, HmsFailure, HmsMockConfig, HmsRequest, MockHms};
pub use record::WaitTimeout;
pub use server::{StartError, Transport};
pub use tls::{TlsError, TlsIdentity};
pub use webpush::{
    MockWebPush, Subscriber, WEBPUSH_MAX_BODY, WebPushFailure, WebPushMockConfig, WebPushRequest,
    WebPushSubscription,
};
#[cfg(test)]
mod testing;
