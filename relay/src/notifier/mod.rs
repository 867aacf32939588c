//! The notifier: drains the durable push outbox and delivers through APNs, FCM, Huawei Push Kit and Web Push.
//!
//! Jobs are written by the store in the same commit as their message, so a relay killed
//! right after acknowledging a Store still pushes after restart. The notifier claims
//! jobs with a lease (so several nodes can share one outbox, and a dead node's jobs are
//! taken over when its lease ends), delivers them with bounded concurrency over the
//! senders' long-lived HTTP/2 connections, and records each outcome:
//!
//! - delivered: the store remembers (device, hash), so it is never enqueued again;
//! - token dead: the subscription is removed (the device falls back to Slow Mode);
//! - transient failure: retried with jittered exponential backoff honouring
//!   `Retry-After`, until the job is older than `max_age` or the message expired;
//! - configuration error: logged loudly and retried the same way, so fixing the config
//!   and restarting delivers what is still due.
//!
//! A push whose (device, hash) was delivered but whose completion was not yet committed
//! when the node died is sent again by the node that takes the job over: delivery is
//! at-least-once inside that window. The collapse id (APNs) and collapse key (FCM) are
//! derived from the message, so a repeat replaces the first notification instead of
//! showing twice, and clients de-duplicate by hash.

pub mod breaker;
mod payload;
pub mod providers;

use std::{sync::Arc, time::Duration};

use tokio::{
    sync::{Notify, OwnedSemaphorePermit, Semaphore},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::{
    clock::Clock,
    metrics::{Metrics, PushResult, SubscriptionChange},
    push::Outcome,
    registration,
    store::{JobOutcome, PushInputs, PushJob, Store},
};
pub use payload::PushTexts;
use providers::Providers;

/// Tuning of the notifier.
#[derive(Debug, Clone)]
pub struct NotifierSettings {
    /// Names this node's leases.
    pub node: String,
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// How long a claimed job stays leased; longer than a provider call can take.
    pub lease_ms: i64,
    /// Give up on a job enqueued longer ago than this.
    pub max_age_ms: i64,
    /// Look for due jobs at least this often (retries, other nodes' stores).
    pub idle_poll: Duration,
    /// Placeholder texts of alert pushes.
    pub texts: PushTexts,
    /// Where push outcomes are counted, if anywhere.
    pub metrics: Option<Arc<Metrics>>,
}

/// The shared pieces a delivery needs.
struct Shared {
    store: Arc<dyn Store>,
    at_rest_key: [u8; 32],
    providers: Arc<Providers>,
    clock: Arc<dyn Clock>,
    settings: NotifierSettings,
}

/// A running notifier.
pub struct NotifierHandle {
    task: JoinHandle<()>,
}

impl NotifierHandle {
    /// Waits for the notifier to finish its in-flight deliveries after cancellation.
    pub async fn join(self) {
        if let Err(e) = self.task.await {
            error!("notifier task ended abnormally: {e}");
        }
    }
}

/// Starts the notifier. `wake` is notified by the mailbox after a Store that enqueued
/// jobs, so pushes leave within milliseconds instead of at the next poll.
pub fn spawn(
    store: Arc<dyn Store>,
    at_rest_key: [u8; 32],
    providers: Arc<Providers>,
    clock: Arc<dyn Clock>,
    settings: NotifierSettings,
    wake: Arc<Notify>,
    cancel: CancellationToken,
) -> NotifierHandle {
    let shared = Arc::new(Shared {
        store,
        at_rest_key,
        providers,
        clock,
        settings,
    });
    NotifierHandle {
        task: tokio::spawn(run(shared, wake, cancel)),
    }
}

async fn run(shared: Arc<Shared>, wake: Arc<Notify>, cancel: CancellationToken) {
    let limit = shared.settings.concurrency.max(1);
    let permits = Arc::new(Semaphore::new(limit));
    // Recording outcomes is a durable write; it happens after a delivery gives back its
    // permit, so a slow commit never idles a provider connection. This bounds how many
    // outcomes may wait for their commit at once.
    let finishing = Arc::new(Semaphore::new(limit.saturating_mul(FINISH_FACTOR)));
    let batch = claim_batch(limit);
    let mut store_errors = 0u32;
    while !cancel.is_cancelled() {
        // Claim in batches: claiming for every freed permit would pay a durable commit
        // per push. With nothing in flight the whole batch is free at once.
        tokio::select! {
            p = permits.clone().acquire_many_owned(batch) => drop(p),
            () = cancel.cancelled() => break,
        }
        let free = permits.available_permits();
        let now = shared.clock.now_ms();
        let max = u32::try_from(free).unwrap_or(u32::MAX);
        let claimed = shared
            .store
            .claim_jobs(&shared.settings.node, now, shared.settings.lease_ms, max)
            .await;
        let jobs = match claimed {
            Ok(jobs) => {
                store_errors = 0;
                jobs
            }
            Err(e) => {
                store_errors = store_errors.saturating_add(1);
                warn!("notifier cannot claim jobs: {e}");
                idle(&wake, &cancel, backoff(store_errors, None)).await;
                continue;
            }
        };
        if jobs.is_empty() {
            idle(&wake, &cancel, shared.settings.idle_poll).await;
            continue;
        }
        // One read for the whole batch: what each delivery needs besides its job.
        let inputs = match shared.store.push_inputs(&jobs).await {
            Ok(inputs) => inputs,
            Err(e) => {
                // A passing storage problem is not the jobs' fault: leave them leased, so
                // they are claimed again when the lease runs out instead of being lost.
                store_errors = store_errors.saturating_add(1);
                warn!(
                    jobs = jobs.len(),
                    "cannot load push job data, retrying after the lease: {e}"
                );
                idle(&wake, &cancel, backoff(store_errors, None)).await;
                continue;
            }
        };
        for (job, inputs) in jobs.into_iter().zip(inputs) {
            // The semaphores are never closed, so acquiring can only fail after a close.
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            tokio::spawn(deliver(shared.clone(), job, inputs, permit, finishing.clone()));
        }
    }
    // Let in-flight deliveries record their outcome; their leases cover the rest.
    let drain = async {
        let _all = permits
            .acquire_many(u32::try_from(limit).unwrap_or(u32::MAX))
            .await;
        let _recorded = finishing
            .acquire_many(u32::try_from(limit.saturating_mul(FINISH_FACTOR)).unwrap_or(u32::MAX))
            .await;
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), drain).await;
}

/// Outcomes waiting for their commit, as a multiple of the delivery concurrency.
const FINISH_FACTOR: usize = 4;

/// Permits gathered before claiming again: a quarter of the concurrency.
fn claim_batch(limit: usize) -> u32 {
    u32::try_from((limit / 4).max(1)).unwrap_or(u32::MAX)
}

async fn idle(wake: &Notify, cancel: &CancellationToken, at_most: Duration) {
    tokio::select! {
        () = wake.notified() => {}
        () = tokio::time::sleep(at_most) => {}
        () = cancel.cancelled() => {}
    }
}

/// Delivers one job, gives back its delivery permit, and records the outcome.
async fn deliver(
    shared: Arc<Shared>,
    job: PushJob,
    inputs: PushInputs,
    permit: OwnedSemaphorePermit,
    finishing: Arc<Semaphore>,
) {
    let outcome = match attempt(&shared, &job, inputs).await {
        Ok(o) => o,
        Err(give_up) => {
            debug!(job = job.id, "dropping push job: {give_up}");
            if let Some(m) = &shared.settings.metrics {
                m.push_outcome("none", PushResult::Skipped);
            }
            JobOutcome::Dropped
        }
    };
    // Never closed; if it were, recording under the delivery permit is still correct.
    let recording = finishing.acquire_owned().await.ok();
    drop(permit);
    if let Err(e) = shared.store.finish_job(&job, outcome).await {
        // The lease runs out and the job is claimed again: nothing is lost.
        warn!(job = job.id, "cannot record push outcome: {e}");
    }
    drop(recording);
}

/// Why a job is dropped without a provider call.
#[derive(Debug, thiserror::Error)]
enum GiveUp {
    #[error("subscription gone")]
    NoSubscription,
    #[error("message gone (deleted or expired)")]
    NoMessage,
    #[error("stored registration unreadable: {0}")]
    Unreadable(#[from] registration::AtRestError),
}

async fn attempt(shared: &Shared, job: &PushJob, inputs: PushInputs) -> Result<JobOutcome, GiveUp> {
    let sub = inputs.subscription.ok_or(GiveUp::NoSubscription)?;
    let reg = registration::open_at_rest(
        &shared.at_rest_key,
        &job.account_index,
        &job.device_id,
        &sub.sealed,
    )?;
    let msg = inputs.message.ok_or(GiveUp::NoMessage)?;
    let now = shared.clock.now_ms();
    if msg.expires_ms <= now {
        return Err(GiveUp::NoMessage);
    }
    let outcome = payload::send(
        &shared.providers,
        &reg,
        job,
        &msg,
        sub.want_data,
        &shared.settings.texts,
        now,
    )
    .await;
    Ok(record(shared, job, &reg, outcome, now, msg.expires_ms))
}

fn record(
    shared: &Shared,
    job: &PushJob,
    reg: &registration::Registration,
    outcome: Outcome,
    now: i64,
    expires_ms: i64,
) -> JobOutcome {
    let service = reg.service.label();
    let mut result = PushResult::of(&outcome);
    let decided = match outcome {
        Outcome::Delivered => {
            debug!(job = job.id, service, "push delivered");
            JobOutcome::Delivered
        }
        Outcome::TokenDead { reason } => {
            info!(job = job.id, service, app = %reg.app_id, "push token is dead ({reason}); subscription removed");
            JobOutcome::TokenDead
        }
        Outcome::Failed { reason } => {
            warn!(job = job.id, service, app = %reg.app_id, "push refused ({reason}); dropped");
            JobOutcome::Dropped
        }
        Outcome::ConfigError { reason } => {
            error!(job = job.id, service, app = %reg.app_id, "CONFIGURATION PROBLEM with {service} for app {}: {reason}", reg.app_id);
            retry_or_drop(shared, job, now, expires_ms, None)
        }
        Outcome::Retry { after, reason } => {
            debug!(
                job = job.id,
                service,
                attempts = job.attempts,
                "push will be retried ({reason})"
            );
            retry_or_drop(shared, job, now, expires_ms, after)
        }
    };
    if decided == JobOutcome::Dropped && result == PushResult::Retried {
        // A retry that ran out of time is a failure in the end.
        result = PushResult::Failed;
    }
    if let Some(m) = &shared.settings.metrics {
        m.push_outcome(service, result);
        if decided == JobOutcome::TokenDead {
            m.subscription_changed(service, SubscriptionChange::TokenDead);
        }
    }
    decided
}

fn retry_or_drop(
    shared: &Shared,
    job: &PushJob,
    now: i64,
    expires_ms: i64,
    after: Option<Duration>,
) -> JobOutcome {
    let delay = backoff(job.attempts.saturating_add(1), after);
    let at = now.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
    let too_old = at > job.enqueued_ms.saturating_add(shared.settings.max_age_ms);
    if too_old || at >= expires_ms {
        warn!(
            job = job.id,
            attempts = job.attempts,
            "push given up after retries"
        );
        return JobOutcome::Dropped;
    }
    JobOutcome::Retry { not_before_ms: at }
}

/// Full-jitter exponential backoff from 1 s, capped at 10 min, never sooner than the
/// provider's `Retry-After`.
fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    const BASE_MS: u64 = 1_000;
    const CAP_MS: u64 = 600_000;
    let ceiling = BASE_MS.saturating_mul(1u64 << attempt.min(20)).min(CAP_MS);
    let jitter = u64::from_le_bytes(tidings_proto::random_bytes::<8>()) % (ceiling / 2 + 1);
    let d = Duration::from_millis(ceiling / 2 + jitter);
    retry_after.map_or(d, |ra| d.max(ra))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_honours_retry_after() {
        for attempt in 1..30 {
            let d = backoff(attempt, None);
            let ceiling = (1_000u64 << attempt.min(20)).min(600_000);
            assert!(d.as_millis() as u64 >= ceiling / 2 && d.as_millis() as u64 <= ceiling);
        }
        assert!(backoff(1, Some(Duration::from_secs(120))) >= Duration::from_secs(120));
    }
}
