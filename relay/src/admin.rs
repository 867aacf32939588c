//! The HTTP admin endpoints on `admin_listen`: `/healthz` (the process runs) and
//! `/readyz` (the store takes writes and the relay is not draining). `/metrics` joins
//! them with the hardening issue.

use std::{sync::Arc, time::Duration};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// How long `/readyz` waits for the store before calling it not ready.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
struct AdminState {
    store: Arc<dyn Store>,
    draining: CancellationToken,
}

/// The admin routes. `draining` (cancelled when shutdown begins) turns `/readyz` to 503
/// so load balancers stop sending new calls while in-flight ones finish.
pub fn router(store: Arc<dyn Store>, draining: CancellationToken) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AdminState { store, draining })
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
    if state.draining.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: shutting down\n".to_owned(),
        );
    }
    match tokio::time::timeout(READY_TIMEOUT, state.store.check_writable()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n".to_owned()),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: storage did not answer within {} s\n",
                READY_TIMEOUT.as_secs()
            ),
        ),
    }
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

    #[tokio::test]
    async fn readyz_follows_the_store_and_the_drain() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(crate::store::redb::RedbStore::open(dir.path()).unwrap());
        let draining = CancellationToken::new();
        let r = router(Arc::clone(&store), draining.clone());
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
        let r = router(Arc::clone(&store), CancellationToken::new());
        store.close().await.unwrap();
        let (status, body) = get(&r, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.starts_with("not ready: "), "{body}");
        assert_eq!(get(&r, "/healthz").await.0, StatusCode::OK);
    }
}
