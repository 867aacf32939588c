//! The lifetime of one running relay: the cancellation tokens that stop its parts, the
//! tasks it spawned, and the order in which shutdown stops them (as mini-redis's
//! `Shutdown`: every part is handed the token it obeys, and only this module cancels).

use std::time::Duration;

use tidings_proto::v1::{mailbox_server::MailboxServer, relay_server::RelayServer};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{mailbox::MailboxService, notifier::NotifierHandle, relay_service::RelayService};

/// How long shutdown waits for in-flight calls (and then the OHTTP gateway and the admin
/// server) before cutting them off.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The tokens of one relay, in the order [`Tasks::shutdown`] cancels them.
#[derive(Debug, Clone, Default)]
pub(super) struct Lifecycle {
    /// First: `/readyz` fails, parked long-polls answer, the gRPC and OHTTP listeners stop
    /// accepting and finish their calls, the sweeper, rate janitor and arrival forwarder end.
    pub(super) draining: CancellationToken,
    /// Second, once no call is in flight: in-flight pushes record their outcome.
    pub(super) stop_notifier: CancellationToken,
    /// Last: the admin listener (so `/metrics` and `/readyz` answer during the drain).
    pub(super) stop_admin: CancellationToken,
    /// Not a command but a signal: the gRPC task cancels it when it ends, on its own or not.
    pub(super) grpc_exited: CancellationToken,
}

/// What one listener task returns: an I/O error ended it, or it stopped cleanly.
pub(super) type ListenerTask = JoinHandle<std::io::Result<()>>;

/// Every task a relay spawned that shutdown waits for.
pub(super) struct Tasks {
    pub(super) grpc: JoinHandle<Result<(), tonic::transport::Error>>,
    pub(super) admin: ListenerTask,
    pub(super) ohttp: Option<ListenerTask>,
    pub(super) sweeper: JoinHandle<()>,
    pub(super) notifier: NotifierHandle,
}

impl Tasks {
    /// Stops everything in order and returns what went wrong on the way (the store is
    /// the caller's to close, after this).
    pub(super) async fn shutdown(
        self,
        lifecycle: &Lifecycle,
        health: &tonic_health::server::HealthReporter,
    ) -> Vec<String> {
        health.set_not_serving::<MailboxServer<MailboxService>>().await;
        health.set_not_serving::<RelayServer<RelayService>>().await;
        lifecycle.draining.cancel();
        let mut problems = Vec::new();
        let mut grpc = self.grpc;
        match tokio::time::timeout(DRAIN_TIMEOUT, &mut grpc).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => problems.push(format!("gRPC server: {e}")),
            Ok(Err(e)) => problems.push(format!("gRPC server task: {e}")),
            Err(_) => {
                tracing::warn!("in-flight calls did not finish within {DRAIN_TIMEOUT:?}; cutting them off");
                grpc.abort();
            }
        }
        if let Some(task) = self.ohttp {
            // It stopped accepting with the drain and gives its requests the same time.
            wait_listener(task, "OHTTP gateway", &mut problems).await;
        }
        if let Err(e) = self.sweeper.await {
            problems.push(format!("sweeper task: {e}"));
        }
        // In-flight pushes record their outcome; queued jobs wait durably for the next start.
        lifecycle.stop_notifier.cancel();
        self.notifier.join().await;
        lifecycle.stop_admin.cancel();
        wait_listener(self.admin, "admin server", &mut problems).await;
        problems
    }
}

/// Waits up to [`DRAIN_TIMEOUT`] for a listener that was told to stop; one that takes
/// longer is left to end with the runtime (its calls are not the relay's state).
async fn wait_listener(task: ListenerTask, what: &str, problems: &mut Vec<String>) {
    match tokio::time::timeout(DRAIN_TIMEOUT, task).await {
        Ok(Ok(Ok(()))) | Err(_) => {}
        Ok(Ok(Err(e))) => problems.push(format!("{what}: {e}")),
        Ok(Err(e)) => problems.push(format!("{what} task: {e}")),
    }
}
