//! Binary keys of the redb tables.
//!
//! Keys are concatenations of fixed-size big-endian fields, so redb's byte-wise order of
//! `&[u8]` keys is the order of the field tuples. Signed times are stored with the sign
//! bit flipped, which makes them sort like the `i64`s they are.
//!
//! Locality matters more than anything for write throughput: a commit costs about one
//! page write per distinct B-tree leaf it dirtied. So the entries one Store touches live
//! next to each other: a mailbox's seq counter, messages and hash index share the
//! `account ‖ namespace` prefix in one table (told apart by a tag byte), and an account's
//! subscriptions and per-subscription job index share the `account_index` prefix in
//! another. The expiry and due indexes start with a time, so new entries append.
//! Pushed markers are the exception: they are opaque keyed hashes (see
//! `store::linkage`), in a table of their own, since anything that placed them under an
//! account index would tell which subscriptions they belong to.

use crate::store::{Account, AccountIndex, DeviceId, Hash};

/// Encodes an `i64` so that byte order equals numeric order.
pub fn ord_i64(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

/// Inverse of [`ord_i64`].
pub fn from_ord_i64(b: [u8; 8]) -> i64 {
    (u64::from_be_bytes(b) ^ (1 << 63)) as i64
}

/// Builds a fixed-size key from parts whose lengths add up to `N`.
fn concat<const N: usize>(parts: &[&[u8]]) -> [u8; N] {
    let mut out = [0u8; N];
    let mut at = 0;
    for p in parts {
        out[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
    debug_assert_eq!(at, N, "key parts must fill the key exactly");
    out
}

/// Splits `N` bytes off the front of `b`.
fn take<const N: usize>(b: &mut &[u8]) -> Option<[u8; N]> {
    let (head, rest) = b.split_first_chunk::<N>()?;
    *b = rest;
    Some(*head)
}

/// Splits the tag byte off the front of `b` if it is `tag`.
fn take_tag(b: &mut &[u8], tag: u8) -> Option<()> {
    (take::<1>(b)? == [tag]).then_some(())
}

// Tags inside the mailbox table.
const TAG_COUNTER: u8 = 0;
const TAG_MSG: u8 = 1;
const TAG_HASH: u8 = 2;
// Tags inside the account table.
const TAG_SUB: u8 = 0;
// Tag 1 held the pushed markers of schema version 1.
const TAG_SUB_JOB: u8 = 2;

/// `account ‖ be32(namespace) ‖ 0`: the mailbox's last seq.
pub type CounterKey = [u8; 37];
/// `account ‖ be32(namespace) ‖ 1 ‖ be64(seq)`: a message.
pub type MsgKey = [u8; 45];
/// `account ‖ be32(namespace) ‖ 2 ‖ hash`: the hash index.
pub type HashKey = [u8; 69];
/// `ord64(expires_ms) ‖ account ‖ be32(namespace) ‖ be64(seq)`: the message expiry index.
pub type MsgExpiryKey = [u8; 52];
/// `account_index ‖ 0 ‖ device_id`: a subscription.
pub type SubKey = [u8; 49];
/// A pushed marker: `SHA-256(tag ‖ device_id)` (see `store::linkage`).
pub type PushedKey = [u8; 32];
/// `account_index ‖ 2 ‖ device_id ‖ be64(job_id)`: the jobs of one subscription.
pub type SubJobKey = [u8; 57];
/// `ord64(expires_ms) ‖ account_index ‖ device_id`: the subscription expiry index.
pub type SubExpiryKey = [u8; 56];
/// `ord64(expires_ms) ‖ pushed key`: the pushed marker expiry index.
pub type PushedExpiryKey = [u8; 40];
/// `ord64(visible_at_ms) ‖ be64(job_id)`: the job due index.
pub type DueKey = [u8; 16];

/// Key of a mailbox's seq counter.
pub fn counter(account: &Account, namespace: u32) -> CounterKey {
    concat(&[account.as_slice(), &namespace.to_be_bytes(), &[TAG_COUNTER]])
}

/// Key of a message.
pub fn msg(account: &Account, namespace: u32, seq: u64) -> MsgKey {
    concat(&[
        account.as_slice(),
        &namespace.to_be_bytes(),
        &[TAG_MSG],
        &seq.to_be_bytes(),
    ])
}

/// Decodes a message key into (account, namespace, seq).
pub fn parse_msg(mut k: &[u8]) -> Option<(Account, u32, u64)> {
    let account = Account(take::<32>(&mut k)?);
    let ns = u32::from_be_bytes(take(&mut k)?);
    take_tag(&mut k, TAG_MSG)?;
    let seq = u64::from_be_bytes(take(&mut k)?);
    k.is_empty().then_some((account, ns, seq))
}

/// Key of the hash index.
pub fn hash(account: &Account, namespace: u32, hash: &Hash) -> HashKey {
    concat(&[account.as_slice(), &namespace.to_be_bytes(), &[TAG_HASH], hash])
}

/// Key of the message expiry index.
pub fn msg_expiry(expires_ms: i64, account: &Account, namespace: u32, seq: u64) -> MsgExpiryKey {
    concat(&[
        &ord_i64(expires_ms),
        account.as_slice(),
        &namespace.to_be_bytes(),
        &seq.to_be_bytes(),
    ])
}

/// Decodes a message expiry key into (expires_ms, account, namespace, seq).
pub fn parse_msg_expiry(mut k: &[u8]) -> Option<(i64, Account, u32, u64)> {
    let expires = from_ord_i64(take(&mut k)?);
    let account = Account(take::<32>(&mut k)?);
    let ns = u32::from_be_bytes(take(&mut k)?);
    let seq = u64::from_be_bytes(take(&mut k)?);
    k.is_empty().then_some((expires, account, ns, seq))
}

/// Key of a subscription.
pub fn sub(account_index: &AccountIndex, device_id: &DeviceId) -> SubKey {
    concat(&[account_index.as_slice(), &[TAG_SUB], device_id])
}

/// Decodes a subscription key.
pub fn parse_sub(mut k: &[u8]) -> Option<(AccountIndex, DeviceId)> {
    let ai = AccountIndex(take::<32>(&mut k)?);
    take_tag(&mut k, TAG_SUB)?;
    let dev = take::<16>(&mut k)?;
    k.is_empty().then_some((ai, dev))
}

/// Key of the per-subscription job index.
pub fn sub_job(account_index: &AccountIndex, device_id: &DeviceId, job_id: u64) -> SubJobKey {
    concat(&[
        account_index.as_slice(),
        &[TAG_SUB_JOB],
        device_id,
        &job_id.to_be_bytes(),
    ])
}

/// Decodes the job id of a per-subscription job key.
pub fn parse_sub_job_id(mut k: &[u8]) -> Option<u64> {
    take::<32>(&mut k)?;
    take_tag(&mut k, TAG_SUB_JOB)?;
    take::<16>(&mut k)?;
    let id = u64::from_be_bytes(take(&mut k)?);
    k.is_empty().then_some(id)
}

/// Key of the subscription expiry index.
pub fn sub_expiry(expires_ms: i64, account_index: &AccountIndex, device_id: &DeviceId) -> SubExpiryKey {
    concat(&[&ord_i64(expires_ms), account_index.as_slice(), device_id])
}

/// Decodes a subscription expiry key.
pub fn parse_sub_expiry(mut k: &[u8]) -> Option<(i64, AccountIndex, DeviceId)> {
    let expires = from_ord_i64(take(&mut k)?);
    let ai = AccountIndex(take::<32>(&mut k)?);
    let dev = take::<16>(&mut k)?;
    k.is_empty().then_some((expires, ai, dev))
}

/// Key of the pushed marker expiry index.
pub fn pushed_expiry(expires_ms: i64, pushed: &PushedKey) -> PushedExpiryKey {
    concat(&[&ord_i64(expires_ms), pushed])
}

/// Decodes a pushed expiry key into (expires_ms, pushed key).
pub fn parse_pushed_expiry(mut k: &[u8]) -> Option<(i64, PushedKey)> {
    let expires = from_ord_i64(take(&mut k)?);
    let p = take::<32>(&mut k)?;
    k.is_empty().then_some((expires, p))
}

/// Key of the due index.
pub fn due(visible_at_ms: i64, job_id: u64) -> DueKey {
    concat(&[&ord_i64(visible_at_ms), &job_id.to_be_bytes()])
}

/// Decodes a due key into (visible_at_ms, job_id).
pub fn parse_due(mut k: &[u8]) -> Option<(i64, u64)> {
    let at = from_ord_i64(take(&mut k)?);
    let id = u64::from_be_bytes(take(&mut k)?);
    k.is_empty().then_some((at, id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn i64_round_trips_and_keeps_order(a: i64, b: i64) {
            prop_assert_eq!(from_ord_i64(ord_i64(a)), a);
            prop_assert_eq!(a.cmp(&b), ord_i64(a).cmp(&ord_i64(b)));
        }

        #[test]
        fn mailbox_keys_round_trip_and_sort_like_tuples(
            a1: [u8; 32], n1: u32, s1: u64, a2: [u8; 32], n2: u32, s2: u64, h: [u8; 32],
        ) {
            let (a1, a2) = (Account(a1), Account(a2));
            let k1 = msg(&a1, n1, s1);
            prop_assert_eq!(parse_msg(&k1), Some((a1, n1, s1)));
            prop_assert_eq!((a1, n1, s1).cmp(&(a2, n2, s2)), k1.cmp(&msg(&a2, n2, s2)));
            // One mailbox's entries share its prefix and never interleave with another's.
            prop_assert_eq!(&k1[..36], &counter(&a1, n1)[..36]);
            prop_assert_eq!(&k1[..36], &hash(&a1, n1, &h)[..36]);
            prop_assert!(counter(&a1, n1).as_slice() < k1.as_slice());
            prop_assert!(k1.as_slice() < hash(&a1, n1, &h).as_slice());
            prop_assert_eq!(parse_msg(&hash(&a1, n1, &h)[..45]), None);
        }

        #[test]
        fn msg_expiry_keys_round_trip_and_sort_like_tuples(
            e1: i64, a1: [u8; 32], n1: u32, s1: u64, e2: i64, a2: [u8; 32], n2: u32, s2: u64,
        ) {
            let (a1, a2) = (Account(a1), Account(a2));
            let k1 = msg_expiry(e1, &a1, n1, s1);
            prop_assert_eq!(parse_msg_expiry(&k1), Some((e1, a1, n1, s1)));
            prop_assert_eq!(
                (e1, a1, n1, s1).cmp(&(e2, a2, n2, s2)),
                k1.cmp(&msg_expiry(e2, &a2, n2, s2))
            );
        }

        #[test]
        fn account_keys_round_trip_and_keep_subscriptions_together(
            e1: i64, i1: [u8; 32], d1: [u8; 16], e2: i64, i2: [u8; 32], d2: [u8; 16],
            j1: u64, j2: u64,
        ) {
            let (i1, i2) = (AccountIndex(i1), AccountIndex(i2));
            prop_assert_eq!(parse_sub(&sub(&i1, &d1)), Some((i1, d1)));
            prop_assert_eq!((i1, d1).cmp(&(i2, d2)), sub(&i1, &d1).cmp(&sub(&i2, &d2)));
            // All subscriptions of an account sort before its job index.
            prop_assert!(sub(&i1, &d1).as_slice() < sub_job(&i1, &d2, j1).as_slice());
            prop_assert_eq!(parse_sub(&sub_job(&i1, &d1, j1)[..49]), None);
            prop_assert_eq!(parse_sub_job_id(&sub_job(&i1, &d1, j1)), Some(j1));
            prop_assert_eq!(j1.cmp(&j2), sub_job(&i1, &d1, j1).cmp(&sub_job(&i1, &d1, j2)));
            prop_assert_eq!(parse_sub_expiry(&sub_expiry(e1, &i1, &d1)), Some((e1, i1, d1)));
            prop_assert_eq!(
                (e1, i1, d1).cmp(&(e2, i2, d2)),
                sub_expiry(e1, &i1, &d1).cmp(&sub_expiry(e2, &i2, &d2))
            );
        }

        #[test]
        fn due_and_pushed_expiry_keys_round_trip_and_sort_by_time(
            t1: i64, j1: u64, t2: i64, j2: u64, p: [u8; 32],
        ) {
            prop_assert_eq!(parse_due(&due(t1, j1)), Some((t1, j1)));
            prop_assert_eq!((t1, j1).cmp(&(t2, j2)), due(t1, j1).cmp(&due(t2, j2)));
            prop_assert_eq!(parse_pushed_expiry(&pushed_expiry(t1, &p)), Some((t1, p)));
            prop_assert_eq!(t1.cmp(&t2), pushed_expiry(t1, &p).cmp(&pushed_expiry(t2, &p)));
        }
    }

    #[test]
    fn parsers_reject_wrong_lengths_and_tags() {
        assert_eq!(parse_msg(&[0u8; 44]), None);
        assert_eq!(parse_msg(&[1u8; 46]), None);
        assert_eq!(parse_msg(&counter(&Account([0; 32]), 1)), None);
        assert_eq!(parse_due(&[0u8; 15]), None);
        assert_eq!(parse_sub_job_id(&[0u8; 57]), None);
        assert_eq!(parse_pushed_expiry(&[0u8; 41]), None);
    }
}
