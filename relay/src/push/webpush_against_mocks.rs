//! The Web Push and Huawei Push Kit senders against the mocks from `tidings-mock-push`.
//! Every address here is on the loopback interface; the SSRF cases make no request at all.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use tidings_mock_push::{
    HmsFailure, HmsMockConfig, MockHms, MockWebPush, TlsIdentity, Transport, VapidKeyPair, WebPushFailure,
    WebPushMockConfig, WebPushSubscription,
};

use super::webpush::resolve::tests::Table;
use super::*;
use crate::config::IpBlock;

fn loopback_policy(allow_http: bool) -> EndpointPolicy {
    EndpointPolicy::new(allow_http, &[], vec![IpBlock::parse("127.0.0.1/32").unwrap()])
}

fn settings(vapid: &VapidKeyPair, policy: EndpointPolicy, ca: Option<&str>) -> WebPushSettings {
    WebPushSettings {
        vapid_key_pem: vapid.private_key_pem.clone(),
        subject: "mailto:ops@example.com".into(),
        policy,
        ca_pem: ca.map(str::to_owned),
        timeout: Duration::from_secs(5),
    }
}

fn push_to(sub: &WebPushSubscription, payload: &[u8]) -> WebPushPush {
    WebPushPush {
        target: WebPushTarget {
            endpoint: sub.endpoint.clone(),
            p256dh: sub.subscriber.p256dh,
            auth: sub.subscriber.auth,
        },
        payload: payload.to_vec(),
        urgency: Urgency::High,
        ttl_s: 3600,
        topic: Some("0123456789abcdef0123456789abcdef".into()),
    }
}

fn done(d: Delivery) -> Outcome {
    match d {
        Delivery::Done(o) => o,
        Delivery::TooLarge { reason } => panic!("too large: {reason}"),
    }
}

async fn tls_mock() -> MockWebPush {
    MockWebPush::start(WebPushMockConfig::new(Transport::Tls))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_web_push_arrives_encrypted_for_the_subscriber_and_signed_by_the_app() {
    let vapid = VapidKeyPair::generate();
    let mock = tls_mock().await;
    let sender = WebPushSender::new(settings(&vapid, loopback_policy(false), mock.ca_pem())).unwrap();
    assert_eq!(sender.vapid_public_key(), vapid.public_key);
    let sub = mock.subscribe(Some(vapid.public_key));
    let enc = b"bm9uY2UrY2lwaGVydGV4dA==";
    assert_eq!(done(sender.send(&push_to(&sub, enc)).await), Outcome::Delivered);
    let got = mock.wait_for(1, Duration::from_secs(5)).await.unwrap();
    let r = &got[0];
    assert_eq!(r.plaintext.as_deref(), Some(&enc[..]));
    assert_eq!((r.ttl, r.urgency.as_deref()), (Some(3600), Some("high")));
    assert_eq!(r.topic.as_deref(), Some("0123456789abcdef0123456789abcdef"));
    assert_eq!(r.vapid_subject.as_deref(), Some("mailto:ops@example.com"));
    assert_eq!(r.headers["content-encoding"], "aes128gcm");
    assert_eq!(r.body_len, enc.len() + webpush::ece::OVERHEAD);
    // The next push to the same origin reuses the VAPID token.
    let mut config = push_to(&sub, enc);
    config.urgency = Urgency::Normal;
    config.topic = None;
    assert_eq!(done(sender.send(&config).await), Outcome::Delivered);
    let got = mock.wait_for(2, Duration::from_secs(5)).await.unwrap();
    assert_eq!(got[1].urgency.as_deref(), Some("normal"));
    assert_eq!(got[1].topic, None);
    assert_eq!(got[0].headers["authorization"], got[1].headers["authorization"]);
}

#[tokio::test]
async fn http_endpoints_need_the_operators_leave_and_speak_http1() {
    let vapid = VapidKeyPair::generate();
    let mock = MockWebPush::start(WebPushMockConfig::new(Transport::H2c))
        .await
        .unwrap();
    let sub = mock.subscribe(None);
    let allowed = WebPushSender::new(settings(&vapid, loopback_policy(true), None)).unwrap();
    assert_eq!(done(allowed.send(&push_to(&sub, b"x")).await), Outcome::Delivered);
    assert_eq!(mock.delivered()[0].plaintext.as_deref(), Some(&b"x"[..]));
    mock.clear();
    let strict_http = WebPushSender::new(settings(&vapid, loopback_policy(false), None)).unwrap();
    let before = mock.requests();
    match done(strict_http.send(&push_to(&sub, b"x")).await) {
        Outcome::TokenDead { reason } => assert!(
            reason.starts_with("web push endpoint refused: must be an https:// URL (got http://)"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(mock.requests(), before, "nothing was sent");
}

#[tokio::test]
async fn answers_become_outcomes() {
    let vapid = VapidKeyPair::generate();
    let mock = tls_mock().await;
    let sender = WebPushSender::new(settings(&vapid, loopback_policy(false), mock.ca_pem())).unwrap();
    let sub = mock.subscribe(Some(vapid.public_key));
    mock.fail_next(1, WebPushFailure::unavailable());
    assert!(matches!(
        done(sender.send(&push_to(&sub, b"x")).await),
        Outcome::Retry { after: None, .. }
    ));
    mock.fail_next(1, WebPushFailure::too_many(30));
    assert!(matches!(
        done(sender.send(&push_to(&sub, b"x")).await),
        Outcome::Retry { after: Some(a), .. } if a == Duration::from_secs(30)
    ));
    mock.fail_next(1, WebPushFailure::too_large());
    assert!(matches!(
        sender.send(&push_to(&sub, b"x")).await,
        Delivery::TooLarge { .. }
    ));
    // A redirect is not followed: the place it points to hears nothing.
    let elsewhere = tls_mock().await;
    let target = elsewhere.subscribe(None);
    mock.fail_next(1, WebPushFailure::redirect(&target.endpoint));
    match done(sender.send(&push_to(&sub, b"x")).await) {
        Outcome::ConfigError { reason } => assert!(reason.contains("does not follow redirects"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(elsewhere.requests(), 0);
    // A key the subscription was not made with.
    let other = mock.subscribe(Some(VapidKeyPair::generate().public_key));
    assert!(
        matches!(done(sender.send(&push_to(&other, b"x")).await), Outcome::ConfigError { reason } if reason.starts_with("Web Push 403"))
    );
    for status in [404, 410] {
        let gone = mock.subscribe(None);
        mock.mark_gone(&gone.id, status);
        match done(sender.send(&push_to(&gone, b"x")).await) {
            Outcome::TokenDead { reason } => {
                assert!(reason.starts_with(&format!("Web Push {status}")), "{reason}");
                assert!(
                    !reason.contains(&gone.id),
                    "the reason names the subscription: {reason}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
    // Too large to encrypt into one 4096-byte body: refused before any request.
    let before = mock.requests();
    assert!(matches!(
        sender
            .send(&push_to(&sub, &vec![b'a'; WEBPUSH_MAX_ENC_LEN + 1]))
            .await,
        Delivery::TooLarge { .. }
    ));
    assert_eq!(mock.requests(), before);
    assert_eq!(
        done(
            sender
                .send(&push_to(&sub, &vec![b'a'; WEBPUSH_MAX_ENC_LEN]))
                .await
        ),
        Outcome::Delivered
    );
}

#[tokio::test]
async fn refused_endpoints_make_no_request() {
    let vapid = VapidKeyPair::generate();
    let identity = Arc::new(TlsIdentity::generate(&["push.test".into(), "private.test".into()]).unwrap());
    let mut config = WebPushMockConfig::new(Transport::Tls);
    config.tls = Some(identity.clone());
    let mock = MockWebPush::start(config).await.unwrap();
    let port = mock.addr().port();
    let sub = mock.subscribe(None);
    let names = Arc::new(Table(
        HashMap::from([
            ("localhost", vec!["127.0.0.1"]),
            ("push.test", vec!["127.0.0.1"]),
            ("private.test", vec!["10.0.0.1"]),
        ]),
        AtomicUsize::new(0),
    ));
    let strict = WebPushSender::with_resolver(
        settings(&vapid, EndpointPolicy::strict(), Some(identity.ca_pem())),
        names.clone(),
    )
    .unwrap();
    let at = |host: &str| {
        let mut p = push_to(&sub, b"x");
        p.target.endpoint = format!("https://{host}:{port}/push/{}", sub.id);
        p
    };
    for (host, says) in [
        ("127.0.0.1", "host is a loopback address (127.0.0.1)"),
        ("[::1]", "host is a loopback address (::1)"),
        ("10.0.0.1", "host is a private address (10.0.0.1)"),
        (
            "169.254.169.254",
            "host is a link-local address (169.254.169.254)",
        ),
        ("localhost", "host resolves to a loopback address (127.0.0.1)"),
        ("private.test", "host resolves to a private address (10.0.0.1)"),
    ] {
        match done(strict.send(&at(host)).await) {
            Outcome::TokenDead { reason } => assert!(
                reason.starts_with(&format!("web push endpoint refused: {says}")),
                "{host}: {reason}"
            ),
            other => panic!("{host}: {other:?}"),
        }
    }
    assert_eq!(mock.requests(), 0, "no refused endpoint was contacted");
    // Allowed by name, a host the system resolver has never heard of is reached at the
    // address the guard checked: the connection goes where the check looked.
    let allowing = EndpointPolicy::new(false, &["push.test".into()], Vec::new());
    let allowed =
        WebPushSender::with_resolver(settings(&vapid, allowing, Some(identity.ca_pem())), names).unwrap();
    assert_eq!(done(allowed.send(&at("push.test")).await), Outcome::Delivered);
    assert_eq!(mock.requests(), 1);
}

async fn hms(transport: Transport) -> (MockHms, HmsSender) {
    let mock = MockHms::start(HmsMockConfig::new("104123456", transport))
        .await
        .unwrap();
    let sender = HmsSender::new(
        hms_settings(&mock, mock.client_secret()),
        TokenRefreshes::default(),
    )
    .await
    .unwrap();
    (mock, sender)
}

fn hms_settings(mock: &MockHms, secret: &str) -> HmsSettings {
    HmsSettings {
        app_id: "104123456".into(),
        client_id: "104123456".into(),
        client_secret: secret.into(),
        endpoint: mock.endpoint(),
        token_endpoint: mock.token_endpoint(),
        ca_pem: mock.ca_pem().map(str::to_owned),
        timeout: Duration::from_secs(5),
    }
}

fn hms_push(token: &str) -> HmsPush {
    HmsPush {
        token: token.into(),
        enc: "ZW5j".into(),
        high_priority: true,
        ttl_s: 60,
    }
}

#[tokio::test]
async fn an_hms_data_message_arrives_and_an_expired_token_is_renewed_once() {
    for transport in [Transport::Tls, Transport::H2c] {
        let (mock, sender) = hms(transport).await;
        assert_eq!(
            done(sender.send(&hms_push("IQAAAAtok")).await),
            Outcome::Delivered
        );
        let got = mock.delivered();
        assert_eq!(got[0].token, "IQAAAAtok");
        assert_eq!(got[0].data["enc"], "ZW5j");
        assert_eq!(got[0].body["message"]["android"]["urgency"], "HIGH");
        assert_eq!(mock.token_grants(), 1);
        mock.expire_access_tokens();
        assert_eq!(
            done(sender.send(&hms_push("IQAAAAtok")).await),
            Outcome::Delivered
        );
        assert_eq!(mock.token_grants(), 2, "one refresh");
        assert_eq!(mock.delivered().len(), 2);
    }
}

#[tokio::test]
async fn hms_result_codes_become_outcomes() {
    let (mock, sender) = hms(Transport::Tls).await;
    mock.mark_dead("IQAAAAdead");
    assert!(
        matches!(done(sender.send(&hms_push("IQAAAAdead")).await), Outcome::TokenDead { reason } if reason.contains("80300007") && !reason.contains("IQAAAAdead"))
    );
    mock.fail_next(1, HmsFailure::too_large());
    assert!(matches!(
        sender.send(&hms_push("t")).await,
        Delivery::TooLarge { .. }
    ));
    mock.fail_next(1, HmsFailure::flow_control());
    assert!(matches!(
        done(sender.send(&hms_push("t")).await),
        Outcome::Retry { .. }
    ));
    mock.fail_next(1, HmsFailure::new(200, "80100003", "retry"));
    assert!(matches!(
        done(sender.send(&hms_push("t")).await),
        Outcome::Retry { .. }
    ));
    // Expired twice in a row: the refresh did not help, so it is the configuration.
    mock.fail_next(2, HmsFailure::token_expired());
    assert!(matches!(
        done(sender.send(&hms_push("t")).await),
        Outcome::ConfigError { .. }
    ));
    let refused = HmsSender::new(hms_settings(&mock, "wrong"), TokenRefreshes::default()).await;
    assert!(
        matches!(refused, Err(PushConfigError::OAuthRejected(r)) if r.contains("1101") && !r.contains("wrong"))
    );
}
