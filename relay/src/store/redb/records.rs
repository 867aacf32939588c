//! Binary values of the redb tables.
//!
//! Hand-rolled fixed layouts (big-endian integers, variable part last) rather than a
//! serialisation crate: they are tiny, stable, and a decode failure is reported as
//! [`StoreError::Corrupt`] instead of a panic.

use crate::store::{AccountIndex, DeviceId, Hash, StoreError, Subscription};

/// Reads fixed-size fields off the front of a stored value.
pub struct Reader<'a> {
    rest: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Reader { rest: bytes, what }
    }

    fn short(&self) -> StoreError {
        StoreError::corrupt(format!("truncated {} record", self.what))
    }

    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        let (head, rest) = self.rest.split_first_chunk::<N>().ok_or_else(|| self.short())?;
        self.rest = rest;
        Ok(*head)
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.rest.len() < n {
            return Err(self.short());
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    pub fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.array::<1>()?[0])
    }

    pub fn u32(&mut self) -> Result<u32, StoreError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64, StoreError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub fn i64(&mut self) -> Result<i64, StoreError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    pub fn finish(self) -> Result<(), StoreError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(StoreError::corrupt(format!(
                "trailing bytes in {} record",
                self.what
            )))
        }
    }
}

/// Header of a stored message; the data follows it in the same value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsgHead {
    pub hash: Hash,
    pub created_ms: i64,
    pub expires_ms: i64,
}

const MSG_HEAD_LEN: usize = 32 + 8 + 8;

/// Encodes a message value: `hash ‖ be64(created) ‖ be64(expires) ‖ data`.
pub fn encode_msg(head: &MsgHead, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MSG_HEAD_LEN + data.len());
    out.extend_from_slice(&head.hash);
    out.extend_from_slice(&head.created_ms.to_be_bytes());
    out.extend_from_slice(&head.expires_ms.to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// Decodes a message value into its header and data.
pub fn decode_msg(v: &[u8]) -> Result<(MsgHead, &[u8]), StoreError> {
    let mut r = Reader::new(v, "message");
    let head = MsgHead {
        hash: r.array()?,
        created_ms: r.i64()?,
        expires_ms: r.i64()?,
    };
    Ok((head, r.rest))
}

/// Encodes a subscription value (the key holds account index and device id):
/// `be64(expires) ‖ want_data ‖ be32(n) ‖ n × be32(namespace) ‖ sealed`.
pub fn encode_sub(sub: &Subscription) -> Vec<u8> {
    let mut out = Vec::with_capacity(13 + 4 * sub.namespaces.len() + sub.sealed.len());
    out.extend_from_slice(&sub.expires_ms.to_be_bytes());
    out.push(u8::from(sub.want_data));
    // The caller validated the namespace list; u32 covers any list that fits in memory here.
    out.extend_from_slice(&(sub.namespaces.len() as u32).to_be_bytes());
    for ns in &sub.namespaces {
        out.extend_from_slice(&ns.to_be_bytes());
    }
    out.extend_from_slice(&sub.sealed);
    out
}

/// Decodes a subscription value.
pub fn decode_sub(
    account_index: AccountIndex,
    device_id: DeviceId,
    v: &[u8],
) -> Result<Subscription, StoreError> {
    let mut r = Reader::new(v, "subscription");
    let expires_ms = r.i64()?;
    let want_data = r.u8()? != 0;
    let n = r.u32()? as usize;
    let ns_bytes = r.bytes(n.checked_mul(4).ok_or_else(|| r.short())?)?;
    let namespaces = ns_bytes
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(Subscription {
        account_index,
        device_id,
        namespaces,
        want_data,
        sealed: r.rest.to_vec(),
        expires_ms,
    })
}

/// Reads only the expiry of a subscription value (the fan-out and sweep need no more).
pub fn sub_expires(v: &[u8]) -> Result<i64, StoreError> {
    Reader::new(v, "subscription").i64()
}

/// Whether a subscription value lists `namespace`, without decoding the sealed part.
pub fn sub_has_namespace(v: &[u8], namespace: u32) -> Result<bool, StoreError> {
    let mut r = Reader::new(v, "subscription");
    r.bytes(9)?;
    let n = r.u32()? as usize;
    let ns_bytes = r.bytes(n.checked_mul(4).ok_or_else(|| r.short())?)?;
    Ok(ns_bytes
        .chunks_exact(4)
        .any(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) == namespace))
}

/// A stored push job: which subscription, the sealed reference to its message (see
/// `store::linkage`), and its scheduling state. Nothing in it names the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    pub id: u64,
    pub account_index: AccountIndex,
    pub device_id: DeviceId,
    /// The message it delivers, sealed under the at-rest key.
    pub sealed: Vec<u8>,
    /// Delivery attempts made so far.
    pub attempts: u32,
    pub enqueued_ms: i64,
    /// Not to be tried before this time (set by a Retry).
    pub not_before_ms: i64,
    /// A durable lease's end; `i64::MIN` when not leased. Leases live in memory now
    /// (see `super::leases`), so this stays `i64::MIN`; files written before keep
    /// theirs, which then hides the job until it ends, as it did.
    pub lease_until_ms: i64,
    /// The node of that durable lease (empty when none).
    pub lease_owner: String,
}

impl JobRecord {
    /// When the job may next be claimed: its key in the due index.
    pub fn visible_at(&self) -> i64 {
        self.not_before_ms.max(self.lease_until_ms)
    }
}

/// Longest lease owner name kept; longer names are cut.
const MAX_OWNER_LEN: usize = 255;

/// Encodes a job value (the key is the job id): `account_index ‖ device_id ‖
/// be32(len) ‖ sealed ‖ be32(attempts) ‖ be64(enqueued) ‖ be64(not_before) ‖
/// be64(lease_until) ‖ u8(len) ‖ lease owner`.
pub fn encode_job(rec: &JobRecord) -> Vec<u8> {
    let owner = truncate_utf8(&rec.lease_owner, MAX_OWNER_LEN);
    let mut out = Vec::with_capacity(89 + rec.sealed.len() + owner.len());
    out.extend_from_slice(rec.account_index.as_slice());
    out.extend_from_slice(&rec.device_id);
    // A sealed reference is about a hundred bytes.
    out.extend_from_slice(&(rec.sealed.len() as u32).to_be_bytes());
    out.extend_from_slice(&rec.sealed);
    out.extend_from_slice(&rec.attempts.to_be_bytes());
    out.extend_from_slice(&rec.enqueued_ms.to_be_bytes());
    out.extend_from_slice(&rec.not_before_ms.to_be_bytes());
    out.extend_from_slice(&rec.lease_until_ms.to_be_bytes());
    // truncate_utf8 bounds the length to 255.
    out.push(owner.len() as u8);
    out.extend_from_slice(owner.as_bytes());
    out
}

/// Decodes a job value.
pub fn decode_job(id: u64, v: &[u8]) -> Result<JobRecord, StoreError> {
    let mut r = Reader::new(v, "job");
    let account_index = AccountIndex(r.array()?);
    let device_id: DeviceId = r.array()?;
    let sealed_len = r.u32()? as usize;
    let sealed = r.bytes(sealed_len)?.to_vec();
    let attempts = r.u32()?;
    let enqueued_ms = r.i64()?;
    let not_before_ms = r.i64()?;
    let lease_until_ms = r.i64()?;
    let owner_len = usize::from(r.u8()?);
    let lease_owner = String::from_utf8_lossy(r.bytes(owner_len)?).into_owned();
    r.finish()?;
    Ok(JobRecord {
        id,
        account_index,
        device_id,
        sealed,
        attempts,
        enqueued_ms,
        not_before_ms,
        lease_until_ms,
        lease_owner,
    })
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
fn truncate_utf8(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Decodes a big-endian `u64` value (seq counter, hash index, pushed marker expiry).
pub fn decode_u64(v: &[u8], what: &'static str) -> Result<u64, StoreError> {
    let mut r = Reader::new(v, what);
    let n = r.u64()?;
    r.finish()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn msg_round_trips(hash: [u8; 32], created: i64, expires: i64, data: Vec<u8>) {
            let head = MsgHead { hash, created_ms: created, expires_ms: expires };
            let enc = encode_msg(&head, &data);
            let (h, d) = decode_msg(&enc).unwrap();
            prop_assert_eq!(h, head);
            prop_assert_eq!(d, &data[..]);
        }

        #[test]
        fn sub_round_trips(
            ai: [u8; 32], dev: [u8; 16], namespaces: Vec<u32>, want_data: bool,
            sealed: Vec<u8>, expires_ms: i64, probe: u32,
        ) {
            let sub = Subscription { account_index: crate::store::AccountIndex(ai), device_id: dev, namespaces, want_data, sealed, expires_ms };
            let enc = encode_sub(&sub);
            prop_assert_eq!(&decode_sub(crate::store::AccountIndex(ai), dev, &enc).unwrap(), &sub);
            prop_assert_eq!(sub_expires(&enc).unwrap(), expires_ms);
            prop_assert_eq!(sub_has_namespace(&enc, probe).unwrap(), sub.namespaces.contains(&probe));
        }

        #[test]
        fn job_round_trips(
            id: u64, ai: [u8; 32], dev: [u8; 16], sealed: Vec<u8>,
            times: (i64, i64, i64), attempts: u32, owner in "\\PC{0,300}",
        ) {
            let rec = JobRecord {
                id, account_index: crate::store::AccountIndex(ai), device_id: dev, sealed, attempts, enqueued_ms: times.0,
                not_before_ms: times.1, lease_until_ms: times.2, lease_owner: owner,
            };
            let back = decode_job(id, &encode_job(&rec)).unwrap();
            prop_assert_eq!(&back.sealed, &rec.sealed);
            prop_assert_eq!(
                (back.account_index, back.device_id, back.attempts, back.enqueued_ms),
                (rec.account_index, rec.device_id, rec.attempts, rec.enqueued_ms)
            );
            prop_assert_eq!(back.not_before_ms, rec.not_before_ms);
            prop_assert_eq!(back.lease_until_ms, rec.lease_until_ms);
            prop_assert!(rec.lease_owner.starts_with(&back.lease_owner));
            prop_assert!(back.lease_owner.len() <= MAX_OWNER_LEN);
        }

        #[test]
        fn decoders_never_panic(v: Vec<u8>) {
            let _ = decode_msg(&v);
            let _ = decode_sub(crate::store::AccountIndex([0; 32]), [0; 16], &v);
            let _ = sub_has_namespace(&v, 1);
            let _ = decode_job(1, &v);
            let _ = decode_u64(&v, "x");
        }
    }
}
