//! Linking a device by QR code, both sides.
//!
//! New device (signed out): `begin_link` → show the payload as a QR code →
//! `wait_for_link` (also reported through `on_link_request`) → the user compares the
//! six digits with the other screen → `confirm_link` (adopts the account and restores its
//! config) or `reject_link` (keeps waiting for another offer with `wait_for_link`).
//!
//! Linked device (signed in): scan the QR code → `link_device(payload)` → show the
//! returned digits.

use std::{sync::Arc, time::Duration};

use tidings_device_link::account::{Account, IncomingLink, LinkRequest as AccountLinkRequest};

use crate::{
    client::{Inner, TidingsClient},
    error::{Result, TidingsError},
    events::Event,
    types::{LinkRequest, Operation},
};

/// The new device's side of a link in progress.
#[derive(Default)]
pub(crate) struct LinkState {
    offer: Option<Arc<AccountLinkRequest>>,
    pending: Option<IncomingLink>,
}

#[uniffi::export(async_runtime = "tokio")]
impl TidingsClient {
    /// New device: makes one-time keys and returns the text to show as a QR code. Replaces
    /// any earlier offer of this client.
    pub async fn begin_link(&self) -> Result<String> {
        let inner = self.inner.clone();
        self.inner
            .run(async move {
                if inner.account().is_some() {
                    return Err(TidingsError::AlreadySignedIn);
                }
                let offer = {
                    let _guard = crate::runtime::handle().enter();
                    Arc::new(Account::link_offer(inner.settings.clone())?)
                };
                let payload = offer.qr_payload();
                let mut link = inner.link.lock().await;
                link.offer = Some(offer);
                link.pending = None;
                Ok(payload)
            })
            .await
    }

    /// New device: waits up to `timeout_ms` for a linked device to send the account.
    /// Returns the code to compare (also reported through `on_link_request`).
    pub async fn wait_for_link(&self, timeout_ms: u64) -> Result<LinkRequest> {
        let inner = self.inner.clone();
        self.inner
            .run(async move { inner.wait_for_link(Duration::from_millis(timeout_ms)).await })
            .await
    }

    /// New device: the codes matched. Adopts the account, restores its config (progress
    /// through `on_progress`) and returns the account id.
    pub async fn confirm_link(&self) -> Result<String> {
        let inner = self.inner.clone();
        self.inner
            .run(async move {
                if inner.account().is_some() {
                    return Err(TidingsError::AlreadySignedIn);
                }
                let pending = inner.link.lock().await.pending.take().ok_or_else(no_request)?;
                let progress = inner.progress_reporter(Operation::Restore);
                let account = pending.confirm(&inner.dir, &inner.key, progress).await?;
                inner.link.lock().await.offer = None;
                Ok(inner.adopt(account))
            })
            .await
    }

    /// New device: the codes differed. Forgets what was sent; `wait_for_link` may wait
    /// for another attempt with the same QR code.
    pub async fn reject_link(&self) -> Result<()> {
        let inner = self.inner.clone();
        self.inner
            .run(async move {
                let pending = inner.link.lock().await.pending.take().ok_or_else(no_request)?;
                pending.reject().await;
                Ok(())
            })
            .await
    }

    /// Linked device: sends the account to the new device whose QR code was scanned.
    /// Returns the code to show; the new device's user compares it with theirs.
    pub async fn link_device(&self, qr_payload: String) -> Result<String> {
        let inner = self.inner.clone();
        self.inner
            .run(async move {
                let account = inner.require_account()?;
                Ok(account.approve_link(&qr_payload).await?)
            })
            .await
    }
}

impl Inner {
    async fn wait_for_link(&self, timeout: Duration) -> Result<LinkRequest> {
        let offer = self
            .link
            .lock()
            .await
            .offer
            .clone()
            .ok_or_else(|| TidingsError::Link {
                reason: "no link code was shown: call begin_link first".into(),
            })?;
        let pending = offer.wait(timeout).await?;
        let request = LinkRequest {
            sas: pending.sas().to_owned(),
        };
        let mut link = self.link.lock().await;
        // Only if the offer is still the current one (begin_link may have replaced it).
        if !link.offer.as_ref().is_some_and(|o| Arc::ptr_eq(o, &offer)) {
            return Err(TidingsError::Link {
                reason: "the link code was replaced while waiting".into(),
            });
        }
        link.pending = Some(pending);
        drop(link);
        self.events.send(Event::LinkRequest(request.clone()));
        Ok(request)
    }
}

fn no_request() -> TidingsError {
    TidingsError::Link {
        reason: "no link request is waiting: call wait_for_link first".into(),
    }
}
