//! The runtime every background task and every network call of this crate runs on.
//!
//! UniFFI's tokio support (`async_runtime = "tokio"`) gives exported async functions a
//! tokio context, but the driver's loops outlive any one call, and sync entry points
//! (opening a client) create tonic channels that must live on a runtime. So the crate
//! owns one small multi-threaded runtime, created on first use, and exported async
//! functions hand their work to it.

use std::{future::Future, sync::OnceLock, time::Duration};

use tokio::runtime::{Builder, Handle, Runtime};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::error::{Result, TidingsError};

/// Worker threads: a phone app needs little; two keep a slow callback from stalling I/O.
const WORKER_THREADS: usize = 2;

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The crate's runtime, started on first use.
pub fn handle() -> &'static Handle {
    RUNTIME
        .get_or_init(|| {
            // Failing to start two threads means the process cannot do anything useful;
            // there is no caller to report it to from a lazy initialiser.
            Builder::new_multi_thread()
                .worker_threads(WORKER_THREADS)
                .thread_name("tidings")
                .enable_all()
                .build()
                .expect("the tidings runtime starts")
        })
        .handle()
}

/// Runs `fut` on the crate's runtime as one of a client's calls and waits for it from
/// whatever executor the caller (UniFFI's foreign future, or a test) uses.
///
/// The call is tracked by `calls`, so stopping the client can wait for it, and it is
/// abandoned at its next await once `shutdown` fires: after `stop` returns, no call of
/// that client touches its state directory any more.
pub async fn run<T, F>(calls: &TaskTracker, shutdown: &CancellationToken, fut: F) -> Result<T>
where
    F: Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let shutdown = shutdown.clone();
    let guarded = async move {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => Err(TidingsError::Closed),
            r = fut => r,
        }
    };
    // A foreign caller that gives up (a cancelled Swift Task or Kotlin coroutine) drops
    // this future; the work must stop with it, not run on unobserved.
    let task = AbortOnDrop(calls.spawn_on(guarded, handle()));
    match task.await {
        Ok(result) => result,
        // The task was aborted (client closed) or panicked: neither should reach the app
        // as a panic across the FFI.
        Err(e) if e.is_cancelled() => Err(TidingsError::Closed),
        Err(e) => Err(TidingsError::State {
            kind: crate::error::StateFailure::Internal,
            reason: format!("internal task failed: {e}"),
        }),
    }
}

/// Waits up to `limit` for every task of `calls` to end, once `calls` is closed.
///
/// Blocking is only done off the runtime (an app thread, or the event thread): on one of
/// the runtime's own threads it would stall the very tasks it waits for, so there the
/// wait is skipped and the tasks end at their next await.
pub fn wait_blocking(calls: &TaskTracker, limit: Duration) {
    if Handle::try_current().is_ok() {
        return;
    }
    handle().block_on(async {
        if tokio::time::timeout(limit, calls.wait()).await.is_err() {
            tracing::warn!("client tasks still running after stop; they end at their next await");
        }
    });
}

/// Aborts the task when dropped before it finished.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for AbortOnDrop<T> {
    type Output = std::result::Result<T, tokio::task::JoinError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}
