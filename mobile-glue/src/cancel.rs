//! Cancelling long operations from the app.
//!
//! `restore_account`, `wait_for_link` and `sync_now` take an optional [`Cancellation`]:
//! `cancel()` ends the call at its next await with [`TidingsError::Cancelled`], leaving the
//! state as the last completed step left it (a restore writes the identity last, so a
//! cancelled restore leaves no account behind). A Kotlin coroutine that is cancelled stops
//! the call the same way (the runtime aborts work nobody awaits any more); the generated
//! Swift waits for the call instead, so Swift code passes a `Cancellation` (the
//! `TidingsAsync` helpers tie it to Task cancellation).

use std::{future::Future, sync::Arc};

use tokio_util::sync::CancellationToken;

use crate::error::{Result, TidingsError};

/// A handle the app keeps to cancel one or more long calls.
#[derive(Debug, Default, uniffi::Object)]
pub struct Cancellation {
    token: CancellationToken,
}

#[uniffi::export]
impl Cancellation {
    /// A handle not cancelled yet.
    #[uniffi::constructor]
    pub fn new() -> Arc<Cancellation> {
        Arc::new(Cancellation::default())
    }

    /// Cancels every call that was given this handle (now or later).
    pub fn cancel(&self) {
        self.token.cancel();
    }

    /// Whether `cancel` was called.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }
}

/// Runs `fut` until it ends or `cancel` fires.
pub(crate) async fn cancellable<T>(
    cancel: Option<Arc<Cancellation>>,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    let Some(cancel) = cancel else {
        return fut.await;
    };
    tokio::select! {
        biased;
        () = cancel.token.cancelled() => Err(TidingsError::Cancelled),
        r = fut => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cancelled_call_ends_with_cancelled() {
        let c = Cancellation::new();
        let pending = cancellable(Some(c.clone()), std::future::pending::<Result<()>>());
        c.cancel();
        assert_eq!(pending.await, Err(TidingsError::Cancelled));
        assert_eq!(cancellable(None, async { Ok(5) }).await, Ok(5));
        assert_eq!(
            cancellable(Some(Cancellation::new()), async { Ok(6) }).await,
            Ok(6)
        );
    }
}
