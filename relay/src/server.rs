//! Starting and stopping a relay: open the store, load the key, bind, serve gRPC and the
//! admin endpoints, sweep in the background; on shutdown drain, stop, flush.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tidings_relay::server::ServerError> {
//! let relay = tidings_relay::server::start(tidings_relay::config::Config::default()).await?;
//! println!("gRPC on {}", relay.grpc_addr());
//! relay.shutdown().await
//! # }
//! ```

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tidings_proto::v1::{mailbox_server::MailboxServer, relay_server::RelayServer};
use tokio::{net::TcpListener, sync::Notify, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Server, server::TcpIncoming};

use crate::{
    admin,
    clock::{Clock, SystemClock},
    config::{Backend, Config, ConfigError},
    decode_errors::{DecodeErrorsLayer, Decoded},
    keys::{self, KeyError, RelayKeys},
    limits::{CappedIncoming, Guards},
    longpoll::Waiters,
    mailbox::MailboxService,
    metrics::{Metrics, layer::GrpcMetricsLayer},
    notifier::{
        self, NotifierHandle, NotifierSettings, PushTexts, breaker::BreakerSettings, providers::Providers,
    },
    ohttp,
    registration::AppCatalog,
    relay_service::RelayService,
    store::{Store, StoreError, linkage::StoreKeys, postgres::PostgresStore, redb::RedbStore},
    sweeper::{self, SweepSettings, SweeperHandle},
    tls::{self, CertReloader, TlsError},
};

/// How long shutdown waits for in-flight calls before cutting them off.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 pings keep idle long-poll connections alive through NATs and load balancers.
const KEEPALIVE: Duration = Duration::from_secs(30);

/// Why a relay could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration breaks a rule.
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    /// The relay key could not be loaded or created.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The store failed to open or to close.
    #[error(transparent)]
    Storage(#[from] StoreError),
    /// The configuration asks for something this build cannot do yet.
    #[error("{0}")]
    Unsupported(String),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// `listen` or `admin_listen`.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// TLS files or setup.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// `reload_tls` on a relay started without TLS.
    #[error("TLS is not configured (tls_cert and tls_key)")]
    NoTls,
    /// The reflection service could not be built from the descriptor set.
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The OHTTP gateway's keys could not be made.
    #[error("OHTTP gateway: {0}")]
    Ohttp(String),
    /// An app's push provider could not be set up (unreadable key, bad credentials).
    #[error("push provider: {0}")]
    Push(String),
    /// A background task panicked or an I/O error ended a server.
    #[error("{0}")]
    Task(String),
}

/// A relay serving on its addresses. Call [`RunningRelay::shutdown`] to stop it.
pub struct RunningRelay {
    config: Config,
    grpc_addr: SocketAddr,
    admin_addr: SocketAddr,
    store: Arc<dyn Store>,
    keys: Arc<RelayKeys>,
    waiters: Arc<Waiters>,
    clock: Arc<dyn Clock>,
    sweeper: SweeperHandle,
    health: tonic_health::server::HealthReporter,
    draining: CancellationToken,
    stop_admin: CancellationToken,
    grpc_exited: CancellationToken,
    grpc_task: JoinHandle<Result<(), tonic::transport::Error>>,
    admin_task: JoinHandle<std::io::Result<()>>,
    ohttp: Option<(SocketAddr, JoinHandle<std::io::Result<()>>)>,
    sweeper_task: JoinHandle<()>,
    stop_notifier: CancellationToken,
    notifier: NotifierHandle,
    metrics: Arc<Metrics>,
    tls: Option<Arc<CertReloader>>,
}

impl std::fmt::Debug for RunningRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningRelay")
            .field("grpc_addr", &self.grpc_addr)
            .field("admin_addr", &self.admin_addr)
            .finish_non_exhaustive()
    }
}

/// Starts a relay with the system clock: opens the configured store, loads (or creates)
/// the relay key, binds `listen` and `admin_listen` (port 0 picks free ports) and serves.
pub async fn start(config: Config) -> Result<RunningRelay, ServerError> {
    start_with_clock(config, Arc::new(SystemClock)).await
}

/// [`start`] with another clock (tests move time to expire messages).
pub async fn start_with_clock(config: Config, clock: Arc<dyn Clock>) -> Result<RunningRelay, ServerError> {
    config.validate()?;
    let key_path = config.relay_key_path();
    let keys = blocking(move || keys::load_or_create(&key_path)).await??;
    let store = open_store(&config, keys.store_keys()).await?;
    start_with_store(config, store, Arc::new(keys), clock).await
}

/// Starts a relay over an already opened store (other backends, tests). On failure the
/// store is closed again.
pub async fn start_with_store(
    config: Config,
    store: Arc<dyn Store>,
    keys: Arc<RelayKeys>,
    clock: Arc<dyn Clock>,
) -> Result<RunningRelay, ServerError> {
    match bind_all(&config).await {
        Ok(listeners) => serve(config, store, keys, clock, listeners).await,
        Err(e) => {
            let _ = store.close().await;
            Err(e)
        }
    }
}

async fn open_store(config: &Config, store_keys: StoreKeys) -> Result<Arc<dyn Store>, ServerError> {
    match config.storage.backend {
        Backend::Embedded => {
            let dir = config.data_dir.clone();
            let cache = usize::try_from(config.storage.cache_mb)
                .unwrap_or(usize::MAX)
                .saturating_mul(1 << 20);
            let store = blocking(move || RedbStore::open_with_cache(&dir, store_keys, cache)).await??;
            Ok(Arc::new(store))
        }
        Backend::Postgres => {
            // `Config::validate` insists on the URL for this backend.
            let url = config.storage.postgres_url.as_deref().unwrap_or_default();
            Ok(Arc::new(PostgresStore::open(url, store_keys).await?))
        }
    }
}

/// The relay's listeners: gRPC, admin, and the OHTTP gateway's when enabled.
struct Listeners {
    grpc: TcpListener,
    admin: TcpListener,
    ohttp: Option<TcpListener>,
}

async fn bind_all(config: &Config) -> Result<Listeners, ServerError> {
    let bind = |what, addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { what, addr, source })
    };
    let ohttp = match config.ohttp.enabled {
        true => Some(bind("ohttp.listen", config.ohttp.listen).await?),
        false => None,
    };
    Ok(Listeners {
        grpc: bind("listen", config.listen).await?,
        admin: bind("admin_listen", config.admin_listen).await?,
        ohttp,
    })
}

async fn serve(
    config: Config,
    store: Arc<dyn Store>,
    keys: Arc<RelayKeys>,
    clock: Arc<dyn Clock>,
    listeners: Listeners,
) -> Result<RunningRelay, ServerError> {
    let Listeners {
        grpc: grpc_listener,
        admin: admin_listener,
        ohttp: ohttp_listener,
    } = listeners;
    let local = |l: &TcpListener, what, addr| {
        l.local_addr()
            .map_err(|source| ServerError::Bind { what, addr, source })
    };
    let grpc_addr = local(&grpc_listener, "listen", config.listen)?;
    let admin_addr = local(&admin_listener, "admin_listen", config.admin_listen)?;
    let draining = CancellationToken::new();
    let stop_admin = CancellationToken::new();
    let grpc_exited = CancellationToken::new();
    let waiters = Arc::new(Waiters::new());
    let push_wake = Arc::new(Notify::new());
    let metrics = Arc::new(Metrics::new());
    let providers = Arc::new(
        Providers::from_config_with(
            &config.apps,
            &config.webpush,
            Duration::from_millis(config.push.timeout_ms),
            &metrics,
        )
        .await
        .map_err(|e| ServerError::Push(e.to_string()))?,
    );
    let tls = load_tls(&config).await?;

    let guards = Arc::new(Guards::with_ohttp(
        &config.limits,
        &config.rate_limits,
        &config.ohttp,
    ));
    providers
        .breakers()
        .configure(BreakerSettings::from_push(&config.push));
    // Ends with the drain; dropping the handle does not stop it.
    drop(guards.rates.spawn_janitor(draining.clone()));
    let mailbox = MailboxService::new(
        Arc::clone(&store),
        Arc::clone(&keys),
        config.limits.clone(),
        Arc::clone(&clock),
        Arc::clone(&waiters),
        draining.clone(),
        Arc::clone(&push_wake),
    )
    .with_guards(Arc::clone(&guards))
    .with_metrics(Arc::clone(&metrics));
    let relay = RelayService::new(
        Arc::clone(&keys),
        config.app_ids(),
        config.limits.clone(),
        Arc::clone(&store),
        Arc::clone(&providers) as Arc<dyn AppCatalog + Send + Sync>,
        Arc::clone(&clock),
    )
    .with_rate_limits(Arc::clone(&guards.rates))
    .with_metrics(Arc::clone(&metrics))
    .with_app_info(providers.app_info(&config.apps));
    let max_connections = config.limits.max_connections as usize;
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
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    // The layers around every server of the relay's RPCs: the gRPC listener below and the
    // OHTTP gateway, which dispatches into the very same stack.
    let rpc_layers = tower::ServiceBuilder::new()
        // Outermost, so it counts the status the client really gets (renamed below).
        .layer(GrpcMetricsLayer::new(Arc::clone(&metrics)))
        .layer(tower::util::MapResponseLayer::new(
            move |res: http::Response<tonic::body::Body>| oversize_as_resource_exhausted(res, max_request),
        ))
        // Undecodable requests are INVALID_ARGUMENT, not tonic's INTERNAL. A witness that
        // the handler was reached (`Decoded`) decides, not tonic's wording, so a real
        // INTERNAL from a handler is never renamed: see `decode_errors`.
        .layer(DecodeErrorsLayer)
        .into_inner();
    let routes = tonic::service::Routes::new(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(MailboxServer::new(Decoded::new(mailbox)).max_decoding_message_size(max_request))
        .add_service(RelayServer::new(Decoded::new(relay)).max_decoding_message_size(max_request));
    let ohttp = match ohttp_listener {
        Some(listener) => Some(spawn_ohttp(
            &config,
            listener,
            ohttp::keys::KeyRing::new(
                keys.ohttp_root(),
                ohttp::keys::Schedule::from_config(&config.ohttp),
                Arc::clone(&clock),
            )
            .map_err(|e| ServerError::Ohttp(e.to_string()))?,
            tower::Layer::layer(&rpc_layers, routes.clone().prepare()),
            tls.as_ref(),
            Arc::clone(&metrics),
            draining.clone(),
        )?),
        None => None,
    };
    let router = Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE))
        .concurrency_limit_per_connection(config.limits.max_requests_per_connection as usize)
        .layer(rpc_layers)
        .add_routes(routes);
    let grpc_task = {
        let (draining, exited) = (draining.clone(), grpc_exited.clone());
        let tls_config = tls.as_ref().map(CertReloader::server_config).transpose()?;
        tokio::spawn(async move {
            let stop = draining.cancelled_owned();
            let result = match tls_config {
                Some(tls_config) => {
                    router
                        .serve_with_incoming_shutdown(
                            CappedIncoming::new(
                                Box::pin(tls::incoming(grpc_listener, tls_config)),
                                max_connections,
                            ),
                            stop,
                        )
                        .await
                }
                None => {
                    let incoming = CappedIncoming::new(
                        TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
                        max_connections,
                    );
                    router.serve_with_incoming_shutdown(incoming, stop).await
                }
            };
            exited.cancel();
            result
        })
    };
    let admin_state = admin::AdminState {
        store: Arc::clone(&store),
        draining: draining.clone(),
        metrics: Arc::clone(&metrics),
        waiters: Arc::clone(&waiters),
        clock: Arc::clone(&clock),
        missing_providers: providers.missing(&config.apps).into(),
    };
    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        admin::router(admin_state),
        stop_admin.clone(),
    ));
    let settings = SweepSettings {
        interval: Duration::from_millis(config.sweep.interval_ms),
        batch: config.sweep.batch,
    };
    let (sweeper, sweeper_task) =
        sweeper::spawn(Arc::clone(&store), Arc::clone(&clock), settings, draining.clone());
    let stop_notifier = CancellationToken::new();
    let notifier = notifier::spawn(
        Arc::clone(&store),
        *keys.at_rest_key(),
        providers,
        Arc::clone(&clock),
        notifier_settings(&config, Arc::clone(&metrics)),
        Arc::clone(&push_wake),
        stop_notifier.clone(),
    );
    if let Some(arrivals) = store.arrivals() {
        tokio::spawn(forward_arrivals(
            arrivals,
            Arc::clone(&waiters),
            push_wake,
            draining.clone(),
        ));
    }
    if let Some((addr, _)) = &ohttp {
        tracing::info!(ohttp_addr = %addr, "OHTTP gateway serving");
    }
    tracing::info!(%grpc_addr, %admin_addr, x25519 = %hex::encode(keys.x25519_public()), "relay serving");
    Ok(RunningRelay {
        config,
        grpc_addr,
        admin_addr,
        store,
        keys,
        waiters,
        clock,
        sweeper,
        health,
        draining,
        stop_admin,
        grpc_exited,
        grpc_task,
        admin_task,
        ohttp,
        sweeper_task,
        stop_notifier,
        notifier,
        metrics,
        tls,
    })
}

/// Wakes this node's long-polls and push notifier for messages stored by any node of a
/// shared store (its own included: a spurious wake only costs a re-read).
async fn forward_arrivals(
    mut arrivals: tokio::sync::broadcast::Receiver<(crate::store::Account, u32)>,
    waiters: Arc<Waiters>,
    push_wake: Arc<Notify>,
    draining: CancellationToken,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let arrival = tokio::select! {
            () = draining.cancelled() => return,
            r = arrivals.recv() => r,
        };
        match arrival {
            Ok((account, namespace)) => {
                waiters.notify_arrival(&account, namespace);
                push_wake.notify_one();
            }
            // Missed wake-ups only delay: long-polls re-read at their deadline.
            Err(RecvError::Lagged(n)) => tracing::debug!(missed = n, "arrivals from other nodes lagged"),
            Err(RecvError::Closed) => return,
        }
    }
}

fn notifier_settings(config: &Config, metrics: Arc<Metrics>) -> NotifierSettings {
    NotifierSettings {
        // Leases name their node; a random suffix keeps two processes on one host apart.
        node: format!("node-{}", hex::encode(tidings_proto::random_bytes::<6>())),
        concurrency: usize::try_from(config.push.concurrency).unwrap_or(1),
        lease_ms: config.push.lease_ms,
        max_age_ms: config.push.max_age_ms,
        idle_poll: Duration::from_millis(config.push.poll_interval_ms),
        texts: PushTexts {
            title: config.push.alert_title.clone(),
            body: config.push.alert_body.clone(),
        },
        metrics: Some(metrics),
    }
}

impl RunningRelay {
    /// The bound gRPC address (the real port when `listen` said 0).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The bound admin HTTP address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The bound address of the OHTTP gateway, when `[ohttp]` enables it.
    pub fn ohttp_addr(&self) -> Option<SocketAddr> {
        self.ohttp.as_ref().map(|(addr, _)| *addr)
    }

    /// The configuration the relay runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The store (tests inspect it; the push notifier will share it).
    pub fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.store)
    }

    /// The relay's derived keys.
    pub fn keys(&self) -> Arc<RelayKeys> {
        Arc::clone(&self.keys)
    }

    /// The long-poll registry; [`Waiters::notify_arrival`] wakes a mailbox's pollers.
    pub fn waiters(&self) -> Arc<Waiters> {
        Arc::clone(&self.waiters)
    }

    /// The clock the relay reads.
    pub fn clock(&self) -> Arc<dyn Clock> {
        Arc::clone(&self.clock)
    }

    /// The relay's metrics (what `/metrics` serves).
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Re-reads `tls_cert` and `tls_key` (the binary calls this on SIGHUP): connections
    /// made afterwards get the new certificate, open ones keep theirs. If the files are
    /// unusable the old certificate stays and the error is returned (and logged).
    pub async fn reload_tls(&self) -> Result<(), ServerError> {
        let tls = self.tls.clone().ok_or(ServerError::NoTls)?;
        match blocking(move || tls.reload()).await? {
            Ok(()) => {
                tracing::info!("TLS certificate reloaded");
                Ok(())
            }
            Err(e) => {
                tracing::error!("TLS certificate not reloaded, keeping the old one: {e}");
                Err(e.into())
            }
        }
    }

    /// The background sweeper's counters and trigger.
    pub fn sweeper(&self) -> &SweeperHandle {
        &self.sweeper
    }

    /// Completes when the gRPC server has stopped on its own (an error), so a binary
    /// can exit instead of lingering without serving.
    pub async fn stopped(&self) {
        self.grpc_exited.cancelled().await;
    }

    /// Stops the relay: `/readyz` turns 503 and health NOT_SERVING, parked long-polls
    /// answer empty at once, in-flight calls finish (up to 10 s), the sweeper stops, the
    /// admin server stops, and the store flushes and closes.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        tracing::info!("shutting down: draining in-flight calls");
        self.health
            .set_not_serving::<MailboxServer<MailboxService>>()
            .await;
        self.health.set_not_serving::<RelayServer<RelayService>>().await;
        self.draining.cancel();
        let mut problems = Vec::new();
        let mut grpc_task = self.grpc_task;
        match tokio::time::timeout(DRAIN_TIMEOUT, &mut grpc_task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => problems.push(format!("gRPC server: {e}")),
            Ok(Err(e)) => problems.push(format!("gRPC server task: {e}")),
            Err(_) => {
                tracing::warn!("in-flight calls did not finish within {DRAIN_TIMEOUT:?}; cutting them off");
                grpc_task.abort();
            }
        }
        if let Some((_, task)) = self.ohttp {
            // It stopped accepting with the drain and gives its requests the same time.
            match tokio::time::timeout(DRAIN_TIMEOUT, task).await {
                Ok(Ok(Ok(()))) | Err(_) => {}
                Ok(Ok(Err(e))) => problems.push(format!("OHTTP gateway: {e}")),
                Ok(Err(e)) => problems.push(format!("OHTTP gateway task: {e}")),
            }
        }
        if let Err(e) = self.sweeper_task.await {
            problems.push(format!("sweeper task: {e}"));
        }
        // In-flight pushes record their outcome; queued jobs wait durably for the next start.
        self.stop_notifier.cancel();
        self.notifier.join().await;
        self.stop_admin.cancel();
        match tokio::time::timeout(DRAIN_TIMEOUT, self.admin_task).await {
            Ok(Ok(Ok(()))) | Err(_) => {}
            Ok(Ok(Err(e))) => problems.push(format!("admin server: {e}")),
            Ok(Err(e)) => problems.push(format!("admin server task: {e}")),
        }
        self.store.close().await?;
        tracing::info!("relay stopped; storage flushed");
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ServerError::Task(problems.join("; ")))
        }
    }
}

/// Starts the OHTTP gateway on `listener`, dispatching into `rpc` (the layered services of
/// the gRPC listener); it stops accepting when `stop` (the drain) is cancelled.
#[allow(clippy::too_many_arguments)]
fn spawn_ohttp<S, B>(
    config: &Config,
    listener: TcpListener,
    keys: ohttp::keys::KeyRing,
    rpc: S,
    tls: Option<&Arc<CertReloader>>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<std::io::Result<()>>), ServerError>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<B>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<tower::BoxError>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<tower::BoxError>,
{
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        what: "ohttp.listen",
        addr: config.ohttp.listen,
        source,
    })?;
    let tls_config = match (config.ohttp.tls, tls) {
        (true, Some(reloader)) => Some(ohttp::tls_config(reloader.server_config()?.as_ref())),
        // Config::validate insists on tls_cert and tls_key for ohttp.tls.
        (true, None) => return Err(ServerError::NoTls),
        (false, _) => None,
    };
    let gateway = ohttp::Gateway::new(
        Arc::new(keys),
        rpc,
        config.limits.max_request_bytes(),
        &config.rate_limits.client_ip_header,
    )
    .with_metrics(metrics);
    let task = tokio::spawn(ohttp::serve(
        listener,
        tls_config,
        Arc::new(gateway),
        config.limits.max_connections as usize,
        stop,
    ));
    Ok((addr, task))
}

/// Loads the configured certificate and key, if any (both or neither: `Config::validate`).
async fn load_tls(config: &Config) -> Result<Option<Arc<CertReloader>>, ServerError> {
    let (Some(cert), Some(key)) = (config.tls_cert.clone(), config.tls_key.clone()) else {
        return Ok(None);
    };
    let reloader = blocking(move || CertReloader::load(&cert, &key)).await??;
    Ok(Some(Arc::new(reloader)))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ServerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ServerError::Task(format!("startup task: {e}")))
}

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
