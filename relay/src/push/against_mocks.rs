//! The senders against the mock providers from `tidings-mock-push`, over TLS and h2c.

use std::sync::Arc;
use std::time::Duration;

use tidings_mock_push::{
    ApnsFailure, ApnsKey, ApnsMockConfig, FcmFailure, FcmMockConfig, MockApns, MockFcm, ServiceAccount,
    Transport,
};
use tokio::task::JoinSet;

use super::*;

const TOPIC: &str = "com.example.messenger";
const WAIT: Duration = Duration::from_secs(10);

fn device(n: u8) -> String {
    hex::encode([n; 32])
}

fn apns_key() -> ApnsKey {
    ApnsKey::generate("ABC123DEFG", "TEAM123456")
}

fn apns_settings(key: &ApnsKey, production: &MockApns, sandbox: &MockApns) -> ApnsSettings {
    ApnsSettings {
        key_pem: key.private_key_pem.clone(),
        key_id: key.key_id.clone(),
        team_id: key.team_id.clone(),
        topic: TOPIC.into(),
        endpoint: production.endpoint(),
        sandbox_endpoint: sandbox.endpoint(),
        ca_pem: production.ca_pem().map(str::to_owned),
        timeout: Duration::from_secs(5),
    }
}

async fn apns(transport: Transport) -> (ApnsKey, MockApns, ApnsSender) {
    let key = apns_key();
    let mock = MockApns::start(ApnsMockConfig::new(&key, TOPIC, transport))
        .await
        .unwrap();
    let sender = ApnsSender::new(apns_settings(&key, &mock, &mock)).unwrap();
    (key, mock, sender)
}

fn alert(token: &str) -> ApnsPush {
    ApnsPush {
        token: token.into(),
        sandbox: false,
        kind: ApnsKind::Alert {
            title: "New message".into(),
            body: "Open tidings to read it".into(),
        },
        enc: "bm9uY2UrY2lwaGVydGV4dA==".into(),
        expiration: 1_900_000_000,
        collapse_id: None,
    }
}

fn background(token: &str) -> ApnsPush {
    ApnsPush {
        kind: ApnsKind::Background,
        collapse_id: Some("config".into()),
        ..alert(token)
    }
}

fn reason_of(outcome: &Outcome) -> &str {
    match outcome {
        Outcome::Delivered => "",
        Outcome::TokenDead { reason }
        | Outcome::Retry { reason, .. }
        | Outcome::ConfigError { reason }
        | Outcome::Failed { reason } => reason,
    }
}

#[tokio::test]
async fn apns_alert_arrives_over_tls_with_designs_headers_and_body() {
    let (key, mock, sender) = apns(Transport::Tls).await;
    assert_eq!(sender.send(&alert(&device(1))).await, Outcome::Delivered);
    let got = mock.wait_for(1, WAIT).await.unwrap();
    let push = &got[0];
    assert_eq!(push.token, device(1));
    assert_eq!(push.header("apns-topic"), Some(TOPIC));
    assert_eq!(push.header("apns-push-type"), Some("alert"));
    assert_eq!(push.header("apns-priority"), Some("10"));
    assert_eq!(push.header("apns-expiration"), Some("1900000000"));
    assert_eq!(push.header("apns-collapse-id"), None);
    assert!(push.header("authorization").unwrap().starts_with("bearer "));
    assert_eq!(
        push.body,
        serde_json::json!({"aps": {"alert": {"title": "New message", "body": "Open tidings to read it"},
                                   "mutable-content": 1},
                           "enc": "bm9uY2UrY2lwaGVydGV4dA=="})
    );
    let jwt = push
        .header("authorization")
        .unwrap()
        .trim_start_matches("bearer ");
    let header = crate::push::jwt::header_json(jwt);
    assert_eq!(header["kid"].as_str(), Some(key.key_id.as_str()));
}

#[tokio::test]
async fn apns_background_arrives_over_h2c() {
    let (_key, mock, sender) = apns(Transport::H2c).await;
    assert_eq!(sender.send(&background(&device(2))).await, Outcome::Delivered);
    let push = &mock.wait_for(1, WAIT).await.unwrap()[0];
    assert_eq!(push.header("apns-push-type"), Some("background"));
    assert_eq!(push.header("apns-priority"), Some("5"));
    assert_eq!(push.header("apns-collapse-id"), Some("config"));
    assert_eq!(
        push.body,
        serde_json::json!({"aps": {"content-available": 1}, "enc": "bm9uY2UrY2lwaGVydGV4dA=="})
    );
}

#[tokio::test]
async fn apns_sandbox_pushes_go_to_the_sandbox_endpoint() {
    let key = apns_key();
    let production = MockApns::start(ApnsMockConfig::new(&key, TOPIC, Transport::H2c))
        .await
        .unwrap();
    let sandbox = MockApns::start(ApnsMockConfig::new(&key, TOPIC, Transport::H2c))
        .await
        .unwrap();
    let sender = ApnsSender::new(apns_settings(&key, &production, &sandbox)).unwrap();
    let push = ApnsPush {
        sandbox: true,
        ..alert(&device(3))
    };
    assert_eq!(sender.send(&push).await, Outcome::Delivered);
    assert_eq!(sender.send(&alert(&device(4))).await, Outcome::Delivered);
    assert_eq!(
        sandbox
            .delivered()
            .iter()
            .map(|p| p.token.clone())
            .collect::<Vec<_>>(),
        [device(3)]
    );
    assert_eq!(
        production
            .delivered()
            .iter()
            .map(|p| p.token.clone())
            .collect::<Vec<_>>(),
        [device(4)]
    );
}

#[tokio::test]
async fn apns_provider_token_is_reused_across_many_concurrent_sends() {
    let (_key, mock, sender) = apns(Transport::Tls).await;
    let sender = Arc::new(sender);
    let mut sends = JoinSet::new();
    for n in 0..100u8 {
        let sender = sender.clone();
        sends.spawn(async move { sender.send(&alert(&device(n))).await });
    }
    while let Some(outcome) = sends.join_next().await {
        assert_eq!(outcome.unwrap(), Outcome::Delivered);
    }
    assert_eq!(mock.delivered().len(), 100);
    assert_eq!(mock.distinct_provider_tokens(), 1);
}

#[tokio::test]
async fn apns_answers_map_to_outcomes() {
    let (key, mock, sender) = apns(Transport::H2c).await;
    mock.mark_dead(&device(10));
    mock.bind_token_topic(&device(11), "com.other.app");
    let cases = [
        (alert(&device(10)), "TokenDead", "APNs 410 Unregistered"),
        (alert(&device(11)), "TokenDead", "APNs 400 DeviceTokenNotForTopic"),
        (alert("abcd"), "TokenDead", "APNs 400 BadDeviceToken"),
        (alert("not-hex!"), "TokenDead", "malformed APNs device token"),
    ];
    for (push, kind, reason) in cases {
        let outcome = sender.send(&push).await;
        assert_eq!(
            format!("{outcome:?}").split_whitespace().next().unwrap(),
            kind,
            "{outcome:?}"
        );
        assert_eq!(reason_of(&outcome), reason);
    }

    mock.fail_next(1, ApnsFailure::unavailable().retry_after(7));
    mock.fail_next(1, ApnsFailure::too_many_requests());
    mock.fail_next(1, ApnsFailure::new(500, "InternalServerError"));
    mock.fail_next(1, ApnsFailure::new(403, "Forbidden"));
    let expected = [
        Outcome::Retry {
            after: Some(Duration::from_secs(7)),
            reason: "APNs 503 ServiceUnavailable".into(),
        },
        Outcome::Retry {
            after: None,
            reason: "APNs 429 TooManyRequests".into(),
        },
        Outcome::Retry {
            after: None,
            reason: "APNs 500 InternalServerError".into(),
        },
        Outcome::ConfigError {
            reason: "APNs 403 Forbidden".into(),
        },
    ];
    for outcome in expected {
        assert_eq!(sender.send(&alert(&device(12))).await, outcome);
    }

    // Too big for Apple: refused for itself, the token is fine.
    for kind in [ApnsKind::Background, alert("").kind] {
        let max = apns_max_enc_len(&kind);
        let fits = ApnsPush {
            kind: kind.clone(),
            enc: "A".repeat(max),
            ..background(&device(13))
        };
        assert_eq!(sender.send(&fits).await, Outcome::Delivered);
        let over = ApnsPush {
            enc: "A".repeat(max + 1),
            ..fits
        };
        assert_eq!(
            sender.send(&over).await,
            Outcome::Failed {
                reason: "APNs 413 PayloadTooLarge".into()
            }
        );
    }
    let too_long = ApnsPush {
        collapse_id: Some("c".repeat(65)),
        ..alert(&device(14))
    };
    assert!(matches!(sender.send(&too_long).await, Outcome::Failed { .. }));

    // Configuration problems: wrong topic, a key Apple does not know.
    let mut settings = apns_settings(&key, &mock, &mock);
    settings.topic = "com.example.wrong".into();
    let wrong_topic = ApnsSender::new(settings).unwrap();
    assert_eq!(
        wrong_topic.send(&alert(&device(15))).await,
        Outcome::ConfigError {
            reason: "APNs 400 TopicDisallowed".into()
        }
    );
    let mut settings = apns_settings(&key, &mock, &mock);
    settings.key_pem = apns_key().private_key_pem;
    let wrong_key = ApnsSender::new(settings).unwrap();
    assert_eq!(
        wrong_key.send(&alert(&device(15))).await,
        Outcome::ConfigError {
            reason: "APNs 403 InvalidProviderToken".into()
        }
    );
}

#[tokio::test]
async fn apns_hang_times_out_and_is_retried_without_leaking_the_token() {
    let key = apns_key();
    let mock = MockApns::start(ApnsMockConfig::new(&key, TOPIC, Transport::Tls))
        .await
        .unwrap();
    let mut settings = apns_settings(&key, &mock, &mock);
    settings.timeout = Duration::from_millis(300);
    let sender = ApnsSender::new(settings).unwrap();
    mock.set_delay(Some(Duration::from_secs(3600)));
    let outcome = tokio::time::timeout(WAIT, sender.send(&alert(&device(20))))
        .await
        .unwrap();
    assert!(
        matches!(&outcome, Outcome::Retry { after: None, reason } if reason.contains("timed out")),
        "{outcome:?}"
    );
    assert!(!reason_of(&outcome).contains(&device(20)));
    mock.set_delay(None);
    assert_eq!(sender.send(&alert(&device(20))).await, Outcome::Delivered);
}

#[tokio::test]
async fn apns_unreachable_endpoint_is_retried() {
    let (_key, mock, sender) = apns(Transport::H2c).await;
    mock.shutdown().await;
    let outcome = tokio::time::timeout(WAIT, sender.send(&alert(&device(21))))
        .await
        .unwrap();
    assert!(
        matches!(outcome, Outcome::Retry { after: None, .. }),
        "{outcome:?}"
    );
    assert!(!reason_of(&outcome).contains(&device(21)));
}

async fn fcm_mock(transport: Transport) -> (ServiceAccount, MockFcm) {
    let mut account = ServiceAccount::generate("tidings-test");
    let mock = MockFcm::start(FcmMockConfig::new(&account, transport))
        .await
        .unwrap();
    account.token_uri = mock.token_uri();
    (account, mock)
}

fn fcm_settings(account: &ServiceAccount, mock: &MockFcm) -> FcmSettings {
    FcmSettings {
        service_account_json: account.to_json(),
        endpoint: mock.endpoint(),
        ca_pem: mock.ca_pem().map(str::to_owned),
        timeout: Duration::from_secs(5),
    }
}

async fn fcm(transport: Transport) -> (ServiceAccount, MockFcm, FcmSender) {
    let (account, mock) = fcm_mock(transport).await;
    let sender = FcmSender::new(fcm_settings(&account, &mock)).await.unwrap();
    (account, mock, sender)
}

fn fcm_push(token: &str) -> FcmPush {
    FcmPush {
        token: token.into(),
        enc: "bm9uY2UrY2lwaGVydGV4dA==".into(),
        high_priority: true,
        ttl_s: 86_400,
        collapse_key: None,
    }
}

#[tokio::test]
async fn fcm_push_arrives_over_tls_and_the_access_token_is_reused() {
    let (_account, mock, sender) = fcm(Transport::Tls).await;
    assert_eq!(mock.token_grants(), 1, "warmed at start");
    assert_eq!(sender.project_id(), "tidings-test");
    let sender = Arc::new(sender);
    let mut sends = JoinSet::new();
    for n in 0..100 {
        let sender = sender.clone();
        sends.spawn(async move { sender.send(&fcm_push(&format!("fcm-token-{n}"))).await });
    }
    while let Some(outcome) = sends.join_next().await {
        assert_eq!(outcome.unwrap(), Outcome::Delivered);
    }
    assert_eq!(mock.token_grants(), 1);
    let got = mock.wait_for(100, WAIT).await.unwrap();
    let first = got.iter().find(|p| p.token == "fcm-token-0").unwrap();
    assert_eq!(first.project, "tidings-test");
    assert_eq!(
        first.body,
        serde_json::json!({"message": {"token": "fcm-token-0", "data": {"enc": "bm9uY2UrY2lwaGVydGV4dA=="},
                                       "android": {"priority": "HIGH", "ttl": "86400s"}}})
    );
}

#[tokio::test]
async fn fcm_normal_priority_push_arrives_over_h2c() {
    let (_account, mock, sender) = fcm(Transport::H2c).await;
    let push = FcmPush {
        high_priority: false,
        ttl_s: 60,
        collapse_key: Some("cfg".into()),
        ..fcm_push("t")
    };
    assert_eq!(sender.send(&push).await, Outcome::Delivered);
    let android = &mock.wait_for(1, WAIT).await.unwrap()[0].body["message"]["android"];
    assert_eq!(
        *android,
        serde_json::json!({"priority": "NORMAL", "ttl": "60s", "collapse_key": "cfg"})
    );
}

#[tokio::test]
async fn fcm_answers_map_to_outcomes() {
    let (_account, mock, sender) = fcm(Transport::H2c).await;
    mock.mark_dead("dead-token");
    let dead = sender.send(&fcm_push("dead-token")).await;
    assert!(
        matches!(&dead, Outcome::TokenDead { reason } if reason.contains("UNREGISTERED")),
        "{dead:?}"
    );
    assert!(!reason_of(&dead).contains("dead-token"));

    mock.fail_next(1, FcmFailure::quota_exceeded().retry_after(30));
    mock.fail_next(1, FcmFailure::unavailable().retry_after(2));
    mock.fail_next(1, FcmFailure::internal());
    mock.fail_next(1, FcmFailure::sender_id_mismatch());
    mock.fail_next(1, FcmFailure::invalid_argument());
    mock.fail_next(1, FcmFailure::invalid_token());
    let kinds: Vec<Outcome> = {
        let mut outcomes = Vec::new();
        for _ in 0..6 {
            outcomes.push(sender.send(&fcm_push("live")).await);
        }
        outcomes
    };
    assert!(
        matches!(kinds[0], Outcome::Retry { after: Some(a), .. } if a == Duration::from_secs(30)),
        "{kinds:?}"
    );
    assert!(
        matches!(kinds[1], Outcome::Retry { after: Some(a), .. } if a == Duration::from_secs(2)),
        "{kinds:?}"
    );
    assert!(
        matches!(kinds[2], Outcome::Retry { after: None, .. }),
        "{kinds:?}"
    );
    assert!(matches!(&kinds[3], Outcome::ConfigError { reason } if reason.contains("SENDER_ID_MISMATCH")));
    // An invalid argument that is not about the token: the relay's request or the project.
    assert!(matches!(kinds[4], Outcome::ConfigError { .. }), "{kinds:?}");
    assert!(
        matches!(&kinds[5], Outcome::TokenDead { reason } if reason.contains("INVALID_ARGUMENT")),
        "{kinds:?}"
    );

    // The mock, like FCM, refuses a token it cannot parse by naming the token.
    let unparsable = sender.send(&fcm_push("")).await;
    assert!(matches!(unparsable, Outcome::TokenDead { .. }), "{unparsable:?}");

    let fits = FcmPush {
        enc: "A".repeat(FCM_MAX_ENC_LEN),
        ..fcm_push("live")
    };
    assert_eq!(sender.send(&fits).await, Outcome::Delivered);
    let over = FcmPush {
        enc: "A".repeat(FCM_MAX_ENC_LEN + 1),
        ..fcm_push("live")
    };
    // Too big is the relay's bug, never the device's: reported as a configuration problem.
    assert!(matches!(sender.send(&over).await, Outcome::ConfigError { .. }));
}

#[tokio::test]
async fn fcm_revoked_access_token_is_replaced_once() {
    let (_account, mock, sender) = fcm(Transport::H2c).await;
    mock.revoke_access_tokens();
    assert_eq!(sender.send(&fcm_push("t")).await, Outcome::Delivered);
    assert_eq!(mock.token_grants(), 2);
    assert_eq!(
        mock.attempts().iter().map(|a| a.status).collect::<Vec<_>>(),
        [401, 200]
    );
}

#[tokio::test]
async fn fcm_access_token_is_refreshed_before_it_expires() {
    let (account, mock) = fcm_mock(Transport::H2c).await;
    mock.set_token_lifetime(Duration::from_secs(2));
    let sender = FcmSender::new(fcm_settings(&account, &mock)).await.unwrap();
    assert_eq!(sender.send(&fcm_push("t")).await, Outcome::Delivered);
    assert_eq!(mock.token_grants(), 1);
    // Half-way through a 2 s token the next send refreshes it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(sender.send(&fcm_push("t")).await, Outcome::Delivered);
    assert_eq!(mock.token_grants(), 2);
    assert_eq!(mock.delivered().len(), 2);
}

#[tokio::test]
async fn fcm_refused_credentials_fail_at_start_and_outages_do_not() {
    let (account, mock) = fcm_mock(Transport::Tls).await;
    let mut stranger = account.clone();
    stranger.client_email = "someone-else@tidings-test.iam.gserviceaccount.com".into();
    let refused = FcmSender::new(fcm_settings(&stranger, &mock)).await;
    assert!(
        matches!(refused, Err(PushConfigError::OAuthRejected(_))),
        "{refused:?}"
    );

    mock.fail_next_token_requests(1, FcmFailure::unavailable());
    let sender = FcmSender::new(fcm_settings(&account, &mock)).await.unwrap();
    assert_eq!(mock.token_grants(), 0);
    assert_eq!(sender.send(&fcm_push("t")).await, Outcome::Delivered);
    assert_eq!(mock.token_grants(), 1);

    mock.fail_next_token_requests(1, FcmFailure::unavailable().retry_after(4));
    mock.revoke_access_tokens();
    let outcome = sender.send(&fcm_push("t")).await;
    assert!(
        matches!(outcome, Outcome::Retry { after: Some(a), .. } if a == Duration::from_secs(4)),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn fcm_hang_times_out_and_is_retried() {
    let (account, mock) = fcm_mock(Transport::H2c).await;
    let mut settings = fcm_settings(&account, &mock);
    settings.timeout = Duration::from_millis(300);
    let sender = FcmSender::new(settings).await.unwrap();
    mock.set_delay(Some(Duration::from_secs(3600)));
    let outcome = tokio::time::timeout(WAIT, sender.send(&fcm_push("secret-token")))
        .await
        .unwrap();
    assert!(
        matches!(&outcome, Outcome::Retry { reason, .. } if reason.contains("timed out")),
        "{outcome:?}"
    );
    assert!(!reason_of(&outcome).contains("secret-token"));
}

#[tokio::test]
async fn wrong_ca_is_a_retryable_transport_failure() {
    let key = apns_key();
    let mock = MockApns::start(ApnsMockConfig::new(&key, TOPIC, Transport::Tls))
        .await
        .unwrap();
    let mut settings = apns_settings(&key, &mock, &mock);
    settings.ca_pem = Some(
        tidings_mock_push::TlsIdentity::generate(&[])
            .unwrap()
            .ca_pem()
            .to_owned(),
    );
    let sender = ApnsSender::new(settings).unwrap();
    let outcome = tokio::time::timeout(WAIT, sender.send(&alert(&device(30))))
        .await
        .unwrap();
    assert!(matches!(outcome, Outcome::Retry { .. }), "{outcome:?}");
    assert_eq!(mock.requests(), 0);
}
