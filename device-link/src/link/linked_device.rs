//! The linked device's side: answer a scanned QR code with a hello, then, once the user
//! decided, with the sealed root or a decline.

use std::fmt;

use super::{Handshake, LINK_NAMESPACE, LINK_TTL_MS, LinkError, OfferPayload};
use crate::{client::RelayClient, identity::Identity};

/// One scanned request on the linked device: the offer and a fresh handshake. Holds no
/// secret of the account; [`LinkResponder::approve`] is the only thing that seals one.
pub struct LinkResponder {
    offer: OfferPayload,
    handshake: Handshake,
}

impl fmt::Debug for LinkResponder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkResponder")
            .field("relay_addr", &self.offer.relay_addr)
            .field("device_name", &self.offer.device_name)
            .field("sas", &self.handshake.sas())
            .finish_non_exhaustive()
    }
}

impl LinkResponder {
    /// A fresh ephemeral key for a parsed offer (no network).
    pub fn new(offer: OfferPayload) -> Result<Self, LinkError> {
        let handshake = Handshake::start(&offer)?;
        Ok(Self { offer, handshake })
    }

    /// Parses a scanned QR payload and makes the handshake for it (no network).
    pub fn scan(qr_payload: &str) -> Result<Self, LinkError> {
        let offer = OfferPayload::parse(qr_payload).map_err(LinkError::from)?;
        Self::new(offer)
    }

    /// What the QR code asks for.
    pub fn offer(&self) -> &OfferPayload {
        &self.offer
    }

    /// The handshake: its code and messages.
    pub fn handshake(&self) -> &Handshake {
        &self.handshake
    }

    /// The code to show next to the request; the new device shows the same.
    pub fn sas(&self) -> &str {
        self.handshake.sas()
    }

    /// Deposits the hello (public bytes only) into the offer's one-time mailbox, so the
    /// new device can show the code. `client` must be connected to the offer's relay.
    pub async fn send_hello(&self, client: &RelayClient) -> Result<(), LinkError> {
        self.deposit(client, &self.handshake.hello()).await
    }

    /// The user approved: seals `identity`'s root secret under this handshake (the one the
    /// hello announced) and deposits it. May be called again after a failed call.
    pub async fn approve(&self, client: &RelayClient, identity: &Identity) -> Result<(), LinkError> {
        self.deposit(client, &self.handshake.seal_root(identity.entropy()))
            .await
    }

    /// The user declined: deposits the decline marker so the new device learns it, and
    /// forgets the handshake key (also when the deposit fails; then the new device's wait
    /// times out instead).
    pub async fn decline(self, client: &RelayClient) -> Result<(), LinkError> {
        let marker = self.handshake.decline();
        let mailbox = self.offer.mailbox;
        drop(self);
        client
            .store(&mailbox, LINK_NAMESPACE, &marker, LINK_TTL_MS)
            .await?;
        Ok(())
    }

    async fn deposit(&self, client: &RelayClient, message: &[u8]) -> Result<(), LinkError> {
        client
            .store(&self.offer.mailbox, LINK_NAMESPACE, message, LINK_TTL_MS)
            .await?;
        Ok(())
    }
}
