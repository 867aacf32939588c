//! Fast Mode over Web Push (UnifiedPush distributors on phones without Google services):
//! the subscription keys the SDK generates and keeps, and the pushes that arrive through
//! the distributor.
//!
//! The keys live in this client's state as the blob `webpush-keys` (sealed like every
//! blob), made on the first `enable_fast_mode(WebPush, …)` and removed at sign-out with
//! the device id and push key (device-link's `Account::sign_out`), so a new account on the
//! same install never shares a subscription key with the old one.

use std::time::Duration;

use tidings_device_link::webpush::{WEB_PUSH_KEYS_BLOB, WebPushKeys};

use crate::{
    client::{Inner, TidingsClient},
    error::Result,
    types::PushOutcome,
};

/// `handle_web_push`'s default budget, as for `handle_push`.
const DEFAULT_BUDGET_MS: u32 = 8_000;

#[uniffi::export(async_runtime = "tokio")]
impl TidingsClient {
    /// Handles what a UnifiedPush distributor delivered (the raw message bytes of the
    /// connector's `onMessage`): removes the Web Push encryption with the keys this SDK
    /// registered, then does everything `handle_push` does. Fails with `PushNotForThisDevice`
    /// when the bytes were encrypted for other keys (an old registration, another app) and
    /// `PushMalformed` when they are not a Web Push message at all.
    #[uniffi::method(default(budget_ms = None))]
    pub async fn handle_web_push(&self, body: Vec<u8>, budget_ms: Option<u32>) -> Result<PushOutcome> {
        let inner = self.inner.clone();
        let budget = Duration::from_millis(u64::from(budget_ms.unwrap_or(DEFAULT_BUDGET_MS)));
        self.inner
            .run(async move {
                let enc = inner.open_web_push(&body)?;
                inner.handle_push(&enc, budget).await
            })
            .await
    }
}

impl Inner {
    /// The install's Web Push keys, made and saved on first use.
    pub(crate) fn web_push_keys(&self) -> Result<WebPushKeys> {
        let mut store = self.lock_store();
        if let Some(saved) = store.get_blob(WEB_PUSH_KEYS_BLOB)? {
            match WebPushKeys::from_saved(&saved) {
                Ok(keys) => return Ok(keys),
                // New keys make a working registration again; the old ones decrypt nothing.
                Err(e) => tracing::warn!(error = %e, "replacing the damaged Web Push keys"),
            }
        }
        let keys = WebPushKeys::generate();
        store.put_blob(WEB_PUSH_KEYS_BLOB, &keys.to_saved())?;
        Ok(keys)
    }

    /// The `enc` string inside a Web Push body, with the saved keys.
    fn open_web_push(&self, body: &[u8]) -> Result<String> {
        let saved = self.lock_store().get_blob(WEB_PUSH_KEYS_BLOB)?;
        Ok(WebPushKeys::open_with_saved(saved.as_deref(), body)?)
    }
}
