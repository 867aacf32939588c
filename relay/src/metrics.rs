//! The relay's Prometheus metrics, served as `/metrics` on `admin_listen`.
//!
//! One [`Metrics`] per running relay, shared as an `Arc` by whoever records: the gRPC
//! layer ([`layer::GrpcMetricsLayer`], every RPC's count, latency and status in one
//! place), the mailbox (message sizes), the Relay service (subscription changes), the
//! notifier (push outcomes) and the push senders (token refreshes). Values that already
//! live elsewhere (parked long-polls, the outbox) are sampled when `/metrics` is scraped,
//! so nothing has to be kept in step with them.
//!
//! No statics: two relays in one process (the tests) keep separate counts.
//!
//! Label values come only from fixed lists (RPC names, status codes, services,
//! reasons) or from the operator's config; never from a request, so no token, key or
//! account can reach a label, and a client cannot grow the label space.

pub mod layer;

use std::{
    sync::{Arc, Mutex, PoisonError, atomic::AtomicU64},
    time::Duration,
};

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

use crate::{
    clock::Clock,
    longpoll::Waiters,
    push::{Outcome, TokenRefreshes},
    store::Store,
};

/// A label set of fixed keys and `'static` values.
type Labels<const N: usize> = [(&'static str, &'static str); N];

/// RPC latency buckets, in seconds: from sub-millisecond reads up to past the 60 s
/// long-poll ceiling, so parked Retrieves land in their own buckets.
const LATENCY_BUCKETS: [f64; 16] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 65.0,
];

/// How long a scrape waits for the store's outbox numbers before leaving them as they
/// were (a slow database must not make `/metrics` time out).
const OUTBOX_SAMPLE_TIMEOUT: Duration = Duration::from_secs(2);

/// The metric handles and their registry.
pub struct Metrics {
    registry: Mutex<Registry>,
    rpc_requests: Family<Labels<2>, Counter>,
    rpc_seconds: Family<Labels<1>, Histogram>,
    message_bytes: Family<Labels<1>, Histogram>,
    open_longpolls: Gauge,
    subscription_changes: Family<Labels<2>, Counter>,
    push_outcomes: Family<Labels<2>, Counter>,
    outbox_depth: Gauge,
    outbox_oldest_age_seconds: Gauge<f64, AtomicU64>,
    outbox_sample_failures: Counter,
    token_refreshes: Family<Labels<2>, Counter>,
    ohttp_requests: Family<Labels<1>, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// What a subscription went through, for [`Metrics::subscription_changed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionChange {
    /// A Subscribe added a device.
    Added,
    /// A Subscribe renewed (or changed) an existing device.
    Renewed,
    /// An Unsubscribe removed a device.
    Unsubscribed,
    /// The provider called the token dead; the notifier removed the subscription.
    TokenDead,
}

impl SubscriptionChange {
    fn label(self) -> &'static str {
        match self {
            Self::Added => "added",
            Self::Renewed => "renewed",
            Self::Unsubscribed => "unsubscribed",
            Self::TokenDead => "token_dead",
        }
    }
}

/// The reason label of a push outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushResult {
    /// The provider accepted the push.
    Delivered,
    /// The token is dead; the subscription was pruned.
    TokenDead,
    /// A transient failure; the job is retried later.
    Retried,
    /// The provider refused this push, or retries ran out: the job is dropped.
    Failed,
    /// The relay's provider configuration was refused.
    ConfigError,
    /// Dropped before any provider call (subscription or message gone, unreadable row).
    Skipped,
}

impl PushResult {
    fn label(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::TokenDead => "token_dead",
            Self::Retried => "retried",
            Self::Failed => "failed",
            Self::ConfigError => "config_error",
            Self::Skipped => "skipped",
        }
    }

    /// The result an [`Outcome`] stands for (a config error or retry that runs out of
    /// time is recorded by the notifier as [`PushResult::Failed`] instead).
    pub fn of(outcome: &Outcome) -> Self {
        match outcome {
            Outcome::Delivered => Self::Delivered,
            Outcome::TokenDead { .. } => Self::TokenDead,
            Outcome::Retry { .. } => Self::Retried,
            Outcome::ConfigError { .. } => Self::ConfigError,
            Outcome::Failed { .. } => Self::Failed,
        }
    }
}

impl Metrics {
    /// A fresh registry with every metric registered at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tidings");
        let rpc_requests = Family::<Labels<2>, Counter>::default();
        registry.register(
            "grpc_requests",
            "gRPC calls answered, by RPC (`/package.Service/Method`) and gRPC status code",
            rpc_requests.clone(),
        );
        let rpc_seconds =
            Family::<Labels<1>, Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "grpc_request_duration",
            "Time from a gRPC call's arrival to its status (long-polls included), by RPC",
            Unit::Seconds,
            rpc_seconds.clone(),
        );
        let message_bytes =
            Family::<Labels<1>, Histogram>::new_with_constructor(bytes_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "message",
            "Message data size: of each stored message (op=store) and of each Retrieve answer (op=retrieve)",
            Unit::Bytes,
            message_bytes.clone(),
        );
        let open_longpolls = Gauge::default();
        registry.register(
            "open_longpolls",
            "Retrieve calls parked waiting for a message on this node",
            open_longpolls.clone(),
        );
        let subscription_changes = Family::<Labels<2>, Counter>::default();
        registry.register(
            "subscription_changes",
            "Fast Mode subscriptions added, renewed and removed on this node, by push service (apns, apns_sandbox, fcm, webpush, hms, unknown) and change",
            subscription_changes.clone(),
        );
        let push_outcomes = Family::<Labels<2>, Counter>::default();
        registry.register(
            "push_outcomes",
            "Push attempts by provider (apns, apns_sandbox, fcm, webpush, hms, none) and result",
            push_outcomes.clone(),
        );
        let outbox_depth = Gauge::default();
        registry.register(
            "outbox_jobs",
            "Push jobs waiting in the outbox (the whole store, all nodes)",
            outbox_depth.clone(),
        );
        let outbox_oldest_age_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "outbox_oldest_job_age",
            "Age of the oldest push job in the outbox (0 when empty)",
            Unit::Seconds,
            outbox_oldest_age_seconds.clone(),
        );
        let outbox_sample_failures = Counter::default();
        registry.register(
            "outbox_sample_failures",
            "Scrapes that could not read the outbox numbers (they keep their previous values)",
            outbox_sample_failures.clone(),
        );
        let token_refreshes = Family::<Labels<2>, Counter>::default();
        registry.register(
            "push_token_refreshes",
            "Provider credentials minted: APNs provider JWTs signed, FCM and HMS OAuth tokens fetched, by provider (apns, fcm, hms) and result",
            token_refreshes.clone(),
        );
        let ohttp_requests = Family::<Labels<1>, Counter>::default();
        registry.register(
            "ohttp_requests",
            "Requests to the OHTTP gateway, by outcome (answered, or why they were refused)",
            ohttp_requests.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            rpc_requests,
            rpc_seconds,
            message_bytes,
            open_longpolls,
            subscription_changes,
            push_outcomes,
            outbox_depth,
            outbox_oldest_age_seconds,
            outbox_sample_failures,
            token_refreshes,
            ohttp_requests,
        }
    }

    /// Records one request to the OHTTP gateway; `outcome` comes from a fixed list
    /// (`crate::ohttp::gateway::Outcome::label`).
    pub fn ohttp_request(&self, outcome: &'static str) {
        self.ohttp_requests.get_or_create(&[("outcome", outcome)]).inc();
    }

    /// Records one answered gRPC call. `rpc` and `code` come from fixed lists
    /// ([`layer::rpc_label`], [`layer::code_label`]).
    pub fn rpc_finished(&self, rpc: &'static str, code: &'static str, elapsed: Duration) {
        self.rpc_requests
            .get_or_create(&[("rpc", rpc), ("code", code)])
            .inc();
        self.rpc_seconds
            .get_or_create(&[("rpc", rpc)])
            .observe(elapsed.as_secs_f64());
    }

    /// Records the data size of a stored message.
    pub fn stored(&self, bytes: usize) {
        self.observe_bytes("store", bytes);
    }

    /// Records the total data size of a Retrieve answer.
    pub fn retrieved(&self, bytes: usize) {
        self.observe_bytes("retrieve", bytes);
    }

    fn observe_bytes(&self, op: &'static str, bytes: usize) {
        // f64 represents every size a request can have exactly (far below 2^53).
        #[allow(clippy::cast_precision_loss)]
        let bytes = bytes as f64;
        self.message_bytes.get_or_create(&[("op", op)]).observe(bytes);
    }

    /// Records a subscription change for a push service (`Service::label`).
    pub fn subscription_changed(&self, service: &'static str, change: SubscriptionChange) {
        self.subscription_changes
            .get_or_create(&[("service", service), ("change", change.label())])
            .inc();
    }

    /// Records a push outcome. `provider` is a `Service::label`, or `"none"` when the job
    /// was dropped before a provider was known.
    pub fn push_outcome(&self, provider: &'static str, result: PushResult) {
        self.push_outcomes
            .get_or_create(&[("provider", provider), ("result", result.label())])
            .inc();
    }

    /// A refresh hook for one provider's sender (see [`TokenRefreshes`]).
    pub fn token_refreshes(self: &Arc<Self>, provider: &'static str) -> TokenRefreshes {
        let metrics = Arc::clone(self);
        TokenRefreshes::new(move |ok| {
            let result = if ok { "ok" } else { "failed" };
            metrics
                .token_refreshes
                .get_or_create(&[("provider", provider), ("result", result)])
                .inc();
        })
    }

    /// Brings the sampled values up to date: parked long-polls, and the outbox's depth
    /// and oldest job (one cheap store query, bounded by a timeout).
    pub async fn sample(&self, waiters: &Waiters, store: &dyn Store, clock: &dyn Clock) {
        self.open_longpolls
            .set(i64::try_from(waiters.parked()).unwrap_or(i64::MAX));
        match tokio::time::timeout(OUTBOX_SAMPLE_TIMEOUT, store.outbox_stats()).await {
            Ok(Ok(stats)) => {
                self.outbox_depth
                    .set(i64::try_from(stats.depth).unwrap_or(i64::MAX));
                let age_ms = stats
                    .oldest_enqueued_ms
                    .map_or(0, |at| clock.now_ms().saturating_sub(at).max(0));
                // Milliseconds since a job was enqueued fit an f64 exactly.
                #[allow(clippy::cast_precision_loss)]
                self.outbox_oldest_age_seconds.set(age_ms as f64 / 1000.0);
            }
            Ok(Err(e)) => {
                tracing::warn!("metrics: cannot read the outbox numbers: {e}");
                self.outbox_sample_failures.inc();
            }
            Err(_) => {
                tracing::warn!("metrics: the outbox numbers took longer than {OUTBOX_SAMPLE_TIMEOUT:?}");
                self.outbox_sample_failures.inc();
            }
        }
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        // Writing into a String cannot fail; an error here would be a bug in an encoder.
        if let Err(e) = encode(&mut out, &registry) {
            tracing::error!("metrics: encoding failed: {e}");
        }
        out
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Sizes from 64 bytes to 4 MiB in powers of four.
fn bytes_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        64.0, 4.0, 9,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_values_appear_with_their_labels() {
        let m = Arc::new(Metrics::new());
        m.rpc_finished("/tidings.v1.Mailbox/Store", "OK", Duration::from_millis(3));
        m.stored(100);
        m.retrieved(0);
        m.subscription_changed("fcm", SubscriptionChange::Added);
        m.push_outcome("apns", PushResult::Delivered);
        m.token_refreshes("fcm").record(true);
        let text = m.encode();
        for want in [
            r#"tidings_grpc_requests_total{rpc="/tidings.v1.Mailbox/Store",code="OK"} 1"#,
            r#"tidings_grpc_request_duration_seconds_count{rpc="/tidings.v1.Mailbox/Store"} 1"#,
            r#"tidings_message_bytes_count{op="store"} 1"#,
            r#"tidings_message_bytes_sum{op="store"} 100.0"#,
            r#"tidings_subscription_changes_total{service="fcm",change="added"} 1"#,
            r#"tidings_push_outcomes_total{provider="apns",result="delivered"} 1"#,
            r#"tidings_push_token_refreshes_total{provider="fcm",result="ok"} 1"#,
            "tidings_open_longpolls 0",
            "# EOF",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
    }

    #[test]
    fn help_texts_name_every_service_label() {
        use crate::registration::Service;
        let all = [
            Service::Apns,
            Service::ApnsSandbox,
            Service::Fcm,
            Service::WebPush,
            Service::Hms,
        ];
        // Exhaustive: a new service does not compile until it is listed above.
        for service in all {
            match service {
                Service::Apns | Service::ApnsSandbox | Service::Fcm | Service::WebPush | Service::Hms => {}
            }
        }
        // A family is encoded (help included) once it has a sample.
        let m = Arc::new(Metrics::new());
        m.push_outcome("apns", PushResult::Delivered);
        m.subscription_changed("apns", SubscriptionChange::Added);
        m.token_refreshes("apns").record(true);
        let text = m.encode();
        let help = |metric: &str| {
            let prefix = format!("# HELP tidings_{metric} ");
            text.lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .unwrap_or_else(|| panic!("no help for {metric} in\n{text}"))
                .to_owned()
        };
        let (outcomes, changes) = (help("push_outcomes"), help("subscription_changes"));
        for label in all.map(Service::label).into_iter().chain(["none"]) {
            assert!(
                outcomes.contains(label),
                "push_outcomes help lacks {label}: {outcomes}"
            );
        }
        for label in all.map(Service::label).into_iter().chain(["unknown"]) {
            assert!(
                changes.contains(label),
                "subscription_changes help lacks {label}: {changes}"
            );
        }
        // The senders that fetch credentials (notifier/providers.rs); Web Push signs a
        // VAPID JWT per origin and counts nothing.
        let refreshes = help("push_token_refreshes");
        for label in ["apns", "fcm", "hms"] {
            assert!(
                refreshes.contains(label),
                "push_token_refreshes help lacks {label}: {refreshes}"
            );
        }
    }
}
