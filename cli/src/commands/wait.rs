//! Waiting in the commands that run until Ctrl-C (`listen`, `contacts list --watch`):
//! long-polls, and riding out a relay that went away.

use std::time::Duration;

use crate::{
    error::{CliError, ExitClass},
    output::Output,
};

/// How long one long-poll waits for something new.
pub const LONG_POLL_MS: u32 = 25_000;

/// The longest pause between tries while the relay is unreachable.
const MAX_PAUSE: Duration = Duration::from_secs(30);

/// Counts failures in a row and waits them out when they are the relay being away.
#[derive(Debug, Default)]
pub struct Retry {
    failures: u32,
}

impl Retry {
    /// A success: the next failure starts over with a short pause.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// A failure: waits (1 s, doubling to 30 s) when the relay is unreachable, after saying
    /// so on stderr; any other failure ends the command.
    pub async fn failed(&mut self, out: &Output, e: CliError) -> Result<(), CliError> {
        if e.class() != ExitClass::Unreachable {
            return Err(e);
        }
        self.failures = self.failures.saturating_add(1);
        let pause = pause(self.failures);
        out.note(&format!("{e}; trying again in {} s", pause.as_secs()));
        tokio::time::sleep(pause).await;
        Ok(())
    }
}

fn pause(failures: u32) -> Duration {
    let doubling = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    Duration::from_secs(u64::from(doubling)).min(MAX_PAUSE)
}

/// Resolves when the user presses Ctrl-C. If the handler cannot be installed, never: the
/// default SIGINT behaviour (ending the process) then still applies.
pub async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_a_ceiling() {
        assert_eq!(pause(1), Duration::from_secs(1));
        assert_eq!(pause(2), Duration::from_secs(2));
        assert_eq!(pause(5), Duration::from_secs(16));
        assert_eq!(pause(6), MAX_PAUSE);
        assert_eq!(pause(u32::MAX), MAX_PAUSE);
    }
}
