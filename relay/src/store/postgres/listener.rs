//! Arrivals stored by any node, heard through `LISTEN tidings_arrivals`.
//!
//! Every message commit sends `NOTIFY tidings_arrivals, '<hex account>:<namespace>'` in
//! its transaction, so PostgreSQL delivers it only once the message is visible. One
//! dedicated connection per store listens and fans the notifications out on a broadcast
//! channel; when that connection drops it is opened again with backoff. Notifications
//! sent while it was down are lost, which costs a long-poll its early wake-up, not a
//! message: the poll re-reads when it times out.

use std::time::Duration;

use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_util::sync::CancellationToken;

use super::tls::{self, Connected};
use crate::store::Account;

/// The notification channel.
pub const CHANNEL: &str = "tidings_arrivals";

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The payload of an arrival in (account, namespace).
pub fn payload(account: &Account, namespace: u32) -> String {
    format!("{}:{namespace}", hex::encode(account))
}

/// Reads a payload written by [`payload`].
pub fn parse_payload(payload: &str) -> Option<(Account, u32)> {
    let (account, namespace) = payload.split_once(':')?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(account, &mut out).ok()?;
    Some((Account(out), namespace.parse().ok()?))
}

/// Starts listening; the task ends when `stop` is cancelled.
pub(crate) fn spawn(
    mut config: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
    arrivals: broadcast::Sender<(Account, u32)>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    // An idle listener would not notice a vanished server for the OS default of two
    // hours; probe the socket instead.
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(20))
        .keepalives_interval(Duration::from_secs(5))
        .keepalives_retries(3);
    tokio::spawn(async move {
        let mut backoff = MIN_BACKOFF;
        loop {
            let outcome = tokio::select! {
                () = stop.cancelled() => return,
                r = listen(&config, tls.as_ref(), &arrivals, &mut backoff) => r,
            };
            match outcome {
                Ok(()) => tracing::warn!("the PostgreSQL arrivals listener was disconnected; reconnecting"),
                Err(e) => tracing::warn!(
                    "the PostgreSQL arrivals listener failed ({}); retrying in {backoff:?}",
                    super::errors::db_error(e)
                ),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    })
}

/// One connection's life: connect, LISTEN, forward until it ends.
async fn listen(
    config: &tokio_postgres::Config,
    tls: Option<&MakeRustlsConnect>,
    arrivals: &broadcast::Sender<(Account, u32)>,
    backoff: &mut Duration,
) -> Result<(), tokio_postgres::Error> {
    let Connected {
        client,
        driver,
        mut messages,
    } = tls::connect(config, tls).await?;
    // Stops the driver when the store closes (this future is dropped) or on return.
    let _abort_driver = AbortOnDrop(driver.abort_handle());
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    *backoff = MIN_BACKOFF;
    tracing::debug!("listening for arrivals from other relay nodes");
    while let Some(message) = messages.recv().await {
        let AsyncMessage::Notification(n) = message else {
            continue;
        };
        match parse_payload(n.payload()) {
            // No receiver is fine: nobody is waiting.
            Some(arrival) => drop(arrivals.send(arrival)),
            None => tracing::debug!("ignoring a malformed arrival notification"),
        }
    }
    drop(client);
    driver.await.unwrap_or(Ok(()))
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_and_rejects_garbage() {
        let account = Account([0xab; 32]);
        assert_eq!(parse_payload(&payload(&account, 32767)), Some((account, 32767)));
        for bad in [
            "",
            "ab:1",
            &format!("{}:x", hex::encode(account)),
            &hex::encode(account),
        ] {
            assert_eq!(parse_payload(bad), None, "{bad:?}");
        }
    }
}
