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

    fn fails(r: Result<impl std::fmt::Debug, Status>, code: Code, message: &str) {
        let e = r.unwrap_err();
        assert_eq!((e.code(), e.message()), (code, message));
    }

    #[test]
    fn public_store_needs_no_signature() {
        let req = StoreRequest {
            account: account().to_vec(),
            namespace: 0,
            data: b"hi".to_vec(),
            ..Default::default()
        };
        let v = store(req, &limits(), NOW).unwrap();
        assert_eq!(v.ttl_ms, limits().default_ttl_ms);
        assert_eq!(v.data, b"hi");
    }

    #[test]
    fn store_fields_fail_with_precise_statuses() {
        let base = || StoreRequest {
            account: account().to_vec(),
            namespace: 0,
            ..Default::default()
        };
        fails(
            store(
                StoreRequest {
                    account: vec![1; 31],
                    ..base()
                },
                &limits(),
                NOW,
            ),
            Code::InvalidArgument,
            "account: must be 32 bytes (got 31)",
        );
        fails(
            store(
                StoreRequest {
                    namespace: 40_000,
                    ..base()
                },
                &limits(),
                NOW,
            ),
            Code::InvalidArgument,
            "namespace: must be in 0..=32767 (got 40000)",
        );
        fails(
            store(
                StoreRequest {
                    namespace: -1,
                    ..base()
                },
                &limits(),
                NOW,
            ),
            Code::InvalidArgument,
            "namespace: must be in 0..=32767 (got -1)",
        );
        fails(
            store(
                StoreRequest {
                    data: vec![0; 65_537],
                    ..base()
                },
                &limits(),
                NOW,
            ),
            Code::ResourceExhausted,
            "data: must be at most 65536 bytes (got 65537)",
        );
        fails(
            store(
                StoreRequest {
                    ttl_ms: 9_999,
                    ..base()
                },
                &limits(),
                NOW,
            ),
            Code::InvalidArgument,
            "ttl_ms: must be between 10000 and 2592000000 ms, or 0 for the default (got 9999)",
        );
        assert_eq!(
            store(StoreRequest { ttl_ms: -5, ..base() }, &limits(), NOW)
                .unwrap_err()
                .code(),
            Code::InvalidArgument
        );
        assert!(
            store(
                StoreRequest {
                    ttl_ms: 2_592_000_000,
                    ..base()
                },
                &limits(),
                NOW
            )
            .is_ok()
        );
    }

    #[test]
    fn owner_only_store_needs_a_valid_signature() {
        assert!(store(signed_store(10, b"cfg", 0, NOW), &limits(), NOW).is_ok());
        let unsigned = StoreRequest {
            signature: vec![],
            ..signed_store(10, b"cfg", 0, NOW)
        };
        assert_eq!(
            store(unsigned, &limits(), NOW).unwrap_err().code(),
            Code::PermissionDenied
        );
        let stale = signed_store(10, b"cfg", 0, NOW - 400);
        fails(
            store(stale, &limits(), NOW),
            Code::Unauthenticated,
            "ts: 400 s behind the relay's clock, the window is ±300 s",
        );
        // The signature covers the data, the ttl and the namespace.
        let mut swapped = signed_store(10, b"cfg", 0, NOW);
        swapped.data = b"other".to_vec();
        fails(
            store(swapped, &limits(), NOW),
            Code::Unauthenticated,
            "signature: does not verify for this account",
        );
        let mut longer = signed_store(10, b"cfg", 0, NOW);
        longer.ttl_ms = 20_000;
        assert_eq!(
            store(longer, &limits(), NOW).unwrap_err().code(),
            Code::Unauthenticated
        );
        let mut short_sig = signed_store(10, b"cfg", 0, NOW);
        short_sig.signature.pop();
        fails(
            store(short_sig, &limits(), NOW),
            Code::InvalidArgument,
            "signature: must be 64 bytes (got 63)",
        );
    }

    #[test]
    fn retrieve_limits_are_checked_before_the_signature() {
        assert_eq!(
            retrieve(&signed_retrieve(5, NOW), &limits(), NOW).unwrap().limit,
            100
        );
        let big = RetrieveRequest {
            limit: 1001,
            ..signed_retrieve(5, NOW)
        };
        fails(
            retrieve(&big, &limits(), NOW),
            Code::InvalidArgument,
            "limit: must be at most 1000 (got 1001), or 0 for the default",
        );
        let long = RetrieveRequest {
            wait_ms: 60_001,
            signature: vec![],
            ..signed_retrieve(5, NOW)
        };
        fails(
            retrieve(&long, &limits(), NOW),
            Code::InvalidArgument,
            "wait_ms: must be at most 60000 (got 60001)",
        );
        let unsigned = RetrieveRequest {
            signature: vec![],
            ..signed_retrieve(5, NOW)
        };
        fails(
            retrieve(&unsigned, &limits(), NOW),
            Code::InvalidArgument,
            "signature: must be 64 bytes (got 0)",
        );
        let future = signed_retrieve(5, NOW + 301);
        assert_eq!(
            retrieve(&future, &limits(), NOW).unwrap_err().code(),
            Code::Unauthenticated
        );
        // A signature for another namespace does not open this one.
        let moved = RetrieveRequest {
            namespace: 6,
            ..signed_retrieve(5, NOW)
        };
        assert_eq!(
            retrieve(&moved, &limits(), NOW).unwrap_err().code(),
            Code::Unauthenticated
        );
    }

    #[test]
    fn delete_hashes_are_checked_one_by_one() {
        let h = |b: u8| vec![b; 32];
        let v = delete(&signed_delete(vec![h(2), h(1), h(2)], NOW), &limits(), NOW).unwrap();
        assert_eq!(v.hashes, vec![[1u8; 32], [2u8; 32]]);
        let bad = signed_delete(vec![h(1), h(2), h(3), vec![4; 5]], NOW);
        fails(
            delete(&bad, &limits(), NOW),
            Code::InvalidArgument,
            "hashes[3]: must be 32 bytes (got 5)",
        );
        fails(
            delete(&signed_delete(vec![], NOW), &limits(), NOW),
            Code::InvalidArgument,
            "hashes: must list at least one hash",
        );
        let many = signed_delete(vec![h(0); 1001], NOW);
        fails(
            delete(&many, &limits(), NOW),
            Code::InvalidArgument,
            "hashes: must list at most 1000 hashes (got 1001)",
        );
        let mut forged = signed_delete(vec![h(1)], NOW);
        forged.hashes = vec![h(9)];
        assert_eq!(
            delete(&forged, &limits(), NOW).unwrap_err().code(),
            Code::Unauthenticated
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
