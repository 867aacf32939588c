//! The HTTP admin endpoints on `admin_listen`: `/healthz` (the process runs), `/readyz`
//! (the store takes writes, every configured push provider is set up, and the relay is
//! not draining) and `/metrics` (Prometheus text format, see [`crate::metrics`]).

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{clock::Clock, longpoll::Waiters, metrics::Metrics, store::Store};

/// How long `/readyz` waits for the store before calling it not ready.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// What the admin endpoints look at.
#[derive(Clone)]
pub struct AdminState {
    /// The store `/readyz` probes and `/metrics` samples.
    pub store: Arc<dyn Store>,
    /// Cancelled when shutdown begins: `/readyz` turns 503 so load balancers stop
    /// sending new calls while in-flight ones finish.
    pub draining: CancellationToken,
    /// The relay's metrics.
    pub metrics: Arc<Metrics>,
    /// Parked long-polls, sampled by `/metrics`.
    pub waiters: Arc<Waiters>,
    /// The relay's clock (outbox job ages).
    pub clock: Arc<dyn Clock>,
    /// Configured push providers that have no sender (`app.apns`, `app.fcm`); any makes
    /// `/readyz` fail.
    pub missing_providers: Arc<[String]>,
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Serves `router` on `listener` until `stop` is cancelled.
pub async fn serve(listener: TcpListener, router: Router, stop: CancellationToken) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AdminState>) -> (StatusCode, String) {
    let not_ready = |why: String| (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n"));
    if state.draining.is_cancelled() {
        return not_ready("shutting down".to_owned());
    }
    if !state.missing_providers.is_empty() {
        return not_ready(format!(
            "push providers not set up: {}",
            state.missing_providers.join(", ")
        ));
    }
    match tokio::time::timeout(READY_TIMEOUT, state.store.check_writable()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n".to_owned()),
        Ok(Err(e)) => not_ready(e.to_string()),
        Err(_) => not_ready(format!(
            "storage did not answer within {} s",
            READY_TIMEOUT.as_secs()
        )),
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    state
        .metrics
        .sample(&state.waiters, state.store.as_ref(), state.clock.as_ref())
        .await;
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    async fn get(router: &Router, path: &str) -> (StatusCode, String) {
        let req = axum::http::Request::get(path).body(Body::empty()).unwrap();
        let res = router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 16).await.unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    fn state(store: Arc<dyn Store>, draining: CancellationToken, missing: &[&str]) -> AdminState {
        AdminState {
            store,
            draining,
            metrics: Arc::new(Metrics::new()),
            waiters: Arc::new(Waiters::new()),
            clock: Arc::new(crate::clock::SystemClock),
            missing_providers: missing.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn open_store(dir: &std::path::Path) -> Arc<dyn Store> {
        Arc::new(crate::store::redb::RedbStore::open(dir, crate::store::linkage::test_keys()).unwrap())
    }

    #[tokio::test]
    async fn readyz_follows_the_store_the_providers_and_the_drain() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let draining = CancellationToken::new();
        let r = router(state(Arc::clone(&store), draining.clone(), &[]));
        assert_eq!(get(&r, "/healthz").await, (StatusCode::OK, "ok\n".to_owned()));
        assert_eq!(get(&r, "/readyz").await.0, StatusCode::OK);
        draining.cancel();
        assert_eq!(
            get(&r, "/readyz").await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: shutting down\n".to_owned()
            )
        );
        let r = router(state(Arc::clone(&store), CancellationToken::new(), &["app.fcm"]));
        assert_eq!(
            get(&r, "/readyz").await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: push providers not set up: app.fcm\n".to_owned()
            )
        );
        let r = router(state(Arc::clone(&store), CancellationToken::new(), &[]));
        store.close().await.unwrap();
        let (status, body) = get(&r, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.starts_with("not ready: "), "{body}");
        assert_eq!(get(&r, "/healthz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn metrics_samples_the_outbox_and_the_long_polls() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let st = state(Arc::clone(&store), CancellationToken::new(), &[]);
        let waiters = Arc::clone(&st.waiters);
        let _parked = waiters.register([1; 32], 0);
        let r = router(st);
        let (status, body) = get(&r, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("tidings_open_longpolls 1"), "{body}");
        assert!(body.contains("tidings_outbox_jobs 0"), "{body}");
        assert!(
            body.contains("tidings_outbox_oldest_job_age_seconds 0.0"),
            "{body}"
        );
        store.close().await.unwrap();
    }
}
