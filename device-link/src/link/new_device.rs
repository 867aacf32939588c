//! The new device's side: the one-time keys behind a QR code, waiting for a hello, then
//! for the root sealed under it.

use std::{
    fmt,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use ed25519_dalek::SigningKey;
use tidings_proto::random_bytes;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::{
    Answer, Handshake, LINK_NAMESPACE, LinkError, LinkMessage, MessageKind, OfferPayload, PayloadError,
    check_device_name, check_relay_addr,
};
use crate::{client::RelayClient, identity::Identity};

/// The longest single long-poll while waiting.
const MAX_POLL: Duration = Duration::from_secs(30);
/// Messages fetched per Retrieve.
const PAGE: u32 = 16;

/// The new device's side: the one-time keys behind a QR code.
pub struct LinkOffer {
    payload: OfferPayload,
    mailbox_key: SigningKey,
    x25519: StaticSecret,
    /// Highest seq already examined for a hello, so waiting again after a rejection moves on.
    cursor: AtomicU64,
}

impl fmt::Debug for LinkOffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkOffer")
            .field("relay_addr", &self.payload.relay_addr)
            .field("device_name", &self.payload.device_name)
            .finish_non_exhaustive()
    }
}

impl LinkOffer {
    /// Makes fresh one-time keys for a new device called `device_name` (shown on the
    /// linked device; see [`check_device_name`]) that uses the relay at `relay_addr`.
    pub fn new(relay_addr: &str, device_name: &str) -> Result<Self, LinkError> {
        check_relay_addr(relay_addr)?;
        check_device_name(device_name)?;
        let mailbox_key = SigningKey::from_bytes(&Zeroizing::new(random_bytes::<32>()));
        let x25519 = StaticSecret::from(random_bytes::<32>());
        let payload = OfferPayload {
            relay_addr: relay_addr.to_owned(),
            device_name: device_name.to_owned(),
            mailbox: mailbox_key.verifying_key().to_bytes(),
            x25519: PublicKey::from(&x25519).to_bytes(),
        };
        Ok(Self {
            payload,
            mailbox_key,
            x25519,
            cursor: AtomicU64::new(0),
        })
    }

    /// Parses a scanned QR payload (the linked device's side); see [`OfferPayload::parse`].
    pub fn parse(payload: &str) -> Result<OfferPayload, PayloadError> {
        OfferPayload::parse(payload)
    }

    /// The text to show as a QR code.
    pub fn qr_payload(&self) -> String {
        self.payload.encode()
    }

    /// The public part of the offer.
    pub fn payload(&self) -> &OfferPayload {
        &self.payload
    }

    /// The one-time mailbox's key (the mailbox is an ordinary account).
    pub fn mailbox_key(&self) -> &SigningKey {
        &self.mailbox_key
    }

    /// Reads one mailbox message as a hello (no network): the handshake it starts, whose
    /// code to show. Anything but a hello is [`LinkError::Malformed`].
    pub fn open_hello(&self, message: &[u8]) -> Result<PendingLink, LinkError> {
        let message = LinkMessage::parse(message)?;
        if message.kind != MessageKind::Hello {
            return Err(LinkError::Malformed);
        }
        let handshake = Handshake::accept(&self.x25519, &self.payload, &message.eph_pub)?;
        Ok(PendingLink {
            offer: self.payload.clone(),
            x25519: self.x25519.clone(),
            mailbox_key: self.mailbox_key.clone(),
            handshake,
            cursor: AtomicU64::new(0),
            hashes: Mutex::new(Vec::new()),
            root: Mutex::new(None),
        })
    }

    /// Long-polls the one-time mailbox until a linked device's hello arrives, or `timeout`
    /// passes (the mailbox is read at least once). Everything else is skipped. `client`
    /// must be connected to this offer's relay.
    pub async fn wait_for_hello(
        &self,
        client: &RelayClient,
        timeout: Duration,
    ) -> Result<PendingLink, LinkError> {
        let mut seen = Vec::new();
        let (seq, pending) = scan(client, &self.mailbox_key, &self.cursor, timeout, |m| {
            seen.push(m.hash.clone());
            match self.open_hello(&m.data) {
                Ok(pending) => Some(pending),
                Err(e) => {
                    tracing::debug!(error = %e, "skipping a one-time mailbox message that is no hello");
                    None
                }
            }
        })
        .await?;
        pending.cursor.store(seq, Ordering::Release);
        *pending.lock_hashes() = seen;
        Ok(pending)
    }
}

/// A hello received: the code to show, and the handshake whose root alone is adopted.
pub struct PendingLink {
    offer: OfferPayload,
    x25519: StaticSecret,
    mailbox_key: SigningKey,
    handshake: Handshake,
    /// Highest seq examined for an answer.
    cursor: AtomicU64,
    /// Hashes of the one-time mailbox messages read so far, deleted at the end.
    hashes: Mutex<Vec<Vec<u8>>>,
    /// The account, once its root arrived (kept, so a failed adoption can be retried).
    root: Mutex<Option<Identity>>,
}

impl fmt::Debug for PendingLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingLink")
            .field("sas", &self.handshake.sas())
            .finish_non_exhaustive()
    }
}

impl PendingLink {
    /// The code to show; the linked device shows the same for this hello.
    pub fn sas(&self) -> &str {
        self.handshake.sas()
    }

    /// The handshake the hello started.
    pub fn handshake(&self) -> &Handshake {
        &self.handshake
    }

    /// The relay the offer named (where this device waits).
    pub fn relay_addr(&self) -> &str {
        &self.offer.relay_addr
    }

    /// Reads one mailbox message as an answer to this hello (no network). `Ok(None)`:
    /// nothing for this link (a hello, a decline of another handshake, or bytes that do
    /// not authenticate). An authentic root sealed under another handshake is
    /// [`LinkError::Mismatch`]: it is never adopted.
    pub fn read_answer(&self, message: &[u8]) -> Result<Option<Answer>, LinkError> {
        let Ok(message) = LinkMessage::parse(message) else {
            return Ok(None);
        };
        if message.eph_pub == *self.handshake.eph_pub() {
            return self.handshake.open(&message);
        }
        if message.kind != MessageKind::Root {
            return Ok(None);
        }
        let Ok(other) = Handshake::accept(&self.x25519, &self.offer, &message.eph_pub) else {
            return Ok(None);
        };
        match other.open(&message) {
            Ok(Some(_)) | Err(LinkError::Root(_)) => Err(LinkError::Mismatch),
            _ => Ok(None),
        }
    }

    /// The user saw equal codes: waits up to `timeout` (the mailbox is read at least once)
    /// for the linked device's answer to this hello and returns the account it sealed.
    /// [`LinkError::Declined`] and [`LinkError::Mismatch`] end the attempt (the one-time
    /// mailbox is cleaned); [`LinkError::Timeout`] does not, call again to keep waiting.
    /// Once the root arrived, later calls return it without the network. Call
    /// [`PendingLink::finish`] once the account is adopted.
    pub async fn wait_for_root(
        &self,
        client: &RelayClient,
        timeout: Duration,
    ) -> Result<Identity, LinkError> {
        if let Some(identity) = self.lock_root().clone() {
            return Ok(identity);
        }
        let (_, answer) = scan(client, &self.mailbox_key, &self.cursor, timeout, |m| {
            self.lock_hashes().push(m.hash.clone());
            self.read_answer(&m.data).transpose()
        })
        .await?;
        match answer {
            Ok(Answer::Root(identity)) => {
                *self.lock_root() = Some((*identity).clone());
                Ok(*identity)
            }
            Ok(Answer::Declined) => {
                self.finish(client).await;
                Err(LinkError::Declined)
            }
            Err(e) => {
                self.finish(client).await;
                Err(e)
            }
        }
    }

    /// Deletes what the one-time mailbox received. A failed deletion is only logged: the
    /// messages expire after [`super::LINK_TTL_MS`] anyway, and the account must not be
    /// lost over it.
    pub async fn finish(&self, client: &RelayClient) {
        let hashes = std::mem::take(&mut *self.lock_hashes());
        if hashes.is_empty() {
            return;
        }
        if let Err(e) = client.delete(&self.mailbox_key, LINK_NAMESPACE, &hashes).await {
            tracing::warn!(error = %e, "could not delete the one-time link mailbox; it expires by itself");
        }
    }

    /// The codes differed: forget this hello (and any root) and clean the one-time mailbox.
    pub async fn reject(self, client: &RelayClient) {
        self.finish(client).await;
    }

    fn lock_hashes(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        self.hashes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_root(&self) -> std::sync::MutexGuard<'_, Option<Identity>> {
        self.root.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Reads the one-time mailbox from `cursor` on, message by message, until `visit` returns
/// an outcome or `timeout` passes; moves `cursor` up to the message that gave the outcome
/// and returns its seq with it. The mailbox is read at least once, even with no timeout.
async fn scan<T>(
    client: &RelayClient,
    mailbox_key: &SigningKey,
    cursor: &AtomicU64,
    timeout: Duration,
    mut visit: impl FnMut(&tidings_proto::v1::StoredMessage) -> Option<T>,
) -> Result<(u64, T), LinkError> {
    let end = Instant::now() + timeout;
    loop {
        let remaining = end.saturating_duration_since(Instant::now());
        let wait_ms = u32::try_from(remaining.min(MAX_POLL).as_millis()).unwrap_or(u32::MAX);
        let after = cursor.load(Ordering::Acquire);
        let resp = client
            .retrieve(mailbox_key, LINK_NAMESPACE, after, PAGE, wait_ms)
            .await?;
        let more = resp.more;
        for m in &resp.messages {
            cursor.fetch_max(m.seq, Ordering::AcqRel);
            if let Some(outcome) = visit(m) {
                return Ok((m.seq, outcome));
            }
        }
        if remaining.is_zero() && !more {
            return Err(LinkError::Timeout(timeout));
        }
    }
}
