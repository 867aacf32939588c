//! Spawning the relay's listeners: gRPC (plain or TLS), the admin HTTP endpoints and the
//! OHTTP gateway. Each obeys the token [`Lifecycle`] hands it.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, task::JoinHandle};
use tonic::transport::{Server, server::TcpIncoming};

use super::{
    ServerError,
    lifecycle::{Lifecycle, ListenerTask},
    services::{Services, Shared, rpc_layers},
};
use crate::{
    admin, config::Config, limits::CappedIncoming, notifier::providers::Providers, ohttp, tls,
    tls::CertReloader,
};

/// HTTP/2 pings keep idle long-poll connections alive through NATs and load balancers.
const KEEPALIVE: Duration = Duration::from_secs(30);

/// Serves the RPCs on `listener` until the drain; cancels `grpc_exited` when it ends.
pub(super) fn spawn_grpc(
    config: &Config,
    listener: TcpListener,
    services: &Services,
    shared: &Shared,
    tls: Option<&Arc<CertReloader>>,
    lifecycle: &Lifecycle,
) -> Result<JoinHandle<Result<(), tonic::transport::Error>>, ServerError> {
    let max_connections = config.limits.max_connections as usize;
    let router = Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE))
        .concurrency_limit_per_connection(config.limits.max_requests_per_connection as usize)
        .layer(rpc_layers(&shared.metrics, config.limits.max_request_bytes()))
        .add_routes(services.routes.clone());
    let (draining, exited) = (lifecycle.draining.clone(), lifecycle.grpc_exited.clone());
    let tls_config = tls.map(|t| t.server_config()).transpose()?;
    Ok(tokio::spawn(async move {
        let stop = draining.cancelled_owned();
        let result = match tls_config {
            Some(tls_config) => {
                let incoming =
                    CappedIncoming::new(Box::pin(tls::incoming(listener, tls_config)), max_connections);
                router.serve_with_incoming_shutdown(incoming, stop).await
            }
            None => {
                let incoming = CappedIncoming::new(
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    max_connections,
                );
                router.serve_with_incoming_shutdown(incoming, stop).await
            }
        };
        exited.cancel();
        result
    }))
}

/// Serves `/healthz`, `/readyz` and `/metrics` until `stop_admin`, the last token.
pub(super) fn spawn_admin(
    config: &Config,
    listener: TcpListener,
    shared: &Shared,
    providers: &Providers,
    lifecycle: &Lifecycle,
) -> ListenerTask {
    let state = admin::AdminState {
        store: Arc::clone(&shared.store),
        draining: lifecycle.draining.clone(),
        metrics: Arc::clone(&shared.metrics),
        waiters: Arc::clone(&shared.waiters),
        clock: Arc::clone(&shared.clock),
        missing_providers: providers.missing(&config.apps).into(),
    };
    tokio::spawn(admin::serve(
        listener,
        admin::router(state),
        lifecycle.stop_admin.clone(),
    ))
}

/// Starts the OHTTP gateway on `listener`, dispatching into the same layered services as
/// the gRPC listener; it stops accepting with the drain.
pub(super) fn spawn_ohttp(
    config: &Config,
    listener: TcpListener,
    services: &Services,
    shared: &Shared,
    tls: Option<&Arc<CertReloader>>,
    lifecycle: &Lifecycle,
) -> Result<(SocketAddr, ListenerTask), ServerError> {
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
    let keys = ohttp::keys::KeyRing::new(
        shared.keys.ohttp_root(),
        ohttp::keys::Schedule::from_config(&config.ohttp),
        Arc::clone(&shared.clock),
    )
    .map_err(|e| ServerError::Ohttp(e.to_string()))?;
    let rpc = tower::Layer::layer(
        &rpc_layers(&shared.metrics, config.limits.max_request_bytes()),
        services.routes.clone().prepare(),
    );
    let gateway = ohttp::Gateway::new(
        Arc::new(keys),
        rpc,
        config.limits.max_request_bytes(),
        &config.rate_limits.client_ip_header,
    )
    .with_metrics(Arc::clone(&shared.metrics));
    let task = tokio::spawn(ohttp::serve(
        listener,
        tls_config,
        Arc::new(gateway),
        config.limits.max_connections as usize,
        lifecycle.draining.clone(),
    ));
    Ok((addr, task))
}
