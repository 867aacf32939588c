//! Field validation of Mailbox requests, in a fixed order per request, each failure a
//! status that names the field and the rule.
//!
//! | request | order |
//! | --- | --- |
//! | Store | account, namespace, data (size), ttl_ms, then for owner-only namespaces: signature present, signature length, ts window, signature |
//! | Retrieve | account, namespace, limit, wait_ms, signature length, ts window, signature |
//! | Delete | account, namespace, hashes (count, then each length), signature length, ts window, signature |
//!
//! Cheap shape checks come first and the Ed25519 verification last, so garbage costs
//! the relay almost nothing. Nothing here touches storage.

use tidings_proto::{
    HASH_LEN, namespace, sign,
    v1::{DeleteRequest, RetrieveRequest, StoreRequest},
};
use tonic::Status;

use crate::{auth, config::Limits};

/// A Store that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidStore {
    /// The mailbox owner.
    pub account: [u8; 32],
    /// 0..=32767.
    pub namespace: u32,
    /// At most `max_message_bytes`.
    pub data: Vec<u8>,
    /// The effective TTL (the default when the request said 0).
    pub ttl_ms: i64,
}

/// A Retrieve that passed validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidRetrieve {
    /// The mailbox owner.
    pub account: [u8; 32],
    /// 0..=32767.
    pub namespace: u32,
    /// Cursor: return messages with a greater seq.
    pub after_seq: u64,
    /// The effective page size (the default when the request said 0).
    pub limit: u32,
    /// Long-poll duration; 0 answers at once.
    pub wait_ms: u32,
}

/// A Delete that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidDelete {
    /// The mailbox owner.
    pub account: [u8; 32],
    /// 0..=32767.
    pub namespace: u32,
    /// Distinct hashes, sorted.
    pub hashes: Vec<[u8; HASH_LEN]>,
}

/// Validates a Store; `now_s` is the relay's clock for the `ts` window.
pub fn store(req: StoreRequest, limits: &Limits, now_s: i64) -> Result<ValidStore, Status> {
    let account = auth::parse_account(&req.account)?;
    let ns = parse_namespace(req.namespace)?;
    if req.data.len() > limits.max_message_bytes as usize {
        return Err(Status::resource_exhausted(format!(
            "data: must be at most {} bytes (got {})",
            limits.max_message_bytes,
            req.data.len()
        )));
    }
    let ttl_ms = effective_ttl(req.ttl_ms, limits)?;
    if namespace::is_owner_only(req.namespace) {
        if req.signature.is_empty() {
            return Err(Status::permission_denied(format!(
                "namespace: {} is owner-only (10..=32767): Store needs ts and the owner's signature",
                req.namespace
            )));
        }
        auth::authenticate(
            &account,
            req.ts,
            &req.signature,
            now_s,
            limits.clock_window_s,
            || sign::store_bytes(&account, ns, req.ts, req.ttl_ms, &req.data),
        )?;
    }
    Ok(ValidStore {
        account,
        namespace: ns,
        data: req.data,
        ttl_ms,
    })
}

/// Validates a Retrieve.
pub fn retrieve(req: &RetrieveRequest, limits: &Limits, now_s: i64) -> Result<ValidRetrieve, Status> {
    let account = auth::parse_account(&req.account)?;
    let ns = parse_namespace(req.namespace)?;
    if req.limit > limits.max_limit {
        return Err(Status::invalid_argument(format!(
            "limit: must be at most {} (got {}), or 0 for the default",
            limits.max_limit, req.limit
        )));
    }
    if req.wait_ms > limits.max_wait_ms {
        return Err(Status::invalid_argument(format!(
            "wait_ms: must be at most {} (got {})",
            limits.max_wait_ms, req.wait_ms
        )));
    }
    auth::authenticate(
        &account,
        req.ts,
        &req.signature,
        now_s,
        limits.clock_window_s,
        || sign::retrieve_bytes(&account, ns, req.ts),
    )?;
    let limit = if req.limit == 0 {
        limits.default_limit
    } else {
        req.limit
    };
    Ok(ValidRetrieve {
        account,
        namespace: ns,
        after_seq: req.after_seq,
        limit,
        wait_ms: req.wait_ms,
    })
}

/// Validates a Delete.
pub fn delete(req: &DeleteRequest, limits: &Limits, now_s: i64) -> Result<ValidDelete, Status> {
    let account = auth::parse_account(&req.account)?;
    let ns = parse_namespace(req.namespace)?;
    if req.hashes.is_empty() {
        return Err(Status::invalid_argument("hashes: must list at least one hash"));
    }
    if req.hashes.len() > limits.max_delete_hashes as usize {
        return Err(Status::invalid_argument(format!(
            "hashes: must list at most {} hashes (got {})",
            limits.max_delete_hashes,
            req.hashes.len()
        )));
    }
    let mut hashes = req
        .hashes
        .iter()
        .enumerate()
        .map(|(i, h)| {
            <[u8; HASH_LEN]>::try_from(h.as_slice()).map_err(|_| {
                Status::invalid_argument(format!("hashes[{i}]: must be {HASH_LEN} bytes (got {})", h.len()))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    auth::authenticate(
        &account,
        req.ts,
        &req.signature,
        now_s,
        limits.clock_window_s,
        || sign::delete_bytes(&account, ns, req.ts, &req.hashes),
    )?;
    hashes.sort_unstable();
    hashes.dedup();
    Ok(ValidDelete {
        account,
        namespace: ns,
        hashes,
    })
}

fn parse_namespace(ns: i32) -> Result<u32, Status> {
    if namespace::is_valid(ns) {
        // is_valid means 0..=32767, so the conversion is exact.
        Ok(ns.unsigned_abs())
    } else {
        Err(Status::invalid_argument(format!(
            "namespace: must be in 0..={} (got {ns})",
            namespace::MAX
        )))
    }
}

fn effective_ttl(ttl_ms: i64, limits: &Limits) -> Result<i64, Status> {
    if ttl_ms == 0 {
        Ok(limits.default_ttl_ms)
    } else if (limits.min_ttl_ms..=limits.max_ttl_ms).contains(&ttl_ms) {
        Ok(ttl_ms)
    } else {
        Err(Status::invalid_argument(format!(
            "ttl_ms: must be between {} and {} ms, or 0 for the default (got {ttl_ms})",
            limits.min_ttl_ms, limits.max_ttl_ms
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::testing::{Row, SIG_MISMATCH, check_table};
    use ed25519_dalek::SigningKey;
    use proptest::prelude::*;
    use tonic::Code;

    const NOW: i64 = 1_700_000_000;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[3u8; 32])
    }

    fn account() -> [u8; 32] {
        key().verifying_key().to_bytes()
    }

    fn limits() -> Limits {
        Limits::default()
    }

    fn signed_store(ns: i32, data: &[u8], ttl_ms: i64, ts: i64) -> StoreRequest {
        let sig = sign::sign(
            &key(),
            &sign::store_bytes(&account(), ns as u32, ts, ttl_ms, data),
        );
        StoreRequest {
            account: account().to_vec(),
            namespace: ns,
            data: data.to_vec(),
            ttl_ms,
            ts,
            signature: sig.to_vec(),
        }
    }

    fn signed_retrieve(ns: i32, ts: i64) -> RetrieveRequest {
        let sig = sign::sign(&key(), &sign::retrieve_bytes(&account(), ns as u32, ts));
        RetrieveRequest {
            account: account().to_vec(),
            namespace: ns,
            ts,
            signature: sig.to_vec(),
            ..Default::default()
        }
    }

    fn signed_delete(hashes: Vec<Vec<u8>>, ts: i64) -> DeleteRequest {
        let sig = sign::sign(&key(), &sign::delete_bytes(&account(), 0, ts, &hashes));
        DeleteRequest {
            account: account().to_vec(),
            namespace: 0,
            hashes,
            ts,
            signature: sig.to_vec(),
        }
    }

    /// Someone else's key, for signatures that are valid but not the account's.
    fn mallory() -> SigningKey {
        SigningKey::from_bytes(&[4u8; 32])
    }

    #[test]
    fn accepted_requests_carry_their_defaults() {
        let public = StoreRequest {
            account: account().to_vec(),
            namespace: 0,
            data: b"hi".to_vec(),
            ..Default::default()
        };
        let v = store(public, &limits(), NOW).unwrap();
        assert_eq!(
            (v.ttl_ms, v.data.as_slice()),
            (limits().default_ttl_ms, &b"hi"[..])
        );
        let v = retrieve(&signed_retrieve(5, NOW), &limits(), NOW).unwrap();
        assert_eq!(v.limit, limits().default_limit);
        let h = |b: u8| vec![b; 32];
        let v = delete(&signed_delete(vec![h(2), h(1), h(2)], NOW), &limits(), NOW).unwrap();
        assert_eq!(v.hashes, vec![[1u8; 32], [2u8; 32]], "sorted, without duplicates");
    }

    /// Every Store rule, from a valid owner-only Store (namespace 10, signed now);
    /// `check_table` adds the rows every signed request shares.
    #[test]
    fn store_rules() {
        let rows: &[Row<StoreRequest>] = &[
            ("valid owner-only store", |_| {}, Code::Ok, ""),
            (
                "public namespace, no signature",
                |r| {
                    r.namespace = 0;
                    r.ts = 0;
                    r.signature.clear();
                },
                Code::Ok,
                "",
            ),
            (
                "data at the maximum",
                |r| *r = signed_store(10, &[7; 65_536], 0, NOW),
                Code::Ok,
                "",
            ),
            (
                "ttl at the minimum",
                |r| *r = signed_store(10, b"cfg", 10_000, NOW),
                Code::Ok,
                "",
            ),
            (
                "ttl at the maximum",
                |r| *r = signed_store(10, b"cfg", 2_592_000_000, NOW),
                Code::Ok,
                "",
            ),
            (
                "ts at the window's edge",
                |r| *r = signed_store(10, b"cfg", 0, NOW - 300),
                Code::Ok,
                "",
            ),
            (
                "namespace above the range",
                |r| r.namespace = 40_000,
                Code::InvalidArgument,
                "namespace: must be in 0..=32767 (got 40000)",
            ),
            (
                "namespace negative",
                |r| r.namespace = -1,
                Code::InvalidArgument,
                "namespace: must be in 0..=32767 (got -1)",
            ),
            (
                "data over the maximum",
                |r| r.data = vec![0; 65_537],
                Code::ResourceExhausted,
                "data: must be at most 65536 bytes (got 65537)",
            ),
            (
                "ttl below the minimum",
                |r| r.ttl_ms = 9_999,
                Code::InvalidArgument,
                "ttl_ms: must be between 10000 and 2592000000 ms, or 0 for the default (got 9999)",
            ),
            (
                "ttl negative",
                |r| r.ttl_ms = -5,
                Code::InvalidArgument,
                "ttl_ms: must be between 10000 and 2592000000 ms, or 0 for the default (got -5)",
            ),
            (
                "ttl above the maximum",
                |r| r.ttl_ms = 2_592_000_001,
                Code::InvalidArgument,
                "ttl_ms: must be between 10000 and 2592000000 ms, or 0 for the default (got 2592000001)",
            ),
            (
                "owner-only without a signature",
                |r| r.signature.clear(),
                Code::PermissionDenied,
                "namespace: 10 is owner-only (10..=32767): Store needs ts and the owner's signature",
            ),
            (
                "the last owner-only namespace without a signature",
                |r| {
                    r.namespace = 32_767;
                    r.signature.clear();
                },
                Code::PermissionDenied,
                "namespace: 32767 is owner-only",
            ),
            (
                "ts behind the window",
                |r| *r = signed_store(10, b"cfg", 0, NOW - 301),
                Code::Unauthenticated,
                "ts: 301 s behind the relay's clock, the window is ±300 s",
            ),
            (
                "ts ahead of the window",
                |r| *r = signed_store(10, b"cfg", 0, NOW + 301),
                Code::Unauthenticated,
                "ts: 301 s ahead of the relay's clock, the window is ±300 s",
            ),
            (
                "signed by someone else",
                |r| {
                    r.signature =
                        sign::sign(&mallory(), &sign::store_bytes(&account(), 10, NOW, 0, b"cfg")).to_vec()
                },
                Code::Unauthenticated,
                SIG_MISMATCH,
            ),
            (
                "signature over other data",
                |r| r.data = b"other".to_vec(),
                Code::Unauthenticated,
                SIG_MISMATCH,
            ),
            (
                "signature over another ttl",
                |r| r.ttl_ms = 20_000,
                Code::Unauthenticated,
                SIG_MISMATCH,
            ),
            (
                "signature over another namespace",
                |r| r.namespace = 11,
                Code::Unauthenticated,
                SIG_MISMATCH,
            ),
        ];
        check_table(
            rows,
            || signed_store(10, b"cfg", 0, NOW),
            |r| store(r, &limits(), NOW),
        );
    }

    /// Every Retrieve rule, from a valid Retrieve of namespace 5 signed now;
    /// `check_table` adds the rows every signed request shares.
    #[test]
    fn retrieve_rules() {
        let rows: &[Row<RetrieveRequest>] = &[
            ("valid retrieve", |_| {}, Code::Ok, ""),
            ("limit at the maximum", |r| r.limit = 1000, Code::Ok, ""),
            ("wait_ms at the maximum", |r| r.wait_ms = 60_000, Code::Ok, ""),
            (
                "ts at the window's edge",
                |r| *r = signed_retrieve(5, NOW + 300),
                Code::Ok,
                "",
            ),
            (
                "namespace above the range",
                |r| r.namespace = 32_768,
                Code::InvalidArgument,
                "namespace: must be in 0..=32767 (got 32768)",
            ),
            (
                "namespace negative",
                |r| r.namespace = -1,
                Code::InvalidArgument,
                "namespace: must be in 0..=32767 (got -1)",
            ),
            (
                "limit over the maximum",
                |r| r.limit = 1001,
                Code::InvalidArgument,
                "limit: must be at most 1000 (got 1001), or 0 for the default",
            ),
            (
                "wait_ms over the maximum",
                |r| r.wait_ms = 60_001,
                Code::InvalidArgument,
                "wait_ms: must be at most 60000 (got 60001)",
            ),
            (
                "shape before signature",
                |r| {
                    r.wait_ms = 60_001;
                    r.signature.clear();
                },
                Code::InvalidArgument,
                "wait_ms: must be at most 60000 (got 60001)",
            ),
            (
                "ts behind the window",
                |r| *r = signed_retrieve(5, NOW - 301),
                Code::Unauthenticated,
                "ts: 301 s behind the relay's clock, the window is ±300 s",
            ),
            (
                "ts ahead of the window",
                |r| *r = signed_retrieve(5, NOW + 301),
                Code::Unauthenticated,
                "ts: 301 s ahead of the relay's clock, the window is ±300 s",
            ),
            (
                "signed by someone else",
                |r| r.signature = sign::sign(&mallory(), &sign::retrieve_bytes(&account(), 5, NOW)).to_vec(),
                Code::Unauthenticated,
                SIG_MISMATCH,
            ),
            (
                "signature for another namespace",
                |r| r.namespace = 6,
                Code::Unauthenticated,
                SIG_MISMATCH,
            ),
        ];
        check_table(rows, || signed_retrieve(5, NOW), |r| retrieve(&r, &limits(), NOW));
    }

    /// Every Delete rule, from a valid Delete of two hashes in namespace 0 signed now;
    /// `check_table` adds the rows every signed request shares.
    #[test]
    fn delete_rules() {
        let rows: &[Row<DeleteRequest>] = &[
            ("valid delete", |_| {}, Code::Ok, ""),
            (
                "repeated hashes",
                |r| *r = signed_delete(vec![vec![2; 32], vec![1; 32], vec![2; 32]], NOW),
                Code::Ok,
                "",
            ),
            (
                "the most hashes",
                |r| *r = signed_delete(vec![vec![0; 32]; 1000], NOW),
                Code::Ok,
                "",
            ),
            (
                "namespace out of range",
                |r| r.namespace = 40_000,
                Code::InvalidArgument,
                "namespace: must be in 0..=32767 (got 40000)",
            ),
            (
                "no hashes",
                |r| r.hashes.clear(),
                Code::InvalidArgument,
                "hashes: must list at least one hash",
            ),
            (
                "too many hashes",
                |r| r.hashes = vec![vec![0; 32]; 1001],
                Code::InvalidArgument,
                "hashes: must list at most 1000 hashes (got 1001)",
            ),
            (
                "a short hash, named by index",
                |r| r.hashes.push(vec![4; 5]),
                Code::InvalidArgument,
                "hashes[2]: must be 32 bytes (got 5)",
            ),
            (
                "a long hash",
                |r| r.hashes[0].push(0),
                Code::InvalidArgument,
                "hashes[0]: must be 32 bytes (got 33)",
            ),
            (
                "ts behind the window",
                |r| *r = signed_delete(vec![vec![1; 32]], NOW - 301),
                Code::Unauthenticated,
                "ts: 301 s behind the relay's clock, the window is ±300 s",
            ),
            (
                "ts ahead of the window",
                |r| *r = signed_delete(vec![vec![1; 32]], NOW + 301),
                Code::Unauthenticated,
                "ts: 301 s ahead of the relay's clock, the window is ±300 s",
            ),
            (
                "signed by someone else",
                |r| {
                    r.signature =
                        sign::sign(&mallory(), &sign::delete_bytes(&account(), 0, NOW, &r.hashes)).to_vec()
                },
                Code::Unauthenticated,
                SIG_MISMATCH,
            ),
            (
                "signature over other hashes",
                |r| r.hashes[1] = vec![9; 32],
                Code::Unauthenticated,
                SIG_MISMATCH,
            ),
            (
                "signature for another namespace",
                |r| r.namespace = 1,
                Code::Unauthenticated,
                SIG_MISMATCH,
            ),
        ];
        check_table(
            rows,
            || signed_delete(vec![vec![1; 32], vec![2; 32]], NOW),
            |r| delete(&r, &limits(), NOW),
        );
    }

    proptest! {
        #[test]
        fn arbitrary_requests_never_panic(
            acc in proptest::collection::vec(any::<u8>(), 0..40),
            ns in any::<i32>(),
            ttl in any::<i64>(),
            ts in any::<i64>(),
            sig in proptest::collection::vec(any::<u8>(), 0..80),
            limit in any::<u32>(),
            wait in any::<u32>(),
        ) {
            let s = StoreRequest { account: acc.clone(), namespace: ns, data: vec![1], ttl_ms: ttl, ts, signature: sig.clone() };
            let _ = store(s, &limits(), NOW);
            let r = RetrieveRequest { account: acc.clone(), namespace: ns, after_seq: 0, limit, wait_ms: wait, ts, signature: sig.clone() };
            let _ = retrieve(&r, &limits(), NOW);
            let d = DeleteRequest { account: acc, namespace: ns, hashes: vec![vec![0; 32]], ts, signature: sig };
            let _ = delete(&d, &limits(), NOW);
        }
    }
}
