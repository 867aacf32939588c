//! At-least-once delivery to the app: the pending inbox.
//!
//! Every message that reaches this install (by poll, by a push the app handled, or by a
//! push the notification extension processed) is saved as pending before the app hears
//! of it, and stays pending until the app calls `ack`. `on_message` is a notification,
//! never the only copy: the app reads `pending_messages()` at every start and after each
//! notification, stores what it got in its own database, then acknowledges it.

use tidings_device_link::{
    account::{Account, MessageSource as Source, ReceivedMessage},
    identity::account_id,
    sealed::SealedMessageError,
};

use crate::{
    client::{Inner, TidingsClient},
    error::{Result, TidingsError},
    events::Event,
    types::{IncomingMessage, MESSAGE_NAMESPACE, MessageSource, hash_hex},
};

#[uniffi::export(async_runtime = "tokio")]
impl TidingsClient {
    /// Every message received and not yet acknowledged, oldest first: what to show the
    /// user at every start and after `on_message`. Empty while signed out.
    pub fn pending_messages(&self) -> Vec<IncomingMessage> {
        self.inner
            .account()
            .map(|a| {
                a.pending_messages()
                    .into_iter()
                    .map(|m| incoming(&a, m))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Acknowledges messages (by their 64-hex-digit hash) once the app has stored them:
    /// they are never offered again. Unknown or already acknowledged hashes are ignored.
    /// Returns how many were pending. The state is written off the caller's thread.
    pub async fn ack(&self, hashes: Vec<String>) -> Result<u32> {
        let parsed = hashes.iter().map(|h| parse_hash(h)).collect::<Result<Vec<_>>>()?;
        let inner = self.inner.clone();
        self.inner
            .run(async move {
                let account = inner.require_account()?;
                let acked = tokio::task::spawn_blocking(move || account.ack(&parsed))
                    .await
                    .map_err(|e| TidingsError::State {
                        kind: crate::error::StateFailure::Internal,
                        reason: format!("acknowledging failed: {e}"),
                    })??;
                Ok(u32::try_from(acked).unwrap_or(u32::MAX))
            })
            .await
    }
}

impl Inner {
    /// Reads in the notification extension's delivery journal: its messages become
    /// pending (and are reported), and every push it processed counts as delivered for
    /// the Fast Mode driver. Called at `connect`, `sync_now` and on foreground. A journal
    /// that cannot be read is logged and left for the next try: its messages are still on
    /// the relay.
    pub(crate) fn ingest_journal(&self) -> Vec<IncomingMessage> {
        let Some(account) = self.account() else {
            return Vec::new();
        };
        match account.ingest_journal(&self.key) {
            Ok(ingest) => {
                if !ingest.pushed.is_empty() {
                    self.note_journal_delivered(&ingest.pushed);
                }
                self.report_messages(ingest.messages)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the notification extension's journal");
                Vec::new()
            }
        }
    }

    /// Reports messages just admitted as pending through `on_message`; returns them.
    pub(crate) fn report_messages(&self, messages: Vec<ReceivedMessage>) -> Vec<IncomingMessage> {
        let Some(account) = self.account() else {
            return Vec::new();
        };
        let fresh: Vec<IncomingMessage> = messages.into_iter().map(|m| incoming(&account, m)).collect();
        for m in &fresh {
            self.events.send(Event::Message(m.clone()));
        }
        fresh
    }
}

/// The FFI record of a received message, opened when it is sealed to `account`.
pub(crate) fn incoming(account: &Account, m: ReceivedMessage) -> IncomingMessage {
    let opened = match account.open_sealed(&m.data) {
        Ok(opened) => Some(opened),
        Err(SealedMessageError::NotSealed) => None,
        Err(e) => {
            // Someone else's bytes that look sealed, or a tampered message: the app still
            // gets the data, as for any opaque message.
            tracing::debug!(error = %e, "a message shaped like a sealed one does not open");
            None
        }
    };
    IncomingMessage {
        hash: hash_hex(&m.hash),
        namespace: MESSAGE_NAMESPACE,
        seq: m.seq,
        created_ms: m.created_ms,
        expires_ms: m.expires_ms,
        source: match m.source {
            Source::Poll => MessageSource::Poll,
            Source::Push => MessageSource::Push,
            Source::Extension => MessageSource::Extension,
        },
        sender_account_id: opened.as_ref().map(|o| account_id(&o.sender)),
        plaintext: opened.map(|o| o.plaintext.to_vec()),
        data: m.data,
    }
}

/// A message hash from its 64 hex digits.
pub(crate) fn parse_hash(hex_hash: &str) -> Result<[u8; 32]> {
    let mut hash = [0u8; 32];
    hex::decode_to_slice(hex_hash, &mut hash).map_err(|_| TidingsError::InvalidArgument {
        reason: "hashes: each must be 64 hex digits (a message hash)".into(),
    })?;
    Ok(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_parsed_strictly() {
        assert_eq!(parse_hash(&"ab".repeat(32)).unwrap(), [0xab; 32]);
        for bad in ["", "ab", &"zz".repeat(32), &"ab".repeat(33)] {
            assert!(
                matches!(parse_hash(bad), Err(TidingsError::InvalidArgument { .. })),
                "{bad}"
            );
        }
    }
}
