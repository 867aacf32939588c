//! Several config edits folded into one change: [`ConfigEdit`], the argument of
//! [`super::Account::edit`], and how a change is applied, queued and saved.

use crate::config::{
    Change, ConfigError, ConfigState, Contact, Conversation, Delta, Profile, Settings, sync::CONFIG_NAMESPACE,
};

use std::{
    sync::PoisonError,
    time::{Duration, Instant},
};

use super::{AccountError, CONFIG_BLOB, Inner};

/// The longest an edit waits for its upload (it stays queued either way).
const EDIT_FLUSH_LIMIT: Duration = Duration::from_secs(5);
/// How long edits leave uploading to sync after an upload failed.
const EDIT_FLUSH_PAUSE: Duration = Duration::from_secs(30);

/// Edits of the account's config made inside one [`super::Account::edit`] call. Each
/// applies at once (the getters see it) and they upload together as one change.
pub struct ConfigEdit<'a> {
    state: &'a mut ConfigState,
    delta: Delta,
}

impl std::fmt::Debug for ConfigEdit<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigEdit")
            .field("changed", &!self.delta.is_empty())
            .finish_non_exhaustive()
    }
}

impl<'a> ConfigEdit<'a> {
    pub(super) fn new(state: &'a mut ConfigState) -> ConfigEdit<'a> {
        ConfigEdit {
            state,
            delta: Delta::default(),
        }
    }

    pub(super) fn into_delta(self) -> Delta {
        self.delta
    }

    fn keep(&mut self, delta: Result<Delta, ConfigError>) -> Result<(), ConfigError> {
        self.delta.merge(&delta?);
        Ok(())
    }

    /// Whether any edit so far changed something.
    pub fn changed(&self) -> bool {
        !self.delta.is_empty()
    }

    /// Applies one edit; it shows in the getters at once and uploads with the others.
    /// A refused edit (a value over its document's limit) changes nothing.
    pub fn apply(&mut self, change: &Change) -> Result<(), ConfigError> {
        let d = self.state.apply_change(change);
        self.keep(d)
    }

    /// The profile, with the edits so far.
    pub fn profile(&self) -> Profile {
        self.state.profile()
    }

    /// One contact, if shown, with the edits so far.
    pub fn contact(&self, account_id: &str) -> Option<Contact> {
        self.state.contact(account_id)
    }

    /// One conversation, if shown, with the edits so far.
    pub fn conversation(&self, id: &str) -> Option<Conversation> {
        self.state.conversation(id)
    }

    /// The settings, with the edits so far.
    pub fn settings(&self) -> Settings {
        self.state.settings()
    }
}

impl Inner {
    /// Runs `f` on the replica; queues the resulting change's uploads durably (first, so a
    /// crash right after still sends it and merges it back), then saves the replica.
    /// Returns `f`'s result and whether anything changed.
    pub(super) fn apply_edit<T>(
        &self,
        f: impl FnOnce(&mut ConfigEdit<'_>) -> Result<T, ConfigError>,
    ) -> Result<(Result<T, ConfigError>, bool), AccountError> {
        let mut engine = self.lock_engine();
        let engine = &mut *engine;
        let mut edit = ConfigEdit::new(&mut engine.state);
        let result = f(&mut edit);
        let delta = edit.into_delta();
        if delta.is_empty() {
            return Ok((result, false));
        }
        // Sealing cannot fail for edits within the documented limits (a delta splits by
        // entry, and one entry is far below a message); should it, the change still
        // reaches the other devices with this device's next snapshot.
        let uploads = engine.planner.delta_uploads(&delta);
        let mut disk = self.lock_disk();
        if let Ok(uploads) = &uploads {
            for u in uploads {
                disk.enqueue_upload(CONFIG_NAMESPACE, &u.data)?;
            }
        }
        disk.put_blob(CONFIG_BLOB, &engine.state.save())?;
        crate::notification::save_preview_index(&mut disk, &engine.state)?;
        uploads?;
        Ok((result, true))
    }

    /// Uploads the queue now if the relay can be reached; a failure only leaves it queued.
    /// Bounded in time, and skipped for a while after a failure, so that edits made
    /// offline do not each wait for connection attempts; [`super::Account::sync`] always
    /// tries.
    pub(super) async fn try_flush(&self) {
        if self.flush_paused() {
            tracing::debug!("config upload deferred: the relay was unreachable moments ago");
            return;
        }
        let attempt = async {
            let _gate = self.sync_gate.lock().await;
            self.flush_pending().await
        };
        match tokio::time::timeout(EDIT_FLUSH_LIMIT, attempt).await {
            Ok(Ok(n)) => tracing::debug!(uploads = n, "config change uploaded"),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "config upload deferred to the next sync");
                self.pause_flush(true);
            }
            Err(_) => {
                tracing::debug!("config upload too slow; deferred to the next sync");
                self.pause_flush(true);
            }
        }
    }

    fn flush_paused(&self) -> bool {
        let until = *self.flush_pause.lock().unwrap_or_else(PoisonError::into_inner);
        until.is_some_and(|t| Instant::now() < t)
    }

    /// After a failed upload (`true`), edits stop trying for [`EDIT_FLUSH_PAUSE`]; a
    /// successful one (`false`) lifts that.
    pub(super) fn pause_flush(&self, failed: bool) {
        let mut until = self.flush_pause.lock().unwrap_or_else(PoisonError::into_inner);
        *until = failed.then(|| Instant::now() + EDIT_FLUSH_PAUSE);
    }
}
