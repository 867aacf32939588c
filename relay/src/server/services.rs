//! Building the relay's gRPC services once, for both the gRPC listener and the OHTTP
//! gateway: the mailbox and relay services over the shared state, health, reflection, and
//! the tower layers every call passes through.

use std::{sync::Arc, time::Duration};

use tidings_proto::v1::{mailbox_server::MailboxServer, relay_server::RelayServer};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tower::layer::util::{Identity, Stack};

use super::ServerError;
use crate::{
    clock::Clock,
    config::Config,
    decode_errors::{DecodeErrorsLayer, Decoded},
    keys::RelayKeys,
    limits::Guards,
    longpoll::Waiters,
    mailbox::MailboxService,
    metrics::{Metrics, layer::GrpcMetricsLayer},
    notifier::{breaker::BreakerSettings, providers::Providers},
    registration::AppCatalog,
    relay_service::RelayService,
    store::Store,
};

/// What the services of one relay share with its background work and its handle.
#[derive(Clone)]
pub(super) struct Shared {
    pub(super) store: Arc<dyn Store>,
    pub(super) keys: Arc<RelayKeys>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) waiters: Arc<Waiters>,
    pub(super) metrics: Arc<Metrics>,
    /// Wakes the notifier when a Store wrote push jobs (or another node did).
    pub(super) push_wake: Arc<Notify>,
}

impl Shared {
    pub(super) fn new(store: Arc<dyn Store>, keys: Arc<RelayKeys>, clock: Arc<dyn Clock>) -> Shared {
        Shared {
            store,
            keys,
            clock,
            waiters: Arc::new(Waiters::new()),
            metrics: Arc::new(Metrics::new()),
            push_wake: Arc::new(Notify::new()),
        }
    }
}

/// The relay's RPCs, ready to be served.
pub(super) struct Services {
    /// Mailbox, Relay, health and reflection, without the layers ([`rpc_layers`]).
    pub(super) routes: tonic::service::Routes,
    /// Marks the RPC services serving or, on shutdown, not.
    pub(super) health: tonic_health::server::HealthReporter,
    /// Every app's push senders, for the notifier.
    pub(super) providers: Arc<Providers>,
}

/// Builds the services over `shared`. The abuse limits' janitor runs until `draining`.
pub(super) async fn build(
    config: &Config,
    shared: &Shared,
    draining: &CancellationToken,
) -> Result<Services, ServerError> {
    let providers = Arc::new(
        Providers::from_config_with(
            &config.apps,
            &config.webpush,
            Duration::from_millis(config.push.timeout_ms),
            &shared.metrics,
        )
        .await
        .map_err(|e| ServerError::Push(e.to_string()))?,
    );
    providers
        .breakers()
        .configure(BreakerSettings::from_push(&config.push));
    let guards = Arc::new(Guards::with_ohttp(
        &config.limits,
        &config.rate_limits,
        &config.ohttp,
    ));
    // Ends with the drain; dropping the handle does not stop it.
    drop(guards.rates.spawn_janitor(draining.clone()));
    let mailbox = mailbox_service(config, shared, &guards, draining);
    let relay = relay_service(config, shared, &guards, &providers);
    let max_request = config.limits.max_request_bytes();
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<MailboxServer<MailboxService>>().await;
    health.set_serving::<RelayServer<RelayService>>().await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tidings_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    // v1alpha too: grpcurl and many tools still ask for it.
    let routes = tonic::service::Routes::new(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(MailboxServer::new(Decoded::new(mailbox)).max_decoding_message_size(max_request))
        .add_service(RelayServer::new(Decoded::new(relay)).max_decoding_message_size(max_request));
    Ok(Services {
        routes,
        health,
        providers,
    })
}

fn mailbox_service(
    config: &Config,
    shared: &Shared,
    guards: &Arc<Guards>,
    draining: &CancellationToken,
) -> MailboxService {
    MailboxService::new(
        Arc::clone(&shared.store),
        Arc::clone(&shared.keys),
        config.limits.clone(),
        Arc::clone(&shared.clock),
        Arc::clone(&shared.waiters),
        draining.clone(),
        Arc::clone(&shared.push_wake),
    )
    .with_guards(Arc::clone(guards))
    .with_metrics(Arc::clone(&shared.metrics))
}

fn relay_service(
    config: &Config,
    shared: &Shared,
    guards: &Guards,
    providers: &Arc<Providers>,
) -> RelayService {
    RelayService::new(
        Arc::clone(&shared.keys),
        config.app_ids(),
        config.limits.clone(),
        Arc::clone(&shared.store),
        Arc::clone(providers) as Arc<dyn AppCatalog + Send + Sync>,
        Arc::clone(&shared.clock),
    )
    .with_rate_limits(Arc::clone(&guards.rates))
    .with_metrics(Arc::clone(&shared.metrics))
    .with_app_info(providers.app_info(&config.apps))
}

/// The layers around every server of the relay's RPCs, built the same way for the gRPC
/// listener and the OHTTP gateway, which dispatches into the very same stack.
pub(super) fn rpc_layers(
    metrics: &Arc<Metrics>,
    max_request: usize,
) -> RpcLayers<impl Fn(Response) -> Response + Clone + Send + Sync + 'static> {
    tower::ServiceBuilder::new()
        // Outermost, so it counts the status the client really gets (renamed below).
        .layer(GrpcMetricsLayer::new(Arc::clone(metrics)))
        .layer(tower::util::MapResponseLayer::new(move |res: Response| {
            oversize_as_resource_exhausted(res, max_request)
        }))
        // Undecodable requests are INVALID_ARGUMENT, not tonic's INTERNAL. A witness that
        // the handler was reached (`Decoded`) decides, not tonic's wording, so a real
        // INTERNAL from a handler is never renamed: see `decode_errors`.
        .layer(DecodeErrorsLayer)
        .into_inner()
}

/// What every RPC answers with.
type Response = http::Response<tonic::body::Body>;

/// The stack [`rpc_layers`] builds; `F` is the response rewrite.
type RpcLayers<F> =
    Stack<DecodeErrorsLayer, Stack<tower::util::MapResponseLayer<F>, Stack<GrpcMetricsLayer, Identity>>>;

/// tonic refuses a request over the decoding limit with OUT_OF_RANGE; DESIGN.md says
/// size limits are RESOURCE_EXHAUSTED, so the refusal is renamed (its trailers-only
/// answer carries the status in the headers). No handler of ours returns OUT_OF_RANGE.
fn oversize_as_resource_exhausted<B>(mut res: http::Response<B>, limit: usize) -> http::Response<B> {
    let headers = res.headers_mut();
    let out_of_range = headers.get("grpc-status").is_some_and(|v| v.as_bytes() == b"11");
    let too_large = headers
        .get("grpc-message")
        .is_some_and(|v| String::from_utf8_lossy(v.as_bytes()).contains("too%20large"));
    if out_of_range && too_large {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
        let message = format!("request: larger than the relay accepts ({limit} bytes)");
        if let Ok(v) = http::HeaderValue::from_str(&message.replace(' ', "%20")) {
            headers.insert("grpc-message", v);
        }
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tonics_size_refusal_is_renamed() {
        let status = tonic::Status::out_of_range(
            "Error, decoded message length too large: found 9999999 bytes, the limit is: 69632 bytes",
        );
        let res = oversize_as_resource_exhausted(status.into_http::<()>(), 69_632);
        let back = tonic::Status::from_header_map(res.headers()).unwrap();
        assert_eq!(back.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            back.message(),
            "request: larger than the relay accepts (69632 bytes)"
        );

        let other = tonic::Status::out_of_range("seq past the end").into_http::<()>();
        let kept = oversize_as_resource_exhausted(other, 1);
        assert_eq!(
            tonic::Status::from_header_map(kept.headers()).unwrap().code(),
            tonic::Code::OutOfRange
        );
    }
}
