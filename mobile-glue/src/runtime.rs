//! The runtime every background task and every network call of this crate runs on.
//!
//! UniFFI's tokio support (`async_runtime = "tokio"`) gives exported async functions a
//! tokio context, but the driver's loops outlive any one call, and sync entry points
//! (opening a client) create tonic channels that must live on a runtime. So the crate
//! owns one small multi-threaded runtime, created on first use, and exported async
//! functions hand their work to it.

use std::{future::Future, sync::OnceLock};

use tokio::runtime::{Builder, Handle, Runtime};

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

/// Runs `fut` on the crate's runtime and waits for it from whatever executor the caller
/// (UniFFI's foreign future, or a test) uses.
pub async fn run<T, F>(fut: F) -> Result<T>
where
    F: Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    match handle().spawn(fut).await {
        Ok(result) => result,
        // The task was aborted (client closed) or panicked: neither should reach the app
        // as a panic across the FFI.
        Err(e) if e.is_cancelled() => Err(TidingsError::Closed),
        Err(e) => Err(TidingsError::State {
            reason: format!("internal task failed: {e}"),
        }),
    }
}
