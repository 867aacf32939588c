//! The `mock-push` binary as a demo runs it: every port 0, then each of the five services
//! it prints is reached at that address and accepts a push made with nothing but the
//! files it wrote (the APNs key, the service account, the HMS secret, the VAPID key and
//! the CA), the way a relay configured from them would send it.

// Test code: a failed unwrap is a failed test with its line.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tidings_mock_push::jwt::{Alg, sign};

const BIN: &str = env!("CARGO_BIN_EXE_mock-push");

/// Kills the mock when the test ends, passed or not.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary on free ports and returns it with what it printed, by label
/// ("mock APNs", "VAPID key", …), up to its last line.
fn start(dir: &Path) -> (Running, HashMap<String, String>) {
    let mut child = Command::new(BIN)
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let running = Running(child);
    let mut printed = HashMap::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        // Labels are padded to 19 columns, the value follows.
        let (label, value) = line.split_at(19.min(line.len()));
        printed.insert(label.trim().to_owned(), value.trim().to_owned());
        if label.starts_with("CA certificate") {
            return (running, printed);
        }
    }
    panic!("mock-push exited before printing its addresses: {printed:?}");
}

/// The URL a line starts with.
fn url(printed: &HashMap<String, String>, label: &str) -> String {
    let value = printed.get(label).unwrap_or_else(|| panic!("no {label:?} line"));
    let url = value.split(' ').next().unwrap().to_owned();
    assert!(url.starts_with("https://127.0.0.1:"), "{label}: {value}");
    url
}

/// An HTTP/2 client trusting only the mock's CA (every mock speaks h2 over TLS).
fn client(ca_pem: &str) -> reqwest::Client {
    use rustls_pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(10))
        .tls_backend_preconfigured(tls)
        .build()
        .unwrap()
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[test]
fn help_documents_the_new_ports_and_the_subscribe_endpoint() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "--webpush-port",
        "--hms-port",
        "--hms-app-id",
        "POST /subscribe",
        "applicationServerKey",
        "hms-client-secret",
        "vapid.pem",
        "allow_networks",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
}

#[tokio::test]
async fn every_service_answers_at_its_printed_address_with_the_written_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let (_mock, printed) = start(dir.path());
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
    let client = client(&read("ca.pem"));

    // APNs, production and sandbox: an ES256 provider token from the written .p8.
    let p8 = read("AuthKey_ABC123DEFG.p8");
    let jwt = sign(
        Alg::Es256,
        &p8,
        Some("ABC123DEFG"),
        &json!({"iss": "TEAM123456", "iat": now()}),
    );
    for label in ["mock APNs", "mock APNs sandbox"] {
        let response = client
            .post(format!("{}/3/device/{}", url(&printed, label), "ab".repeat(32)))
            .header("authorization", format!("bearer {jwt}"))
            .header("apns-topic", "com.example.messenger")
            .header("apns-push-type", "alert")
            .header("apns-priority", "10")
            .body(
                json!({"aps": {"alert": {"title": "t", "body": "b"}, "mutable-content": 1}, "enc": "AAAA"})
                    .to_string(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{label}");
        assert!(response.headers().contains_key("apns-id"), "{label}");
    }

    // FCM: the service account's token_uri is the mock's, and its grant works.
    let account: Value = serde_json::from_str(&read("service-account.json")).unwrap();
    let token_uri = account["token_uri"].as_str().unwrap();
    let fcm = url(&printed, "mock FCM");
    assert_eq!(token_uri, format!("{fcm}/token"));
    let assertion = sign(
        Alg::Rs256,
        account["private_key"].as_str().unwrap(),
        account["private_key_id"].as_str(),
        &json!({
            "iss": account["client_email"],
            "aud": token_uri,
            "scope": "https://www.googleapis.com/auth/firebase.messaging",
            "iat": now(),
            "exp": now() + 3600,
        }),
    );
    let form = [
        ("grant_type", tidings_mock_push::JWT_BEARER_GRANT),
        ("assertion", assertion.as_str()),
    ];
    let (status, granted) = json_of(client.post(token_uri).form(&form).send().await.unwrap()).await;
    assert_eq!(status, 200, "{granted}");
    let access = granted["access_token"].as_str().unwrap();
    let project = account["project_id"].as_str().unwrap();
    let (status, sent) = json_of(
        client
            .post(format!("{fcm}/v1/projects/{project}/messages:send"))
            .bearer_auth(access)
            .json(&json!({"message": {"token": "fcm-token", "data": {"enc": "AAAA"}}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{sent}");
    assert!(
        sent["name"]
            .as_str()
            .unwrap()
            .starts_with("projects/tidings-demo/messages/")
    );

    // HMS: the client-credentials grant with the written secret, at the printed token
    // endpoint, then a data message.
    let hms_line = &printed["mock HMS"];
    let hms = url(&printed, "mock HMS");
    assert!(
        hms_line.contains(&format!("token endpoint {hms}/oauth2/v3/token")),
        "{hms_line}"
    );
    assert!(printed["HMS client secret"].ends_with("(app id 104123456)"));
    let secret = read("hms-client-secret");
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", "104123456"),
        ("client_secret", secret.trim()),
    ];
    let (status, granted) = json_of(
        client
            .post(format!("{hms}/oauth2/v3/token"))
            .form(&form)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{granted}");
    let access = granted["access_token"].as_str().unwrap();
    let message = json!({"validate_only": false, "message": {
        "data": "{\"enc\":\"AAAA\"}", "token": ["IQAAAAdemo"], "android": {"urgency": "HIGH", "ttl": "60s"}}});
    let (status, sent) = json_of(
        client
            .post(format!("{hms}/v1/104123456/messages:send"))
            .bearer_auth(access)
            .json(&message)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, sent["code"].as_str()), (200, Some("80000000")), "{sent}");

    // Web Push: a subscription from POST /subscribe, restricted to the written VAPID key,
    // takes a push signed with that key and refuses one signed with another.
    let webpush = url(&printed, "mock Web Push");
    let vapid_pem = read("vapid.pem");
    let vapid = rcgen::KeyPair::from_pem(&vapid_pem).unwrap();
    let vapid_public = URL_SAFE_NO_PAD.encode(vapid.public_key_raw());
    assert!(printed["VAPID key"].ends_with(&format!("(public key {vapid_public})")));
    let (status, subscription) = json_of(
        client
            .post(format!("{webpush}/subscribe"))
            .json(&json!({"applicationServerKey": vapid_public}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{subscription}");
    let endpoint = subscription["endpoint"].as_str().unwrap();
    assert!(endpoint.starts_with(&format!("{webpush}/push/")), "{endpoint}");
    assert_eq!(subscription["expirationTime"], Value::Null);
    let p256dh = URL_SAFE_NO_PAD
        .decode(subscription["keys"]["p256dh"].as_str().unwrap())
        .unwrap();
    let auth = URL_SAFE_NO_PAD
        .decode(subscription["keys"]["auth"].as_str().unwrap())
        .unwrap();
    assert_eq!((p256dh.len(), p256dh[0], auth.len()), (65, 4, 16));

    let push = |pem: String, public: String| {
        let client = client.clone();
        let (endpoint, aud) = (endpoint.to_owned(), webpush.clone());
        async move {
            let jwt = sign(
                Alg::Es256,
                &pem,
                None,
                &json!({"aud": aud, "exp": now() + 3600, "sub": "mailto:ops@example.com"}),
            );
            // No body: a push without data needs no encryption (RFC 8030 section 5).
            client
                .post(endpoint)
                .header("authorization", format!("vapid t={jwt}, k={public}"))
                .header("ttl", "60")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(push(vapid_pem.clone(), vapid_public.clone()).await, 201);
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let other_public = URL_SAFE_NO_PAD.encode(other.public_key_raw());
    assert_eq!(push(other.serialize_pem(), other_public).await, 403);

    // Without a body the subscription takes any key; a body that names no key is refused.
    let (status, open) = json_of(client.post(format!("{webpush}/subscribe")).send().await.unwrap()).await;
    assert_eq!(status, 201, "{open}");
    assert_ne!(open["endpoint"], subscription["endpoint"]);
    let (status, refused) = json_of(
        client
            .post(format!("{webpush}/subscribe"))
            .json(&json!({"applicationServerKey": "bm90IGEga2V5"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
}
