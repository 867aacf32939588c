//! The relay's background work: the sweeper, the push notifier, and the forwarding of
//! other nodes' arrivals to this node's long-polls and notifier.

use std::{sync::Arc, time::Duration};

use tokio::{sync::Notify, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use super::{lifecycle::Lifecycle, services::Shared};
use crate::{
    config::Config,
    longpoll::Waiters,
    metrics::Metrics,
    notifier::{self, NotifierHandle, NotifierSettings, PushTexts, providers::Providers},
    store::Account,
    sweeper::{self, SweepSettings, SweeperHandle},
};

/// The handles of the background work that [`super::RunningRelay`] keeps.
pub(super) struct Background {
    pub(super) sweeper: SweeperHandle,
    pub(super) sweeper_task: JoinHandle<()>,
    pub(super) notifier: NotifierHandle,
}

/// Spawns the sweeper (stops with the drain), the notifier (stops after it) and, on a
/// shared store, the arrival forwarder.
pub(super) fn spawn(
    config: &Config,
    shared: &Shared,
    providers: Arc<Providers>,
    lifecycle: &Lifecycle,
) -> Background {
    let settings = SweepSettings {
        interval: Duration::from_millis(config.sweep.interval_ms),
        batch: config.sweep.batch,
    };
    let (sweeper, sweeper_task) = sweeper::spawn(
        Arc::clone(&shared.store),
        Arc::clone(&shared.clock),
        settings,
        lifecycle.draining.clone(),
    );
    let notifier = notifier::spawn(
        Arc::clone(&shared.store),
        *shared.keys.at_rest_key(),
        providers,
        Arc::clone(&shared.clock),
        notifier_settings(config, Arc::clone(&shared.metrics)),
        Arc::clone(&shared.push_wake),
        lifecycle.stop_notifier.clone(),
    );
    if let Some(arrivals) = shared.store.arrivals() {
        tokio::spawn(forward_arrivals(
            arrivals,
            Arc::clone(&shared.waiters),
            Arc::clone(&shared.push_wake),
            lifecycle.draining.clone(),
        ));
    }
    Background {
        sweeper,
        sweeper_task,
        notifier,
    }
}

/// Wakes this node's long-polls and push notifier for messages stored by any node of a
/// shared store (its own included: a spurious wake only costs a re-read).
async fn forward_arrivals(
    mut arrivals: tokio::sync::broadcast::Receiver<(Account, u32)>,
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
