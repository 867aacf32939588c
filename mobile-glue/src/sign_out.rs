//! Sign-out and wipe that really stop pushes.
//!
//! `sign_out` queues a signed Unsubscribe durably before the identity is deleted (see
//! device-link's `account::sign_out`), rotates the device id and push key, and the
//! background loop here sends the queue until the relay has taken it — at once when the
//! relay answers, otherwise with backoff for as long as the client runs, across restarts.

use std::{sync::Arc, time::Duration};

use tidings_device_link::{account::sign_out as queue, state::DeviceState};

use crate::{
    client::{Inner, TidingsClient},
    error::{Result, TidingsError},
};

/// How long `sign_out` and `wipe` wait for the relay before leaving the Unsubscribe to
/// the background loop (sign-out) or giving up on it (wipe: the registration then lapses).
const FLUSH_NOW: Duration = Duration::from_secs(5);
/// The longest one attempt at sending the queue may take.
const RETRY_EVERY: Duration = Duration::from_secs(30);
/// How often an empty queue is looked at (a sign-out pokes the loop; this only covers a
/// queue written by another process).
const IDLE_LOOK: Duration = Duration::from_secs(60);

#[uniffi::export(async_runtime = "tokio")]
impl TidingsClient {
    /// Signs out: queues the removal of this install's push registration durably (sent
    /// now when the relay answers, otherwise retried in the background, also after a
    /// restart, until the relay takes it), forgets the account, its config and pending
    /// messages on this install, and rotates the device id and push key. No push for the
    /// old account reaches this install once the relay has taken the removal, and none
    /// could be read before. The phrase is the only way back.
    pub async fn sign_out(&self) -> Result<()> {
        let inner = self.inner.clone();
        self.inner.run(async move { inner.sign_out().await }).await
    }

    /// Removes everything this install keeps, after signing out (with up to 5 s for the
    /// relay to take the push registration's removal; if it cannot be reached, the
    /// registration lapses at its expiry and its pushes cannot be read here). The client
    /// is stopped; open a new one on the (then empty) directory to start again.
    pub async fn wipe(&self) -> Result<()> {
        let inner = self.inner.clone();
        self.inner.run(async move { inner.wipe().await }).await?;
        self.inner.stop();
        remove_contents(&self.inner.dir)
    }

    /// Push registration removals queued by sign-outs and not yet taken by the relay.
    pub async fn queued_unsubscribes(&self) -> Result<u32> {
        let inner = self.inner.clone();
        self.inner
            .run(async move {
                let n = queue::queued_unsubscribes(&inner.lock_store())?;
                Ok(u32::try_from(n).unwrap_or(u32::MAX))
            })
            .await
    }
}

impl Inner {
    async fn sign_out(self: &Arc<Self>) -> Result<()> {
        let account = self.require_account()?;
        self.set_signed_out_mode();
        // Stop the loops first, so no sync of the old account writes after this.
        let running = self.stop_loops().await;
        *self.account_slot() = None;
        account.sign_out()?;
        drop(account);
        // The device id and push key were rotated under this handle's feet.
        *self.lock_store() = DeviceState::open(&self.dir, &self.key)?;
        self.flush_for(FLUSH_NOW).await;
        if running {
            self.start_loops();
        }
        Ok(())
    }

    async fn wipe(self: &Arc<Self>) -> Result<()> {
        if self.account().is_some() {
            self.sign_out().await?;
        }
        self.stop_loops().await;
        Ok(())
    }

    /// One flush of the queue, bounded by `limit`; true when the queue is empty after it.
    async fn flush_for(&self, limit: Duration) -> bool {
        match tokio::time::timeout(limit, queue::flush_unsubscribes(&self.relay, &self.store)).await {
            Ok(Ok(report)) => report.left == 0,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the queued push registration removals");
                false
            }
            Err(_) => false,
        }
    }

    fn unsubscribes_queued(&self) -> bool {
        queue::queued_unsubscribes(&self.lock_store()).is_ok_and(|n| n > 0)
    }
}

/// Sends queued removals while the client runs: at start, after each poke, and with
/// backoff (`retry_backoff_ms`, doubling) while some are left.
pub(crate) async fn unsubscribe_loop(inner: Arc<Inner>) {
    let mut wake = inner.wake.subscribe();
    let mut failures = 0u32;
    loop {
        let pause = if !inner.unsubscribes_queued() {
            failures = 0;
            IDLE_LOOK
        } else if inner.flush_for(RETRY_EVERY).await {
            failures = 0;
            continue;
        } else {
            failures = failures.saturating_add(1);
            retry_pause(inner.options.retry_backoff_ms, failures)
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            r = wake.changed() => if r.is_err() { return },
            () = inner.shutdown.cancelled() => return,
        }
    }
}

/// `base_ms` doubled per failure, up to 64 times.
fn retry_pause(base_ms: u64, failures: u32) -> Duration {
    let factor = 1u64 << failures.saturating_sub(1).min(6);
    Duration::from_millis(base_ms.saturating_mul(factor))
}

/// Removes every file and folder in `dir`, keeping `dir` itself (an App Group container's
/// subfolder may be managed by the app).
fn remove_contents(dir: &std::path::Path) -> Result<()> {
    let failed = |e: std::io::Error| TidingsError::State {
        kind: crate::error::StateFailure::Io,
        reason: format!("cannot remove the state directory's contents: {e}"),
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(failed(e)),
    };
    for entry in entries {
        let path = entry.map_err(failed)?.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).map_err(failed)?;
        } else {
            std::fs::remove_file(&path).map_err(failed)?;
        }
    }
    Ok(())
}
