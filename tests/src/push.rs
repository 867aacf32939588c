//! Fast Mode test rig: a mock APNs (production and sandbox), a mock FCM, a mock Web Push
//! service, a mock Huawei Push Kit, and a relay with apps that push through them.
//!
//! - [`PushRig`]: starts the mocks (sharing one TLS CA, or as h2c), writes the `.p8` key,
//!   the service account, the VAPID key, the HMS secret and the CA into a temp dir, and
//!   starts a [`TestRelay`] with two apps: [`APP_ID`] (APNs, FCM, Web Push and HMS) and
//!   [`APNS_ONLY_APP_ID`] (APNs only). Web Push endpoints on 127.0.0.1 are allowed
//!   (`[webpush] allow_networks`), as `http://` too when the mocks speak h2c.
//! - [`Device`]: one install's registration (service, token, push key, device id).
//! - [`subscribe_request`], [`signed_subscribe`], [`unsubscribe_request`]: requests built by
//!   hand, so a test can break exactly one thing a real client would never send.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tidings_mock_push::{
    ApnsKey, ApnsMockConfig, FcmMockConfig, HmsMockConfig, MockApns, MockFcm, MockHms, MockWebPush,
    ServiceAccount, TlsIdentity, Transport, VapidKeyPair, WebPushMockConfig, WebPushSubscription,
};
use tidings_proto::{
    push::decrypt_push,
    seal::seal_registration,
    sign,
    v1::{
        DeviceRegistration, PushNotification, PushService, StoreResponse, SubscribeRequest,
        SubscribeResponse, UnsubscribeRequest, UnsubscribeResponse, WebPushSubscription as WireWebPush,
    },
};
use tidings_relay::{
    clock::Clock,
    config::{Apns, App, Config, Fcm, Hms, WebPushApp},
    store::Subscription,
};
use tonic::Status;

use crate::{Account, STEP, TestRelay, now_s, within};

/// The app with both providers.
pub const APP_ID: &str = "com.example.messenger";
/// A second app, configured for APNs only.
pub const APNS_ONLY_APP_ID: &str = "com.example.ios-only";
/// The `apns-topic` of [`APP_ID`] (its bundle id), the only topic the mock APNs accepts.
pub const TOPIC: &str = APP_ID;
/// The topic of [`APNS_ONLY_APP_ID`].
pub const APNS_ONLY_TOPIC: &str = "com.example.ios-only";
/// The Firebase project of the service account.
pub const PROJECT: &str = "tidings-test";
/// The APNs key id.
pub const KEY_ID: &str = "ABC123DEFG";
/// The Apple team id.
pub const TEAM_ID: &str = "TEAM123456";
/// The AppGallery app id of [`APP_ID`].
pub const HMS_APP_ID: &str = "104123456";
/// The VAPID `sub` the relay sends.
pub const VAPID_SUBJECT: &str = "mailto:ops@example.com";
/// How long a test waits for pushes (retries with backoff take seconds).
pub const PUSH_WAIT: Duration = Duration::from_secs(45);

/// Three mock providers and a relay pushing through them.
pub struct PushRig {
    relay: Option<TestRelay>,
    /// Mock APNs production endpoint.
    pub apns: MockApns,
    /// Mock APNs sandbox endpoint.
    pub sandbox: MockApns,
    /// Mock FCM (send and OAuth token endpoints).
    pub fcm: MockFcm,
    /// Mock Web Push service (and its subscribers' user agent).
    pub webpush: MockWebPush,
    /// Mock Huawei Push Kit (send and OAuth token endpoints).
    pub hms: MockHms,
    /// The VAPID key of [`APP_ID`].
    pub vapid: VapidKeyPair,
    /// The APNs signing key the relay uses.
    pub apns_key: ApnsKey,
    /// The service account the relay uses.
    pub service_account: ServiceAccount,
    relay_pub: [u8; 32],
    dir: tempfile::TempDir,
}

/// A change to the relay configuration, applied at start.
type ConfigChange = Box<dyn FnOnce(&mut Config) + Send>;

/// Options of a [`PushRig`] before it starts.
pub struct PushRigBuilder {
    transport: Transport,
    changes: Vec<ConfigChange>,
    clock: Option<Arc<dyn Clock>>,
}

impl PushRig {
    /// Mocks over TLS and a relay with the rig's defaults.
    pub async fn start() -> PushRig {
        Self::builder().start().await
    }

    /// Options: transport, relay configuration.
    pub fn builder() -> PushRigBuilder {
        PushRigBuilder {
            transport: Transport::Tls,
            changes: Vec::new(),
            clock: None,
        }
    }

    /// The running relay.
    pub fn relay(&self) -> &TestRelay {
        self.relay.as_ref().expect("the relay is running")
    }

    /// The relay's X25519 key that registrations are sealed to.
    pub fn relay_pub(&self) -> [u8; 32] {
        self.relay_pub
    }

    /// Where the relay keeps its data (kept after [`PushRig::shutdown_relay`]).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The directory holding the credentials.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the relay (drain, flush, close); the mocks keep running and the data stays.
    pub async fn shutdown_relay(&mut self) {
        if let Some(relay) = self.relay.take() {
            relay.shutdown().await;
        }
    }

    /// Sends a Subscribe as is.
    pub async fn try_subscribe(&self, req: SubscribeRequest) -> Result<SubscribeResponse, Status> {
        let mut client = self.relay().relay_client().await;
        within(STEP, "subscribe", client.subscribe(req))
            .await
            .map(tonic::Response::into_inner)
    }

    /// A new account with an iPhone (APNs) and an Android phone (FCM), both subscribed
    /// to namespace 0: the cast of most provider tests.
    pub async fn account_with_phone_and_droid(&self, want_data: bool) -> (Account, Device, Device) {
        let account = Account::random();
        let (phone, droid) = (Device::apns(), Device::fcm());
        self.subscribe(&account, &phone, &[0], want_data).await;
        self.subscribe(&account, &droid, &[0], want_data).await;
        (account, phone, droid)
    }

    /// Subscribes `device` of `account` to `namespaces` (ascending); must be accepted.
    pub async fn subscribe(
        &self,
        account: &Account,
        device: &Device,
        namespaces: &[i32],
        want_data: bool,
    ) -> SubscribeResponse {
        let req = subscribe_request(
            account,
            &self.relay_pub,
            namespaces,
            want_data,
            &device.registration(),
        );
        self.try_subscribe(req).await.expect("subscribe accepted")
    }

    /// Sends an Unsubscribe as is.
    pub async fn try_unsubscribe(&self, req: UnsubscribeRequest) -> Result<UnsubscribeResponse, Status> {
        let mut client = self.relay().relay_client().await;
        within(STEP, "unsubscribe", client.unsubscribe(req))
            .await
            .map(tonic::Response::into_inner)
    }

    /// The stored subscription of (account, device_id), asked of the store directly.
    pub async fn subscription(&self, account: &Account, device_id: &[u8; 16]) -> Option<Subscription> {
        let index = self.relay().relay().keys().account_index(&account.id());
        within(
            STEP,
            "get_subscription",
            self.relay().store().get_subscription(&index, device_id),
        )
        .await
        .expect("the store answers")
    }

    /// An unsigned Store into a public namespace (0..=9); must be accepted.
    pub async fn deposit(&self, account: &Account, namespace: i32, data: &[u8]) -> StoreResponse {
        let mut client = self.relay().mailbox.clone();
        within(STEP, "store", client.store(account.deposit(namespace, data, 0)))
            .await
            .expect("store accepted")
            .into_inner()
    }

    /// An owner-signed Store (any namespace); must be accepted.
    pub async fn store_signed(&self, account: &Account, namespace: i32, data: &[u8]) -> StoreResponse {
        let mut client = self.relay().mailbox.clone();
        within(STEP, "store", client.store(account.store(namespace, data, 0)))
            .await
            .expect("store accepted")
            .into_inner()
    }

    /// Waits until the push outbox is empty: every job was delivered, dropped or given
    /// up, and every provider request it made was recorded by a mock.
    pub async fn settle(&self) {
        let store = self.relay().store();
        within(PUSH_WAIT, "the push outbox drains", async {
            loop {
                let stats = store.outbox_stats().await.expect("the store answers");
                if stats.depth == 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }
}

impl PushRigBuilder {
    /// Serve the mocks over TLS (default; the relay trusts their CA via `ca_file`) or h2c.
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Changes the relay configuration after the rig's apps and defaults are set.
    pub fn configure(mut self, change: impl FnOnce(&mut Config) + Send + 'static) -> Self {
        self.changes.push(Box::new(change));
        self
    }

    /// Runs the relay on this clock (message expiry, subscription expiry, retry times and
    /// the signature window follow it; provider tokens use real time).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Starts the mocks, writes the credentials and starts the relay.
    pub async fn start(self) -> PushRig {
        let dir = tempfile::tempdir().expect("a temp dir");
        let tls = Arc::new(TlsIdentity::generate(&[]).expect("a TLS identity"));
        let apns_key = ApnsKey::generate(KEY_ID, TEAM_ID);
        let mut apns_config = ApnsMockConfig::new(&apns_key, TOPIC, self.transport);
        apns_config.tls = Some(tls.clone());
        let apns = MockApns::start(apns_config.clone())
            .await
            .expect("mock APNs starts");
        let sandbox = MockApns::start(apns_config)
            .await
            .expect("mock APNs sandbox starts");
        let mut service_account = ServiceAccount::generate(PROJECT);
        let mut fcm_config = FcmMockConfig::new(&service_account, self.transport);
        fcm_config.tls = Some(tls.clone());
        let fcm = MockFcm::start(fcm_config).await.expect("mock FCM starts");
        service_account.token_uri = fcm.token_uri();

        let key_file = apns_key.write_p8(dir.path()).expect("write .p8");
        let service_account_file = service_account
            .write_json(dir.path())
            .expect("write service account");
        let mut webpush_config = WebPushMockConfig::new(self.transport);
        webpush_config.tls = Some(tls.clone());
        let webpush = MockWebPush::start(webpush_config)
            .await
            .expect("mock Web Push starts");
        let mut hms_config = HmsMockConfig::new(HMS_APP_ID, self.transport);
        hms_config.tls = Some(tls.clone());
        let hms = MockHms::start(hms_config).await.expect("mock HMS starts");
        let vapid = VapidKeyPair::generate();
        let vapid_key_file = vapid.write_pem(dir.path()).expect("write VAPID key");
        let hms_secret_file = dir.path().join("hms-secret");
        std::fs::write(&hms_secret_file, hms.client_secret()).expect("write HMS secret");
        let ca_file = (self.transport == Transport::Tls).then(|| {
            let path = dir.path().join("ca.pem");
            std::fs::write(&path, tls.ca_pem()).expect("write CA");
            path
        });
        let apns_app = Apns {
            key_file,
            key_id: KEY_ID.to_owned(),
            team_id: TEAM_ID.to_owned(),
            topic: TOPIC.to_owned(),
            endpoint: apns.endpoint(),
            sandbox_endpoint: sandbox.endpoint(),
            ca_file: ca_file.clone(),
        };
        let apps = vec![
            App {
                id: APP_ID.to_owned(),
                apns: Some(apns_app.clone()),
                fcm: Some(Fcm {
                    service_account_file,
                    endpoint: fcm.endpoint(),
                    ca_file: ca_file.clone(),
                }),
                services: None,
                webpush: Some(WebPushApp {
                    vapid_key_file,
                    subject: VAPID_SUBJECT.to_owned(),
                }),
                hms: Some(Hms {
                    app_id: HMS_APP_ID.to_owned(),
                    client_id: None,
                    client_secret_file: hms_secret_file,
                    endpoint: hms.endpoint(),
                    token_endpoint: hms.token_endpoint(),
                    ca_file: ca_file.clone(),
                }),
            },
            App {
                id: APNS_ONLY_APP_ID.to_owned(),
                apns: Some(Apns {
                    topic: APNS_ONLY_TOPIC.to_owned(),
                    ..apns_app
                }),
                fcm: None,
                services: None,
                webpush: None,
                hms: None,
            },
        ];
        let changes = self.changes;
        let h2c = self.transport == Transport::H2c;
        let mut builder = TestRelay::builder();
        if let Some(clock) = self.clock {
            builder = builder.clock(clock);
        }
        let relay = builder
            .data_dir(dir.path().join("data"))
            .configure(move |c| {
                c.apps = apps;
                // The mock Web Push service is on the loopback interface.
                c.webpush.allow_networks = vec!["127.0.0.1/32".to_owned()];
                c.webpush.allow_http = h2c;
                c.webpush.ca_file = ca_file;
                // Retries become due between polls; look often so tests stay quick.
                c.push.poll_interval_ms = 50;
                c.push.timeout_ms = 5_000;
                c.push.lease_ms = 20_000;
                for change in changes {
                    change(c);
                }
            })
            .start()
            .await;
        let relay_pub = relay.relay().keys().x25519_public();
        PushRig {
            relay: Some(relay),
            apns,
            sandbox,
            fcm,
            webpush,
            hms,
            vapid,
            apns_key,
            service_account,
            relay_pub,
            dir,
        }
    }
}

/// One app install: what it seals into its registration.
#[derive(Clone, Debug)]
pub struct Device {
    /// APNS, APNS_SANDBOX, FCM, WEBPUSH or HMS.
    pub service: PushService,
    /// The provider's device token.
    pub token: String,
    /// The app it belongs to.
    pub app_id: String,
    /// The key its pushes are encrypted with.
    pub push_key: [u8; 32],
    /// The install's id.
    pub device_id: [u8; 16],
    /// For WEBPUSH: the subscription (endpoint and the subscriber's keys).
    pub web_push: Option<WebPushSubscription>,
}

impl Device {
    /// A fresh install of [`APP_ID`] reached through `service`, with a random token.
    pub fn new(service: PushService) -> Device {
        Device {
            service,
            token: random_token(service),
            app_id: APP_ID.to_owned(),
            push_key: tidings_proto::random_bytes(),
            device_id: tidings_proto::random_bytes(),
            web_push: None,
        }
    }

    /// A UnifiedPush (or browser) install of [`APP_ID`], subscribed at the rig's mock Web
    /// Push service with the app's VAPID key, as a distributor would be.
    pub fn webpush(rig: &PushRig) -> Device {
        Device {
            token: String::new(),
            web_push: Some(rig.webpush.subscribe(Some(rig.vapid.public_key))),
            ..Device::new(PushService::Webpush)
        }
    }

    /// A Huawei phone on Push Kit.
    pub fn hms() -> Device {
        Device::new(PushService::Hms)
    }

    /// An iPhone on APNs production.
    pub fn apns() -> Device {
        Device::new(PushService::Apns)
    }

    /// A development build on the APNs sandbox.
    pub fn apns_sandbox() -> Device {
        Device::new(PushService::ApnsSandbox)
    }

    /// An Android phone on FCM.
    pub fn fcm() -> Device {
        Device::new(PushService::Fcm)
    }

    /// The same install after the provider rotated its token.
    pub fn rotated(&self) -> Device {
        Device {
            token: random_token(self.service),
            ..self.clone()
        }
    }

    /// The registration it seals to the relay.
    pub fn registration(&self) -> DeviceRegistration {
        DeviceRegistration {
            service: self.service as i32,
            token: self.token.clone(),
            app_id: self.app_id.clone(),
            push_key: self.push_key.to_vec(),
            device_id: self.device_id.to_vec(),
            web_push: self.web_push.as_ref().map(|w| WireWebPush {
                endpoint: w.endpoint.clone(),
                p256dh: w.subscriber.p256dh.to_vec(),
                auth: w.subscriber.auth.to_vec(),
            }),
        }
    }

    /// Decrypts a push's `enc` with this device's push key.
    pub fn decrypt(&self, enc: &str) -> PushNotification {
        decrypt_push(&self.push_key, enc).expect("the push decrypts with the device's push key")
    }
}

/// A token in the provider's format: 32 bytes of hex for APNs, an FCM-like string for FCM,
/// a Push Kit-like one for HMS, none for Web Push.
pub fn random_token(service: PushService) -> String {
    match service {
        PushService::Hms => format!("IQAAAACy{}", hex::encode(tidings_proto::random_bytes::<48>())),
        PushService::Webpush => String::new(),
        PushService::Fcm => format!(
            "{}:APA91b{}",
            hex::encode(tidings_proto::random_bytes::<8>()),
            hex::encode(tidings_proto::random_bytes::<64>())
        ),
        _ => hex::encode(tidings_proto::random_bytes::<32>()),
    }
}

/// A correctly sealed and signed Subscribe, `ts` = now.
pub fn subscribe_request(
    account: &Account,
    relay_pub: &[u8; 32],
    namespaces: &[i32],
    want_data: bool,
    reg: &DeviceRegistration,
) -> SubscribeRequest {
    let sealed = seal_registration(relay_pub, &account.id(), reg);
    signed_subscribe(account, namespaces, want_data, now_s(), sealed)
}

/// A Subscribe carrying `sealed` as given, signed by `account` over exactly these fields
/// (namespaces are signed as given, negative ones wrapped, so range checks can be tested).
pub fn signed_subscribe(
    account: &Account,
    namespaces: &[i32],
    want_data: bool,
    ts: i64,
    sealed: Vec<u8>,
) -> SubscribeRequest {
    let ns: Vec<u32> = namespaces.iter().map(|&n| n as u32).collect();
    let bytes = sign::subscribe_bytes(&account.id(), ts, want_data, &ns, &sealed);
    SubscribeRequest {
        account: account.id().to_vec(),
        namespaces: namespaces.to_vec(),
        want_data,
        ts,
        sealed,
        signature: sign::sign(account.signing_key(), &bytes).to_vec(),
    }
}

/// A signed Unsubscribe. A `device_id` that is not 16 bytes is signed as if zero-padded
/// (the relay refuses it before looking at the signature).
pub fn unsubscribe_request(account: &Account, device_id: &[u8], ts: i64) -> UnsubscribeRequest {
    let mut id = [0u8; 16];
    let n = device_id.len().min(16);
    id[..n].copy_from_slice(&device_id[..n]);
    let bytes = sign::unsubscribe_bytes(&account.id(), &id, ts);
    UnsubscribeRequest {
        account: account.id().to_vec(),
        device_id: device_id.to_vec(),
        ts,
        signature: sign::sign(account.signing_key(), &bytes).to_vec(),
    }
}
