//! Linking by QR code for the account engine, asking first (DESIGN.md "Linking a
//! device"; the handshake is [`crate::link`]).
//!
//! Linked device: [`Account::inspect_link`] (deposits only a hello) → show the request's
//! name, relay and code → [`Account::approve_link`] or [`Account::decline_link`].
//!
//! New device: [`Account::link_offer`] → show [`LinkRequest::qr_payload`] →
//! [`LinkRequest::wait`] (the hello: the code to show) → the user compares →
//! [`IncomingLink::confirm`] (waits for the approved root and adopts it) or
//! [`IncomingLink::reject`].

use std::{path::Path, time::Duration};

use super::{Account, AccountError, Progress, RelaySettings};
use crate::{
    client::RelayClient,
    link::{LinkOffer, LinkResponder, PendingLink, same_relay},
};

impl Account {
    /// The new device's side of linking by QR code: fresh one-time keys for a device called
    /// `device_name` (shown on the linked device) that will use `relay`. Show
    /// [`LinkRequest::qr_payload`], then [`LinkRequest::wait`].
    pub fn link_offer(
        relay: impl Into<RelaySettings>,
        device_name: &str,
    ) -> Result<LinkRequest, AccountError> {
        let settings = relay.into();
        let offer = LinkOffer::new(&settings.url, device_name)?;
        let client = RelayClient::connect_lazy(&settings.url, settings.client.clone())?;
        Ok(LinkRequest {
            offer,
            client,
            settings,
        })
    }

    /// The linked device's side, first step: reads a scanned QR code and deposits a hello
    /// (a fresh ephemeral public key, nothing secret) in its one-time mailbox, so the new
    /// device can show the code. Returns what the code asks for; show it with
    /// [`InspectedLink::sas`], then [`Account::approve_link`] or [`Account::decline_link`].
    pub async fn inspect_link(&self, qr_payload: &str) -> Result<InspectedLink, AccountError> {
        let responder = LinkResponder::scan(qr_payload)?;
        let relay = &responder.offer().relay_addr;
        let same_relay = same_relay(relay, &self.inner.settings.url);
        let client = if same_relay {
            self.inner.client.clone()
        } else {
            RelayClient::connect_lazy(relay, self.inner.settings.client.clone())?
        };
        responder.send_hello(&client).await?;
        Ok(InspectedLink {
            responder,
            client,
            same_relay,
        })
    }

    /// The user saw equal codes and approved: seals this account's root secret under the
    /// inspected request's handshake (the one its hello announced) and deposits it. A
    /// failed call may be repeated.
    pub async fn approve_link(&self, link: &InspectedLink) -> Result<(), AccountError> {
        link.responder.approve(&link.client, &self.inner.identity).await?;
        Ok(())
    }

    /// The user declined: forgets the request's handshake and deposits an authenticated
    /// "declined" marker, so the new device ends with a typed outcome. The handshake is
    /// forgotten even when the deposit fails (the new device's wait then times out).
    pub async fn decline_link(&self, link: InspectedLink) -> Result<(), AccountError> {
        let InspectedLink {
            responder, client, ..
        } = link;
        responder.decline(&client).await?;
        Ok(())
    }
}

/// A scanned link request on the linked device, from [`Account::inspect_link`]: what it
/// asks for. Holds no secret of the account.
pub struct InspectedLink {
    responder: LinkResponder,
    client: RelayClient,
    same_relay: bool,
}

impl std::fmt::Debug for InspectedLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InspectedLink")
            .field("responder", &self.responder)
            .field("same_relay", &self.same_relay)
            .finish_non_exhaustive()
    }
}

impl InspectedLink {
    /// The relay the QR code names (where the new device waits, and would use).
    pub fn relay_addr(&self) -> &str {
        &self.responder.offer().relay_addr
    }

    /// Whether that is this account's relay. Flag it when not: a new device on another
    /// relay is unusual, and may be someone else's code.
    pub fn same_relay(&self) -> bool {
        self.same_relay
    }

    /// The name the new device gave itself (validated: no control characters).
    pub fn device_name(&self) -> &str {
        &self.responder.offer().device_name
    }

    /// The six-digit code to show; the new device shows the same.
    pub fn sas(&self) -> &str {
        self.responder.sas()
    }
}

/// The new device's side of QR linking, from [`Account::link_offer`].
pub struct LinkRequest {
    offer: LinkOffer,
    client: RelayClient,
    settings: RelaySettings,
}

impl std::fmt::Debug for LinkRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkRequest")
            .field("relay", &self.settings.url)
            .finish_non_exhaustive()
    }
}

impl LinkRequest {
    /// The text to show as a QR code.
    pub fn qr_payload(&self) -> String {
        self.offer.qr_payload()
    }

    /// The one-time keys behind it (the one-time mailbox can be read with
    /// [`LinkOffer::mailbox_key`]).
    pub fn offer(&self) -> &LinkOffer {
        &self.offer
    }

    /// Waits (long-polling) up to `timeout` for a linked device to scan the code, that is
    /// for its hello. Call it again to keep waiting after [`IncomingLink::reject`].
    pub async fn wait(&self, timeout: Duration) -> Result<IncomingLink, AccountError> {
        let pending = self.offer.wait_for_hello(&self.client, timeout).await?;
        Ok(IncomingLink {
            pending,
            client: self.client.clone(),
            settings: self.settings.clone(),
        })
    }
}

/// A linked device scanned the code: the code to compare, before anything was sent.
pub struct IncomingLink {
    pending: PendingLink,
    client: RelayClient,
    settings: RelaySettings,
}

impl std::fmt::Debug for IncomingLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingLink")
            .field("sas", &self.pending.sas())
            .finish_non_exhaustive()
    }
}

impl IncomingLink {
    /// The six-digit code to show next to the linked device's.
    pub fn sas(&self) -> &str {
        self.pending.sas()
    }

    /// The relay this device waits on (the one its QR code named).
    pub fn relay_addr(&self) -> &str {
        self.pending.relay_addr()
    }

    /// The user saw equal codes: waits up to `timeout` for the linked device's approval,
    /// then adopts the account into `state_dir` exactly like [`Account::restore`] (full
    /// pull and merge before any upload) and cleans the one-time mailbox. Only a root
    /// sealed under the hello whose code was shown is adopted.
    ///
    /// `Link(Declined)` and `Link(Mismatch)` end the attempt; after `Link(Timeout)` or a
    /// failed adoption, call again (a root that arrived is kept).
    pub async fn confirm(
        &self,
        timeout: Duration,
        state_dir: impl AsRef<Path>,
        app_key: &[u8; 32],
        progress: impl Fn(Progress) + Send + Sync,
    ) -> Result<Account, AccountError> {
        let identity = self.pending.wait_for_root(&self.client, timeout).await?;
        let account = Account::adopt(
            state_dir.as_ref(),
            app_key,
            self.settings.clone(),
            identity,
            &progress,
        )
        .await?;
        self.pending.finish(&self.client).await;
        Ok(account)
    }

    /// The codes differed: forget this request and clean the one-time mailbox.
    pub async fn reject(self) {
        self.pending.reject(&self.client).await;
    }
}
