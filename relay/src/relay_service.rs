//! The Relay gRPC service: `GetRelayInfo`, and Fast Mode registration (`Subscribe`,
//! `Unsubscribe`).
//!
//! A Subscribe is checked in a fixed order, cheapest first: the account key, the
//! namespace list, the sealed box's size, the signature (which covers `H(sealed)`, so
//! nobody can re-use a signature to attach their own token to someone's account), then
//! the box is opened and every registration field validated. Only then is anything
//! written; the token and push key are stored encrypted, under the account's keyed hash.

use std::sync::Arc;

use tidings_proto::{
    DEVICE_ID_LEN, namespace,
    seal::unseal_registration,
    sign,
    v1::{
        AppPushInfo, GetRelayInfoRequest, RelayInfo, SubscribeRequest, SubscribeResponse, UnsubscribeRequest,
        UnsubscribeResponse, relay_server::Relay,
    },
};
use tonic::{Request, Response, Status};
use tracing::debug;

use crate::{
    auth,
    clock::Clock,
    config::Limits,
    keys::RelayKeys,
    limits::{Op, RateLimiter, Spender},
    mailbox::storage_status,
    metrics::{Metrics, SubscriptionChange},
    registration::{self, AppCatalog},
    store::{AccountIndex, DeviceId, Store, Subscription},
};

/// The largest sealed registration accepted: a registration is a few hundred bytes.
const MAX_SEALED: usize = 8 * 1024;
/// The most namespaces one device may subscribe to.
const MAX_NAMESPACES: usize = 256;

/// The Relay service.
#[derive(Clone)]
pub struct RelayService {
    keys: Arc<RelayKeys>,
    app_ids: Vec<String>,
    limits: Limits,
    store: Arc<dyn Store>,
    apps: Arc<dyn AppCatalog + Send + Sync>,
    clock: Arc<dyn Clock>,
    rates: Option<Arc<RateLimiter>>,
    metrics: Option<Arc<Metrics>>,
    app_info: Vec<AppPushInfo>,
}

impl RelayService {
    /// A service publishing `keys`' X25519 key, the configured apps and the limits, and
    /// registering devices of the apps `apps` can reach.
    pub fn new(
        keys: Arc<RelayKeys>,
        app_ids: Vec<String>,
        limits: Limits,
        store: Arc<dyn Store>,
        apps: Arc<dyn AppCatalog + Send + Sync>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            keys,
            app_ids,
            limits,
            store,
            apps,
            clock,
            rates: None,
            metrics: None,
            app_info: Vec::new(),
        }
    }

    /// Publishes, per app, the services it accepts and its VAPID key in `GetRelayInfo`.
    #[must_use]
    pub fn with_app_info(mut self, info: Vec<AppPushInfo>) -> Self {
        self.app_info = info;
        self
    }

    /// Counts subscription changes in `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The push service of a stored subscription, for counting its removal: one read and
    /// one decryption, paid only when metrics are on. `unknown` if it cannot be read.
    async fn subscribed_service(&self, account_index: &AccountIndex, device_id: &DeviceId) -> &'static str {
        let Ok(Some(sub)) = self.store.get_subscription(account_index, device_id).await else {
            return "unknown";
        };
        registration::open_at_rest(self.keys.at_rest_key(), account_index, device_id, &sub.sealed)
            .map_or("unknown", |reg| reg.service.label())
    }

    /// Limits Subscribe and Unsubscribe per client IP and per account with `rates`.
    #[must_use]
    pub fn with_rate_limits(mut self, rates: Arc<RateLimiter>) -> Self {
        self.rates = Some(rates);
        self
    }

    fn check_ip<T>(&self, request: &Request<T>) -> Result<(), Status> {
        self.rates
            .as_ref()
            .map_or(Ok(()), |r| r.check_ip(Op::Subscribe, request))
    }

    /// After the signature check, so only the owner spends the account's budget.
    fn check_account(&self, account: &[u8; 32]) -> Result<(), Status> {
        self.rates.as_ref().map_or(Ok(()), |r| {
            r.check_account(Op::Subscribe, account, Spender::Owner)
        })
    }
}

#[tonic::async_trait]
impl Relay for RelayService {
    async fn get_relay_info(&self, _: Request<GetRelayInfoRequest>) -> Result<Response<RelayInfo>, Status> {
        Ok(Response::new(RelayInfo {
            x25519_public_key: self.keys.x25519_public().to_vec(),
            app_ids: self.app_ids.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            max_message_bytes: self.limits.max_message_bytes,
            max_ttl_ms: self.limits.max_ttl_ms,
            apps: self.app_info.clone(),
        }))
    }

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<SubscribeResponse>, Status> {
        self.check_ip(&request)?;
        let req = request.into_inner();
        let now_ms = self.clock.now_ms();
        let ValidSubscribe {
            account,
            namespaces,
            want_data,
            registration: reg,
        } = validate_subscribe(
            &req,
            &self.keys,
            self.apps.as_ref(),
            &self.limits,
            now_ms.div_euclid(1000),
        )?;
        self.check_account(&account)?;
        let account_index = self.keys.account_index(&account);
        let expires_ms = now_ms.saturating_add(self.limits.subscription_ttl_ms);
        let sub = Subscription {
            account_index,
            device_id: reg.device_id,
            namespaces,
            want_data,
            sealed: registration::seal_at_rest(self.keys.at_rest_key(), &account_index, &reg),
            expires_ms,
        };
        let added = self
            .store
            .upsert_subscription(sub)
            .await
            .map_err(storage_status)?;
        if let Some(m) = &self.metrics {
            let change = if added {
                SubscriptionChange::Added
            } else {
                SubscriptionChange::Renewed
            };
            m.subscription_changed(reg.service.label(), change);
        }
        debug!(account = %self.keys.fingerprint(&account), service = reg.service.label(), added, "subscribed");
        Ok(Response::new(SubscribeResponse { added, expires_ms }))
    }

    async fn unsubscribe(
        &self,
        request: Request<UnsubscribeRequest>,
    ) -> Result<Response<UnsubscribeResponse>, Status> {
        self.check_ip(&request)?;
        let req = request.into_inner();
        let ValidUnsubscribe {
            account,
            device_id,
            ts,
        } = validate_unsubscribe(&req, &self.limits, self.clock.now_s())?;
        self.check_account(&account)?;
        let account_index = self.keys.account_index(&account);
        let service = match &self.metrics {
            Some(_) => Some(self.subscribed_service(&account_index, &device_id).await),
            None => None,
        };
        let removed = self
            .store
            .remove_subscription(&account_index, &device_id, removable_expiry(ts, &self.limits))
            .await
            .map_err(storage_status)?;
        if let (true, Some(m), Some(service)) = (removed, &self.metrics, service) {
            m.subscription_changed(service, SubscriptionChange::Unsubscribed);
        }
        Ok(Response::new(UnsubscribeResponse { removed }))
    }
}

/// A Subscribe that passed every check, its registration unsealed and validated.
#[derive(Debug)]
pub struct ValidSubscribe {
    /// The account the device subscribes for.
    pub account: [u8; 32],
    /// Strictly ascending, each valid.
    pub namespaces: Vec<u32>,
    /// Whether pushes may carry the message data.
    pub want_data: bool,
    /// The unsealed, validated registration.
    pub registration: registration::Registration,
}

/// Checks a Subscribe in the order the module documents, cheapest first, and opens its
/// sealed registration. Touches no storage, so it can be fuzzed on its own.
pub fn validate_subscribe(
    req: &SubscribeRequest,
    keys: &RelayKeys,
    apps: &dyn AppCatalog,
    limits: &Limits,
    now_s: i64,
) -> Result<ValidSubscribe, Status> {
    let account = auth::parse_account(&req.account)?;
    let namespaces = check_namespaces(&req.namespaces)?;
    check_sealed(&req.sealed)?;
    auth::authenticate(
        &account,
        req.ts,
        &req.signature,
        now_s,
        limits.clock_window_s,
        || sign::subscribe_bytes(&account, req.ts, req.want_data, &namespaces, &req.sealed),
    )?;
    let reg = unseal_registration(keys.x25519_secret(), &account, &req.sealed).map_err(|e| {
        Status::invalid_argument(format!("sealed: {e} (fetch the key again with GetRelayInfo)"))
    })?;
    let registration =
        registration::validate(reg, apps).map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(ValidSubscribe {
        account,
        namespaces,
        want_data: req.want_data,
        registration,
    })
}

/// An Unsubscribe that passed every check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidUnsubscribe {
    /// The account whose device is unsubscribed.
    pub account: [u8; 32],
    /// The device.
    pub device_id: [u8; DEVICE_ID_LEN],
    /// When it was signed (Unix seconds): it removes no registration made later.
    pub ts: i64,
}

/// Checks an Unsubscribe: account, device id, then the signature, whose `ts` may be as
/// old as a subscription lives (see [`check_unsubscribe_ts`]).
pub fn validate_unsubscribe(
    req: &UnsubscribeRequest,
    limits: &Limits,
    now_s: i64,
) -> Result<ValidUnsubscribe, Status> {
    let account = auth::parse_account(&req.account)?;
    let device_id: [u8; DEVICE_ID_LEN] = req.device_id.as_slice().try_into().map_err(|_| {
        Status::invalid_argument(format!(
            "device_id: must be {DEVICE_ID_LEN} bytes (got {})",
            req.device_id.len()
        ))
    })?;
    auth::check_signature_len(&req.signature)?;
    check_unsubscribe_ts(req.ts, now_s, limits)?;
    auth::verify(
        &account,
        &sign::unsubscribe_bytes(&account, &device_id, req.ts),
        &req.signature,
    )?;
    Ok(ValidUnsubscribe {
        account,
        device_id,
        ts: req.ts,
    })
}

/// The `ts` rule of an Unsubscribe (UNAUTHENTICATED otherwise, naming `ts`): no more than
/// the clock window ahead of the relay's clock, like every signed request, but behind it by
/// as much as a subscription lives (`subscription_ttl_ms`, and never less than the window).
///
/// A device that signs out queues its signed Unsubscribe and may send it days later (the
/// relay was unreachable, the phone offline): the request must still work then, without
/// the identity that signed it, which is deleted. Older than a subscription lives it has
/// nothing left to remove, since every registration it could apply to has lapsed. What
/// makes the long window safe is [`removable_expiry`]: a replay removes only registrations
/// older than its signature.
pub fn check_unsubscribe_ts(ts: i64, now_s: i64, limits: &Limits) -> Result<(), Status> {
    let window = limits.clock_window_s;
    let max_age = limits
        .subscription_ttl_ms
        .saturating_add(999)
        .div_euclid(1000)
        .max(window);
    let off = i128::from(ts) - i128::from(now_s);
    if off > i128::from(window) {
        return Err(Status::unauthenticated(format!(
            "ts: {off} s ahead of the relay's clock, at most {window} s ahead is accepted"
        )));
    }
    if -off > i128::from(max_age) {
        return Err(Status::unauthenticated(format!(
            "ts: {} s behind the relay's clock; an Unsubscribe may be at most {max_age} s old \
             (the subscription lifetime), and any registration it could remove has lapsed",
            -off
        )));
    }
    Ok(())
}

/// The latest expiry a registration may have for an Unsubscribe signed at `ts` to remove
/// it: the registration was made (or last renewed) no later than `ts` plus the clock window.
///
/// The registration time is derived from the stored expiry (`expires_ms −
/// subscription_ttl_ms`, as Subscribe sets it) rather than stored beside it: that needs no
/// new column, record layout or migration in either backend, and the store compares the
/// expiry in the same atomic step as the removal, so a concurrent renewal is never lost.
/// The price: after an operator changes `subscription_ttl_ms`, registrations made before
/// the change look older (TTL raised) or newer (TTL lowered) by the difference until they
/// are renewed.
///
/// The window's slack is for the device's clock: `ts` comes from it, the registration
/// time from the relay's, and the two may differ by up to the window (Subscribe accepts
/// that much), so a device that signs out right after renewing must still be heard. A
/// replay can thus remove a registration made at most one window after the signature,
/// exactly what a replay inside the window could always do.
pub fn removable_expiry(ts: i64, limits: &Limits) -> i64 {
    ts.saturating_mul(1000)
        .saturating_add(limits.clock_window_s.saturating_mul(1000))
        .saturating_add(limits.subscription_ttl_ms)
}

/// Namespaces: 1..=256 of them, each valid, strictly ascending (so the signed list
/// has one spelling).
fn check_namespaces(list: &[i32]) -> Result<Vec<u32>, Status> {
    if list.is_empty() || list.len() > MAX_NAMESPACES {
        return Err(Status::invalid_argument(format!(
            "namespaces: must list 1..={MAX_NAMESPACES} namespaces (got {})",
            list.len()
        )));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, &ns) in list.iter().enumerate() {
        if !namespace::is_valid(ns) {
            return Err(Status::invalid_argument(format!(
                "namespaces[{i}]: must be in 0..={} (got {ns})",
                namespace::MAX
            )));
        }
        if i > 0 && ns <= list[i - 1] {
            return Err(Status::invalid_argument(format!(
                "namespaces[{i}]: must be strictly ascending ({ns} follows {})",
                list[i - 1]
            )));
        }
        // Checked non-negative above.
        out.push(ns.unsigned_abs());
    }
    Ok(out)
}

fn check_sealed(sealed: &[u8]) -> Result<(), Status> {
    let min = tidings_proto::seal::OVERHEAD;
    if sealed.len() < min || sealed.len() > MAX_SEALED {
        return Err(Status::invalid_argument(format!(
            "sealed: must be {min}..={MAX_SEALED} bytes (got {})",
            sealed.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::testing::{Row, SIG_MISMATCH, check_table};
    use tidings_proto::v1::{DeviceRegistration, PushService};
    use tonic::Code;

    impl registration::Service {
        fn to_proto_for_tests(self) -> i32 {
            use tidings_proto::v1::PushService as P;
            (match self {
                registration::Service::Apns => P::Apns,
                registration::Service::ApnsSandbox => P::ApnsSandbox,
                registration::Service::Fcm => P::Fcm,
                registration::Service::WebPush => P::Webpush,
                registration::Service::Hms => P::Hms,
            }) as i32
        }
    }

    /// An Unsubscribe of device `[5; 16]` signed at `ts` by a fixed test key.
    fn unsubscribe_at(ts: i64) -> UnsubscribeRequest {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let account = key.verifying_key().to_bytes();
        let device_id = [5u8; DEVICE_ID_LEN];
        let msg = sign::unsubscribe_bytes(&account, &device_id, ts);
        UnsubscribeRequest {
            account: account.to_vec(),
            device_id: device_id.to_vec(),
            ts,
            signature: sign::sign(&key, &msg).to_vec(),
        }
    }

    #[test]
    fn unsubscribe_ts_may_be_as_old_as_a_subscription_lives() {
        const NOW: i64 = 1_800_000_000;
        let limits = Limits::default();
        let window = limits.clock_window_s;
        let ttl_s = limits.subscription_ttl_ms / 1000;
        // (ts, accepted?, what a refusal starts with)
        let cases: &[(i64, bool, &str)] = &[
            (NOW, true, ""),
            (NOW - window - 1, true, ""),
            (NOW - 3600, true, ""),
            (NOW - ttl_s + 1, true, ""),
            (NOW - ttl_s, true, ""),
            (
                NOW - ttl_s - 1,
                false,
                "ts: 2592001 s behind the relay's clock; an Unsubscribe may be at most 2592000 s old",
            ),
            (NOW + window, true, ""),
            (
                NOW + window + 1,
                false,
                "ts: 301 s ahead of the relay's clock, at most 300 s ahead is accepted",
            ),
            (i64::MAX, false, "ts: "),
            (i64::MIN, false, "ts: "),
            (0, false, "ts: "),
        ];
        for &(ts, accepted, says) in cases {
            let req = unsubscribe_at(ts);
            match validate_unsubscribe(&req, &limits, NOW) {
                Ok(v) => {
                    assert!(accepted, "ts {ts} accepted");
                    assert_eq!((v.ts, v.device_id), (ts, [5; DEVICE_ID_LEN]));
                }
                Err(e) => {
                    assert!(!accepted, "ts {ts} refused: {e:?}");
                    assert_eq!(e.code(), tonic::Code::Unauthenticated, "ts {ts}");
                    assert!(e.message().starts_with(says), "ts {ts}: {}", e.message());
                }
            }
        }
    }

    #[test]
    fn unsubscribe_checks_the_signature_after_the_ts() {
        const NOW: i64 = 1_800_000_000;
        let limits = Limits::default();
        let mut req = unsubscribe_at(NOW - 3600);
        req.signature[0] ^= 1;
        let e = validate_unsubscribe(&req, &limits, NOW).unwrap_err();
        assert_eq!(e.message(), "signature: does not verify for this account");
        req.ts -= limits.subscription_ttl_ms;
        let e = validate_unsubscribe(&req, &limits, NOW).unwrap_err();
        assert!(e.message().starts_with("ts: "), "{e:?}");
        req.signature.truncate(10);
        let e = validate_unsubscribe(&req, &limits, NOW).unwrap_err();
        assert_eq!(e.message(), "signature: must be 64 bytes (got 10)");
    }

    #[test]
    fn a_short_subscription_lifetime_still_allows_the_window() {
        let limits = Limits {
            subscription_ttl_ms: 60_000,
            ..Limits::default()
        };
        assert!(check_unsubscribe_ts(1000 - 300, 1000, &limits).is_ok());
        assert!(check_unsubscribe_ts(1000 - 301, 1000, &limits).is_err());
    }

    #[test]
    fn an_unsubscribe_removes_registrations_up_to_a_window_after_its_ts() {
        let limits = Limits::default();
        let ts = 1_800_000_000;
        let registered_at = |ms: i64| ms + limits.subscription_ttl_ms;
        let bound = removable_expiry(ts, &limits);
        assert!(
            registered_at(ts * 1000 - 3_600_000) <= bound,
            "an older registration"
        );
        assert!(
            registered_at((ts + 300) * 1000) <= bound,
            "the device clock's slack"
        );
        assert!(registered_at((ts + 300) * 1000 + 1) > bound, "a later one stays");
        assert_eq!(removable_expiry(i64::MAX, &limits), i64::MAX);
    }

    /// Serves "app" with every service; its Web Push policy allows loopback `http://`.
    struct EveryService(crate::push::EndpointPolicy);

    impl AppCatalog for EveryService {
        fn has_apns(&self, app_id: &str) -> bool {
            app_id == "app"
        }
        fn has_fcm(&self, app_id: &str) -> bool {
            app_id == "app"
        }
        fn has_webpush(&self, app_id: &str) -> bool {
            app_id == "app"
        }
        fn has_hms(&self, app_id: &str) -> bool {
            app_id == "app"
        }
        fn webpush_policy(&self) -> &crate::push::EndpointPolicy {
            &self.0
        }
    }

    fn web_push(endpoint: &str) -> tidings_proto::v1::DeviceRegistration {
        use base64::Engine;
        let p256dh = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode("BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4")
            .unwrap();
        tidings_proto::v1::DeviceRegistration {
            service: tidings_proto::v1::PushService::Webpush as i32,
            app_id: "app".into(),
            push_key: vec![1; 32],
            device_id: vec![2; 16],
            web_push: Some(tidings_proto::v1::WebPushSubscription {
                endpoint: endpoint.into(),
                p256dh,
                auth: vec![3; 16],
            }),
            ..Default::default()
        }
    }

    #[test]
    fn subscribe_checks_web_push_and_hms_registrations() {
        use tidings_proto::v1::PushService;
        const NOW: i64 = 1_800_000_000;
        let keys = RelayKeys::from_secret(&[5; 32]);
        let loopback = crate::push::EndpointPolicy::new(
            true,
            &[],
            vec![crate::config::IpBlock::parse("127.0.0.1/32").unwrap()],
        );
        let allowing = EveryService(loopback);
        let strict = EveryService(crate::push::EndpointPolicy::strict());
        let hms = |token: &str| tidings_proto::v1::DeviceRegistration {
            service: PushService::Hms as i32,
            token: token.into(),
            app_id: "app".into(),
            push_key: vec![1; 32],
            device_id: vec![2; 16],
            ..Default::default()
        };
        let at_limit = format!("https://push.example.com/{}", "x".repeat(975));
        let too_long = format!("https://push.example.com/{}", "x".repeat(976));
        // (registration, catalog, accepted?, what a refusal starts with)
        let cases: Vec<(tidings_proto::v1::DeviceRegistration, &EveryService, bool, &str)> = vec![
            (
                web_push("https://push.example.com/wpush/v2/abc"),
                &strict,
                true,
                "",
            ),
            (web_push("http://127.0.0.1:9/push/abc"), &allowing, true, ""),
            (web_push(&at_limit), &strict, true, ""),
            (
                web_push(&too_long),
                &strict,
                false,
                "sealed.web_push.endpoint: must be at most 1000 bytes (got 1001)",
            ),
            (
                web_push("https://127.0.0.1:9/push/abc"),
                &strict,
                false,
                "sealed.web_push.endpoint: host is a loopback address (127.0.0.1); this relay does not push to",
            ),
            (
                web_push("https://10.0.0.1/push/abc"),
                &allowing,
                false,
                "sealed.web_push.endpoint: host is a private address (10.0.0.1)",
            ),
            (
                web_push("https://[::1]/push/abc"),
                &allowing,
                false,
                "sealed.web_push.endpoint: host is a loopback address (::1)",
            ),
            (
                web_push("https://169.254.169.254/latest/meta-data"),
                &allowing,
                false,
                "sealed.web_push.endpoint: host is a link-local address (169.254.169.254)",
            ),
            (
                web_push("http://push.example.com/abc"),
                &strict,
                false,
                "sealed.web_push.endpoint: must be an https:// URL (got http://); this relay does not allow http",
            ),
            (
                web_push("https://100.64.0.1/abc"),
                &strict,
                false,
                "sealed.web_push.endpoint: host is a CGNAT (shared address space) address (100.64.0.1)",
            ),
            (
                web_push("https://[::ffff:192.168.0.1]/abc"),
                &strict,
                false,
                "sealed.web_push.endpoint: host is a private address (::ffff:192.168.0.1)",
            ),
            (hms("IQAAAACy0kYhAAD"), &strict, true, ""),
            (
                hms(""),
                &strict,
                false,
                "sealed.token: an HMS token must be 1..=4096 characters",
            ),
        ];
        for (reg, apps, accepted, says) in cases {
            let req = subscribe_with(&keys, &reg, NOW);
            match validate_subscribe(&req, &keys, apps, &Limits::default(), NOW) {
                Ok(v) => {
                    assert!(accepted, "accepted: {says}");
                    assert_eq!(v.registration.service.to_proto_for_tests(), reg.service);
                }
                Err(e) => {
                    assert!(!accepted, "refused: {}", e.message());
                    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{}", e.message());
                    assert!(e.message().starts_with(says), "{}", e.message());
                }
            }
        }
    }
    const NOW: i64 = 1_800_000_000;

    /// The account every test request is signed by.
    fn signer() -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&[7; 32])
    }

    /// Someone else's key, for signatures that are valid but not the account's.
    fn mallory() -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&[8; 32])
    }

    fn relay_keys() -> RelayKeys {
        RelayKeys::from_secret(&[5; 32])
    }

    /// A valid APNs registration of app "app".
    fn apns() -> DeviceRegistration {
        DeviceRegistration {
            service: PushService::Apns as i32,
            token: "ab".repeat(32),
            app_id: "app".into(),
            push_key: vec![1; 32],
            device_id: vec![2; 16],
            ..Default::default()
        }
    }

    /// A Subscribe of `sealed` to `namespaces` with want_data, signed at `ts` by [`signer`].
    fn signed_subscribe(namespaces: &[i32], ts: i64, sealed: Vec<u8>) -> SubscribeRequest {
        let account = signer().verifying_key().to_bytes();
        let signed: Vec<u32> = namespaces.iter().map(|ns| ns.unsigned_abs()).collect();
        let msg = sign::subscribe_bytes(&account, ts, true, &signed, &sealed);
        SubscribeRequest {
            account: account.to_vec(),
            namespaces: namespaces.to_vec(),
            want_data: true,
            ts,
            sealed,
            signature: sign::sign(&signer(), &msg).to_vec(),
        }
    }

    /// A Subscribe sealing `reg` to `keys`, signed now by [`signer`].
    fn subscribe_with(keys: &RelayKeys, reg: &DeviceRegistration, now_s: i64) -> SubscribeRequest {
        let account = signer().verifying_key().to_bytes();
        let sealed = tidings_proto::seal::seal_registration(&keys.x25519_public(), &account, reg);
        signed_subscribe(&[0], now_s, sealed)
    }

    /// A valid Subscribe but for its registration, an APNs one changed by `change`.
    fn registering(change: fn(&mut DeviceRegistration)) -> SubscribeRequest {
        let mut reg = apns();
        change(&mut reg);
        subscribe_with(&relay_keys(), &reg, NOW)
    }

    /// A valid Web Push subscription, to attach or break.
    fn web_push_subscription() -> tidings_proto::v1::WebPushSubscription {
        web_push("https://push.example.com/wpush/v2/abc")
            .web_push
            .expect("web_push() builds a subscription")
    }

    /// A valid Subscribe but for its sealed bytes: `sealed` of the signer's account.
    fn sealing(sealed: fn(&[u8; 32], &[u8; 32]) -> Vec<u8>) -> SubscribeRequest {
        let account = signer().verifying_key().to_bytes();
        signed_subscribe(&[0], NOW, sealed(&relay_keys().x25519_public(), &account))
    }

    /// Every Subscribe rule, from a valid APNs Subscribe of namespace 0 signed now;
    /// `check_table` adds the rows every signed request shares.
    #[test]
    fn subscribe_rules() {
        use tidings_proto::seal::{seal, seal_registration};
        let rows: &[Row<SubscribeRequest>] = &[
            ("valid APNs subscribe", |_| {}, Code::Ok, ""),
            (
                "valid FCM subscribe",
                |r| {
                    *r = registering(|g| {
                        g.service = PushService::Fcm as i32;
                        g.token = "fcm:tok-en_1.x".into();
                    });
                },
                Code::Ok,
                "",
            ),
            (
                "the most namespaces",
                |r| *r = signed_subscribe(&(0..256).collect::<Vec<_>>(), NOW, r.sealed.clone()),
                Code::Ok,
                "",
            ),
            (
                "ts at the window's edge",
                |r| *r = signed_subscribe(&[0], NOW - 300, r.sealed.clone()),
                Code::Ok,
                "",
            ),
            (
                "no namespaces",
                |r| r.namespaces.clear(),
                Code::InvalidArgument,
                "namespaces: must list 1..=256 namespaces (got 0)",
            ),
            (
                "too many namespaces",
                |r| r.namespaces = (0..257).collect(),
                Code::InvalidArgument,
                "namespaces: must list 1..=256 namespaces (got 257)",
            ),
            (
                "a negative namespace",
                |r| r.namespaces = vec![-1],
                Code::InvalidArgument,
                "namespaces[0]: must be in 0..=32767 (got -1)",
            ),
            (
                "a namespace above the range, named by index",
                |r| r.namespaces = vec![0, 32_768],
                Code::InvalidArgument,
                "namespaces[1]: must be in 0..=32767 (got 32768)",
            ),
            (
                "namespaces descending",
                |r| r.namespaces = vec![0, 12, 5],
                Code::InvalidArgument,
                "namespaces[2]: must be strictly ascending (5 follows 12)",
            ),
            (
                "a namespace repeated",
                |r| r.namespaces = vec![1, 1],
                Code::InvalidArgument,
                "namespaces[1]: must be strictly ascending (1 follows 1)",
            ),
            (
                "sealed shorter than a box",
                |r| r.sealed = vec![1; 71],
                Code::InvalidArgument,
                "sealed: must be 72..=8192 bytes (got 71)",
            ),
            (
                "sealed too long",
                |r| r.sealed = vec![1; 8193],
                Code::InvalidArgument,
                "sealed: must be 72..=8192 bytes (got 8193)",
            ),
            (
                "ts behind the window",
                |r| *r = signed_subscribe(&[0], NOW - 301, r.sealed.clone()),
                Code::Unauthenticated,
                "ts: 301 s behind the relay's clock, the window is ±300 s",
            ),
            (
                "ts ahead of the window",
                |r| *r = signed_subscribe(&[0], NOW + 301, r.sealed.clone()),
                Code::Unauthenticated,
                "ts: 301 s ahead of the relay's clock, the window is ±300 s",
            ),
            (
                "signed by someone else",
                |r| {
                    let msg = sign::subscribe_bytes(
                        &signer().verifying_key().to_bytes(),
                        NOW,
                        true,
                        &[0],
                        &r.sealed,
                    );
                    r.signature = sign::sign(&mallory(), &msg).to_vec();
                },
                Code::Unauthenticated,
                SIG_MISMATCH,
            ),
            (
                "signature over other want_data",
                |r| r.want_data = false,
                Code::Unauthenticated,
                SIG_MISMATCH,
            ),
            (
                "signature over other namespaces",
                |r| r.namespaces = vec![0, 12],
                Code::Unauthenticated,
                SIG_MISMATCH,
            ),
            (
                "signature re-used with another sealed box",
                |r| r.sealed = registering(|g| g.token = "cd".repeat(32)).sealed,
                Code::Unauthenticated,
                SIG_MISMATCH,
            ),
            (
                "sealed to another relay key",
                |r| *r = sealing(|_, account| seal_registration(&[9; 32], account, &apns())),
                Code::InvalidArgument,
                "sealed: sealed registration does not decrypt with this relay's key for this account (fetch the key again with GetRelayInfo)",
            ),
            (
                "sealed for another account",
                |r| *r = sealing(|relay, _| seal_registration(relay, &[9; 32], &apns())),
                Code::InvalidArgument,
                "sealed: sealed registration does not decrypt",
            ),
            (
                "sealed with a degenerate ephemeral key",
                |r| *r = sealing(|_, _| [vec![0; 32], vec![1; 100]].concat()),
                Code::InvalidArgument,
                "sealed: sealed registration has a degenerate ephemeral key",
            ),
            (
                "a box holding no DeviceRegistration",
                |r| *r = sealing(|relay, account| seal(relay, account, &[0xff; 40])),
                Code::InvalidArgument,
                "sealed: sealed registration is not a valid DeviceRegistration",
            ),
            (
                "an unknown service",
                |r| *r = registering(|g| g.service = PushService::Unspecified as i32),
                Code::InvalidArgument,
                "sealed.service: must be APNS, APNS_SANDBOX, FCM, WEBPUSH or HMS",
            ),
            (
                "a malformed APNs token",
                |r| *r = registering(|g| g.token = "zz".repeat(32)),
                Code::InvalidArgument,
                "sealed.token: an APNs token must be hex of 32..=256 bytes",
            ),
            (
                "a malformed FCM token",
                |r| {
                    *r = registering(|g| {
                        g.service = PushService::Fcm as i32;
                        g.token = "has a space".into();
                    });
                },
                Code::InvalidArgument,
                "sealed.token: an FCM token must be 1..=4096 characters of [A-Za-z0-9-_:.]",
            ),
            (
                "an empty HMS token",
                |r| {
                    *r = registering(|g| {
                        g.service = PushService::Hms as i32;
                        g.token.clear();
                    });
                },
                Code::InvalidArgument,
                "sealed.token: an HMS token must be 1..=4096 characters of [A-Za-z0-9-_:.]",
            ),
            (
                "a token with a Web Push registration",
                |r| {
                    *r = registering(|g| {
                        g.service = PushService::Webpush as i32;
                        g.web_push = Some(web_push_subscription());
                    });
                },
                Code::InvalidArgument,
                "sealed.token: must be empty for WEBPUSH",
            ),
            (
                "an empty app id",
                |r| *r = registering(|g| g.app_id.clear()),
                Code::InvalidArgument,
                "sealed.app_id: must be 1..=255 bytes",
            ),
            (
                "an app this relay does not serve",
                |r| *r = registering(|g| g.app_id = "com.example.unknown".into()),
                Code::InvalidArgument,
                "sealed.app_id: this relay serves no app \"com.example.unknown\" with APNs (see GetRelayInfo.app_ids and .apps)",
            ),
            (
                "Web Push without a subscription",
                |r| {
                    *r = registering(|g| {
                        g.service = PushService::Webpush as i32;
                        g.token.clear();
                    });
                },
                Code::InvalidArgument,
                "sealed.web_push: is required for WEBPUSH",
            ),
            (
                "a subscription on APNs",
                |r| *r = registering(|g| g.web_push = Some(web_push_subscription())),
                Code::InvalidArgument,
                "sealed.web_push: must be absent unless the service is WEBPUSH",
            ),
            (
                "a Web Push endpoint the policy refuses",
                |r| *r = registering(|g| *g = web_push("http://push.example.com/abc")),
                Code::InvalidArgument,
                "sealed.web_push.endpoint: must be an https:// URL (got http://)",
            ),
            (
                "a short p256dh",
                |r| *r = registering(|g| *g = with_subscription(|s| s.p256dh.truncate(33))),
                Code::InvalidArgument,
                "sealed.web_push.p256dh: must be 65 bytes, an uncompressed P-256 point (got 33)",
            ),
            (
                "a p256dh off the curve",
                |r| *r = registering(|g| *g = with_subscription(|s| s.p256dh[64] ^= 1)),
                Code::InvalidArgument,
                "sealed.web_push.p256dh: is not a point on P-256",
            ),
            (
                "a short auth secret",
                |r| *r = registering(|g| *g = with_subscription(|s| s.auth.truncate(15))),
                Code::InvalidArgument,
                "sealed.web_push.auth: must be 16 bytes (got 15)",
            ),
            (
                "a short push key",
                |r| *r = registering(|g| g.push_key.truncate(31)),
                Code::InvalidArgument,
                "sealed.push_key: must be 32 bytes (got 31)",
            ),
            (
                "no device id",
                |r| *r = registering(|g| g.device_id.clear()),
                Code::InvalidArgument,
                "sealed.device_id: must be 16 bytes (got 0)",
            ),
        ];
        let keys = relay_keys();
        let apps = EveryService(crate::push::EndpointPolicy::strict());
        check_table(
            rows,
            || subscribe_with(&keys, &apns(), NOW),
            |r| validate_subscribe(&r, &keys, &apps, &Limits::default(), NOW),
        );
    }

    /// A valid Web Push registration whose subscription `change` breaks.
    fn with_subscription(change: fn(&mut tidings_proto::v1::WebPushSubscription)) -> DeviceRegistration {
        let mut reg = web_push("https://push.example.com/wpush/v2/abc");
        if let Some(sub) = reg.web_push.as_mut() {
            change(sub);
        }
        reg
    }

    /// Every Unsubscribe rule, from a valid Unsubscribe of device `[5; 16]` signed now;
    /// `check_table` adds the rows every signed request shares.
    #[test]
    fn unsubscribe_rules() {
        let rows: &[Row<UnsubscribeRequest>] = &[
            ("valid unsubscribe", |_| {}, Code::Ok, ""),
            (
                "signed a day ago",
                |r| *r = unsubscribe_at(NOW - 86_400),
                Code::Ok,
                "",
            ),
            (
                "device id too short",
                |r| {
                    r.device_id.pop();
                },
                Code::InvalidArgument,
                "device_id: must be 16 bytes (got 15)",
            ),
            (
                "device id too long",
                |r| r.device_id.push(0),
                Code::InvalidArgument,
                "device_id: must be 16 bytes (got 17)",
            ),
            (
                "ts ahead of the window",
                |r| *r = unsubscribe_at(NOW + 301),
                Code::Unauthenticated,
                "ts: 301 s ahead of the relay's clock, at most 300 s ahead is accepted",
            ),
            (
                "ts older than a subscription lives",
                |r| *r = unsubscribe_at(NOW - 2_592_001),
                Code::Unauthenticated,
                "ts: 2592001 s behind the relay's clock; an Unsubscribe may be at most 2592000 s old",
            ),
            (
                "signed by someone else",
                |r| {
                    let msg = sign::unsubscribe_bytes(
                        &signer().verifying_key().to_bytes(),
                        &[5; DEVICE_ID_LEN],
                        NOW,
                    );
                    r.signature = sign::sign(&mallory(), &msg).to_vec();
                },
                Code::Unauthenticated,
                SIG_MISMATCH,
            ),
            (
                "signature for another device",
                |r| r.device_id = vec![6; 16],
                Code::Unauthenticated,
                SIG_MISMATCH,
            ),
        ];
        check_table(
            rows,
            || unsubscribe_at(NOW),
            |r| validate_unsubscribe(&r, &Limits::default(), NOW),
        );
    }
}
