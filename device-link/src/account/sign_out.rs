//! Signing out so that pushes really stop.
//!
//! Before the identity is deleted, an Unsubscribe for this install's registration is
//! signed and queued durably in the device state. It carries its own signature, so it can
//! be sent later without the identity — when the relay is reachable again, possibly days
//! later (the relay accepts an Unsubscribe signed up to a registration's lifetime ago, and
//! never lets it remove a registration made after it was signed: DESIGN.md
//! "Unsubscribe"). [`flush_unsubscribes`] sends the queue until the relay has taken every
//! request. The device id and push key are rotated as well, so even a registration the
//! relay still held could neither reach this install's next account nor be read by it.

use prost::Message;
use tidings_proto::v1::UnsubscribeRequest;
use tonic::Code;

use crate::{
    client::{ClientError, RelayClient},
    state::{DeviceState, StateError},
};

/// The blob holding queued Unsubscribe requests: (be32 len ‖ encoded request)*.
const QUEUE_BLOB: &str = "unsubscribe-queue";
/// Queued requests kept at most; older ones are dropped first (each is tiny, but a
/// device signed in and out in a loop while offline must not grow the state forever).
const MAX_QUEUED: usize = 64;

/// Queues `request` (already signed) to be sent by [`flush_unsubscribes`].
pub fn queue_unsubscribe(disk: &mut DeviceState, request: &UnsubscribeRequest) -> Result<(), StateError> {
    let mut queue = load(disk)?;
    queue.push(request.clone());
    let excess = queue.len().saturating_sub(MAX_QUEUED);
    queue.drain(..excess);
    save(disk, &queue)
}

/// How many Unsubscribe requests wait to be sent.
pub fn queued_unsubscribes(disk: &DeviceState) -> Result<usize, StateError> {
    Ok(load(disk)?.len())
}

/// What one flush did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Requests the relay took (whether or not a registration was still there).
    pub sent: usize,
    /// Requests the relay refused for good (too old, malformed): dropped.
    pub dropped: usize,
    /// Requests still queued: the relay could not be reached.
    pub left: usize,
}

/// Why a flush stopped early.
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    /// The queue could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
}

/// Sends the queued requests in order; each one the relay answered is removed from the
/// queue before the next is sent. Stops at the first the relay could not be reached for
/// (it is retried by the next flush). `disk` is locked only around state access.
pub async fn flush_unsubscribes(
    client: &RelayClient,
    disk: &std::sync::Mutex<DeviceState>,
) -> Result<FlushReport, FlushError> {
    let mut report = FlushReport::default();
    loop {
        let Some(next) = load(&lock(disk))?.into_iter().next() else {
            return Ok(report);
        };
        match client.send_unsubscribe(next.clone()).await {
            Ok(_) => report.sent += 1,
            Err(e) if is_final(&e) => {
                tracing::debug!(error = %e, "a queued Unsubscribe was refused; dropping it");
                report.dropped += 1;
            }
            Err(e) => {
                tracing::debug!(error = %e, "the relay is not reachable for a queued Unsubscribe");
                report.left = load(&lock(disk))?.len();
                return Ok(report);
            }
        }
        let mut guard = lock(disk);
        let mut queue = load(&guard)?;
        // Remove exactly the request just answered (another flush may have raced us).
        if let Some(at) = queue.iter().position(|r| *r == next) {
            queue.remove(at);
            save(&mut guard, &queue)?;
        }
    }
}

/// A refusal that sending again cannot change.
fn is_final(e: &ClientError) -> bool {
    matches!(
        e.code(),
        Some(Code::InvalidArgument | Code::Unauthenticated | Code::PermissionDenied | Code::NotFound)
    )
}

fn lock(disk: &std::sync::Mutex<DeviceState>) -> std::sync::MutexGuard<'_, DeviceState> {
    // A panic while it was held left the state as its last completed write did.
    disk.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn load(disk: &DeviceState) -> Result<Vec<UnsubscribeRequest>, StateError> {
    let Some(bytes) = disk.get_blob(QUEUE_BLOB)? else {
        return Ok(Vec::new());
    };
    decode(&bytes).ok_or_else(|| StateError::Corrupt(QUEUE_BLOB.into()))
}

fn save(disk: &mut DeviceState, queue: &[UnsubscribeRequest]) -> Result<(), StateError> {
    if queue.is_empty() {
        return disk.delete_blob(QUEUE_BLOB);
    }
    disk.put_blob(QUEUE_BLOB, &encode(queue))
}

fn encode(queue: &[UnsubscribeRequest]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in queue {
        let bytes = r.encode_to_vec();
        // A request is about 150 bytes.
        out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(&bytes);
    }
    out
}

fn decode(mut bytes: &[u8]) -> Option<Vec<UnsubscribeRequest>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (len, rest) = bytes.split_at_checked(4)?;
        let len = usize::try_from(u32::from_be_bytes(len.try_into().ok()?)).ok()?;
        let (body, rest) = rest.split_at_checked(len)?;
        out.push(UnsubscribeRequest::decode(body).ok()?);
        bytes = rest;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(n: u8) -> UnsubscribeRequest {
        UnsubscribeRequest {
            account: vec![n; 32],
            device_id: vec![n; 16],
            ts: i64::from(n),
            signature: vec![n; 64],
        }
    }

    #[test]
    fn the_queue_survives_reopening_and_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut disk = DeviceState::open(dir.path(), &[3; 32]).unwrap();
        queue_unsubscribe(&mut disk, &request(1)).unwrap();
        queue_unsubscribe(&mut disk, &request(2)).unwrap();
        let disk = DeviceState::open(dir.path(), &[3; 32]).unwrap();
        assert_eq!(load(&disk).unwrap(), vec![request(1), request(2)]);
        let mut disk = disk;
        for n in 0..(MAX_QUEUED as u8 + 5) {
            queue_unsubscribe(&mut disk, &request(n)).unwrap();
        }
        let queue = load(&disk).unwrap();
        assert_eq!(queue.len(), MAX_QUEUED);
        assert_eq!(queue.last(), Some(&request(MAX_QUEUED as u8 + 4)));
    }

    #[test]
    fn a_damaged_queue_is_reported() {
        assert_eq!(decode(&[0, 0, 0, 9, 1]), None);
        assert_eq!(decode(&[]), Some(Vec::new()));
    }
}
