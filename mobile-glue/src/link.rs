//! Linking a device by QR code, both sides; nothing secret leaves the linked device
//! before the user approves there (DESIGN.md "Linking a device").
//!
//! Linked device (signed in): scan the QR code → `inspect_link(payload)` (deposits only a
//! public hello) → show the returned [`LinkInspection`]: the new device's name, its relay
//! (warn when `same_relay` is false) and the six digits → `approve_link()` (seals and
//! sends the account) or `decline_link()`.
//!
//! New device (signed out): `begin_link(device_name)` → show the payload as a QR code →
//! `wait_for_link` (returns when a device scanned it; also reported through
//! `on_link_request`) → show the six digits → the user compares them with the other
//! screen → `confirm_link` (waits for the approval, adopts the account, restores its
//! config) or `reject_link`. Call `confirm_link` only on the user's word that the codes
//! match, never by itself: that word is what keeps this device out of an account someone
//! else sealed under a code of their own.
//!
//! The old one-call `link_device` is gone: approving what was never shown is exactly
//! what this flow prevents.

use std::{sync::Arc, time::Duration};

use tidings_device_link::{
    account::{Account, AccountError, IncomingLink, InspectedLink, LinkRequest as AccountLinkRequest},
    link::{LinkError, check_device_name},
};
use tokio_util::sync::CancellationToken;

use crate::{
    cancel::{Cancellation, cancellable},
    client::{Inner, TidingsClient},
    error::{LinkFailure, Result, TidingsError},
    events::Event,
    types::{LinkRequest, Operation},
};

/// What a scanned link code asks for, shown on the linked device before the user
/// approves or declines. Nothing has been sent but a public key.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct LinkInspection {
    /// The relay the new device uses, as its code names it.
    pub relay_url: String,
    /// Whether that is this account's relay. When false, say so prominently: a device on
    /// another relay is unusual and may be someone else's code.
    pub same_relay: bool,
    /// The name the new device gave itself (at most 64 bytes, no control characters).
    pub device_name: String,
    /// The six-digit code; the new device shows the same one.
    pub sas: String,
}

/// How a confirmed link ended on the new device. A timeout is the `Timeout` error
/// instead: `confirm_link` may then be called again to keep waiting.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum LinkOutcome {
    /// The other device approved: this install now holds the account.
    Linked {
        /// The account id.
        account_id: String,
    },
    /// The other device declined. The QR code stays valid: `wait_for_link` waits for
    /// another scan.
    Declined,
    /// An account arrived from another device than the one whose code was shown (two
    /// devices scanned the code, or someone tried to substitute an account). Nothing was
    /// adopted; start over with `begin_link`.
    Mismatch,
}

/// Both sides of links in progress on this install.
#[derive(Default)]
pub(crate) struct LinkState {
    /// New device: the code shown.
    offer: Option<Arc<AccountLinkRequest>>,
    /// New device: the scan whose code is shown.
    pending: Option<Scan>,
    /// Linked device: the scanned request awaiting the user's decision.
    inspected: Option<Inspected>,
}

/// A scan of this install's code, and what cancels a `confirm_link` waiting on it.
#[derive(Clone)]
struct Scan {
    link: Arc<IncomingLink>,
    cancel: CancellationToken,
}

impl LinkState {
    /// Forgets the scan, ending a `confirm_link` that waits on it.
    fn drop_scan(&mut self) -> Option<Scan> {
        let scan = self.pending.take();
        if let Some(s) = &scan {
            s.cancel.cancel();
        }
        scan
    }
}

/// A request inspected by the account `account_id` (so a sign-in to another account in
/// between never approves it with the wrong root).
struct Inspected {
    account_id: String,
    link: InspectedLink,
}

#[uniffi::export(async_runtime = "tokio")]
impl TidingsClient {
    /// New device: makes one-time keys and returns the text to show as a QR code.
    /// `device_name` (1 to 64 bytes, no control characters) is shown on the scanning
    /// device. Replaces any earlier code of this client.
    pub async fn begin_link(&self, device_name: String) -> Result<String> {
        let inner = self.inner.clone();
        self.inner
            .run(async move {
                if inner.account().is_some() {
                    return Err(TidingsError::AlreadySignedIn);
                }
                check_device_name(&device_name).map_err(|e| TidingsError::InvalidArgument {
                    reason: format!("device_name: {e}"),
                })?;
                let offer = {
                    let _guard = crate::runtime::handle().enter();
                    Arc::new(Account::link_offer(inner.settings.clone(), &device_name)?)
                };
                let payload = offer.qr_payload();
                let mut link = inner.link.lock().await;
                link.offer = Some(offer);
                link.drop_scan();
                Ok(payload)
            })
            .await
    }

    /// New device: waits up to `timeout_ms` for a device to scan the code. Returns the
    /// code to show (also reported through `on_link_request`); nothing was sent yet.
    /// `Timeout` when nobody scanned it in time, `Cancelled` when `cancel` fired (the code
    /// stays valid: wait again).
    #[uniffi::method(default(cancel = None))]
    pub async fn wait_for_link(
        &self,
        timeout_ms: u64,
        cancel: Option<Arc<Cancellation>>,
    ) -> Result<LinkRequest> {
        let inner = self.inner.clone();
        self.inner
            .run(cancellable(cancel, async move {
                inner.wait_for_link(Duration::from_millis(timeout_ms)).await
            }))
            .await
    }

    /// New device: the user says the codes match. Waits up to `timeout_ms` for the other
    /// device's answer; on approval adopts the account, restores its config (progress
    /// through `on_progress`). Only an account sealed under the code shown is adopted.
    /// `Timeout` when no answer came yet (call again to keep waiting), `Cancelled` when
    /// `cancel` fired (nothing adopted; call again to keep waiting).
    #[uniffi::method(default(cancel = None))]
    pub async fn confirm_link(
        &self,
        timeout_ms: u64,
        cancel: Option<Arc<Cancellation>>,
    ) -> Result<LinkOutcome> {
        let inner = self.inner.clone();
        self.inner
            .run(cancellable(cancel, async move {
                inner.confirm_link(Duration::from_millis(timeout_ms)).await
            }))
            .await
    }

    /// New device: the codes differ. Forgets this scan; `wait_for_link` may wait for
    /// another one with the same QR code.
    pub async fn reject_link(&self) -> Result<()> {
        let inner = self.inner.clone();
        self.inner
            .run(async move {
                let scan = inner.link.lock().await.drop_scan().ok_or_else(no_request)?;
                match Arc::try_unwrap(scan.link) {
                    Ok(pending) => pending.reject().await,
                    // The confirm_link that holds it was just cancelled; what the one-time
                    // mailbox holds expires by itself.
                    Err(_) => tracing::debug!("rejected a link while it was being confirmed"),
                }
                Ok(())
            })
            .await
    }

    /// Linked device: reads a scanned link code and returns what it asks for, to show
    /// with an Approve and a Decline button. Sends only a public key (so the new device
    /// can show the same code); nothing is sealed until `approve_link`. Replaces any
    /// earlier inspected request. `BadLinkCode` for a code that is not one (its reason
    /// says when the other device must update its app).
    pub async fn inspect_link(&self, qr_payload: String) -> Result<LinkInspection> {
        let inner = self.inner.clone();
        self.inner
            .run(async move {
                let account = inner.require_account()?;
                let link = account.inspect_link(&qr_payload).await?;
                let inspection = LinkInspection {
                    relay_url: link.relay_addr().to_owned(),
                    same_relay: link.same_relay(),
                    device_name: link.device_name().to_owned(),
                    sas: link.sas().to_owned(),
                };
                inner.link.lock().await.inspected = Some(Inspected {
                    account_id: account.account_id(),
                    link,
                });
                Ok(inspection)
            })
            .await
    }

    /// Linked device: the user saw equal codes and approves the inspected request: seals
    /// the account to it and sends it. A failed call may be repeated.
    pub async fn approve_link(&self) -> Result<()> {
        let inner = self.inner.clone();
        self.inner
            .run(async move {
                let account = inner.require_account()?;
                // Held while sending, so a decline cannot cross an approval.
                let mut link = inner.link.lock().await;
                let inspected = link.inspected.as_ref().ok_or_else(no_inspection)?;
                if inspected.account_id != account.account_id() {
                    link.inspected = None;
                    return Err(TidingsError::Link {
                        kind: LinkFailure::OtherAccount,
                        reason:
                            "the request was inspected while another account was signed in; scan it again"
                                .into(),
                    });
                }
                account.approve_link(&inspected.link).await?;
                link.inspected = None;
                Ok(())
            })
            .await
    }

    /// Linked device: the user declines the inspected request. Forgets it and tells the
    /// new device (which ends with `Declined`); forgotten even when telling fails.
    pub async fn decline_link(&self) -> Result<()> {
        let inner = self.inner.clone();
        self.inner
            .run(async move {
                let inspected = inner
                    .link
                    .lock()
                    .await
                    .inspected
                    .take()
                    .ok_or_else(no_inspection)?;
                let account = inner.require_account()?;
                account.decline_link(inspected.link).await?;
                Ok(())
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
                kind: LinkFailure::NotStarted,
                reason: "no link code was shown: call begin_link first".into(),
            })?;
        let pending = offer.wait(timeout).await.map_err(|e| {
            timeout_as(e, |d| {
                format!("no device scanned the link code within {} s", d.as_secs())
            })
        })?;
        let request = LinkRequest {
            sas: pending.sas().to_owned(),
            relay_url: pending.relay_addr().to_owned(),
        };
        let mut link = self.link.lock().await;
        // Only if the offer is still the current one (begin_link may have replaced it).
        if !link.offer.as_ref().is_some_and(|o| Arc::ptr_eq(o, &offer)) {
            return Err(TidingsError::Link {
                kind: LinkFailure::Replaced,
                reason: "the link code was replaced while waiting".into(),
            });
        }
        link.drop_scan();
        link.pending = Some(Scan {
            link: Arc::new(pending),
            cancel: CancellationToken::new(),
        });
        drop(link);
        self.events.send(Event::LinkRequest(request.clone()));
        Ok(request)
    }

    async fn confirm_link(&self, timeout: Duration) -> Result<LinkOutcome> {
        if self.account().is_some() {
            return Err(TidingsError::AlreadySignedIn);
        }
        let scan = self.link.lock().await.pending.clone().ok_or_else(no_request)?;
        let progress = self.progress_reporter(Operation::Restore);
        let outcome = tokio::select! {
            outcome = scan.link.confirm(timeout, &self.dir, &self.key, progress) => outcome,
            () = scan.cancel.cancelled() => {
                return Err(TidingsError::Link {
                    kind: LinkFailure::Replaced,
                    reason: "the link was rejected or replaced while waiting".into(),
                });
            }
        };
        let (outcome, burns_code) = match outcome {
            Ok(account) => (
                LinkOutcome::Linked {
                    account_id: self.adopt(account),
                },
                true,
            ),
            Err(AccountError::Link(LinkError::Declined)) => (LinkOutcome::Declined, false),
            Err(AccountError::Link(LinkError::Mismatch)) => (LinkOutcome::Mismatch, true),
            Err(e) => {
                return Err(timeout_as(e, |d| {
                    format!(
                        "the other device did not approve within {} s; confirm_link again to keep waiting",
                        d.as_secs()
                    )
                }));
            }
        };
        let mut link = self.link.lock().await;
        if link
            .pending
            .as_ref()
            .is_some_and(|p| Arc::ptr_eq(&p.link, &scan.link))
        {
            link.pending = None;
            if burns_code {
                link.offer = None;
            }
        }
        Ok(outcome)
    }
}

/// A link wait's timeout as `Timeout` with a message that says what was waited for;
/// every other error as usual.
fn timeout_as(e: AccountError, what: impl FnOnce(Duration) -> String) -> TidingsError {
    match e {
        AccountError::Link(LinkError::Timeout(d)) => TidingsError::Timeout { what: what(d) },
        other => other.into(),
    }
}

fn no_request() -> TidingsError {
    TidingsError::Link {
        kind: LinkFailure::NotStarted,
        reason: "no device scanned the link code yet: call wait_for_link first".into(),
    }
}

fn no_inspection() -> TidingsError {
    TidingsError::Link {
        kind: LinkFailure::NotStarted,
        reason: "no link request is waiting for a decision: call inspect_link first".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_timeouts_say_what_was_waited_for() {
        let e = timeout_as(
            AccountError::Link(LinkError::Timeout(Duration::from_secs(5))),
            |d| format!("waited {} s", d.as_secs()),
        );
        assert_eq!(
            e,
            TidingsError::Timeout {
                what: "waited 5 s".into()
            }
        );
        let declined = timeout_as(AccountError::Link(LinkError::Declined), |_| unreachable!());
        assert!(matches!(declined, TidingsError::Link { .. }));
    }
}
