//! Backend-independent tests of the [`Store`] invariants listed in the module docs.
//!
//! Every backend runs the same suite through [`store_conformance_tests!`](crate::store_conformance_tests),
//! which makes one `#[tokio::test]` per function below. Each function expects a fresh,
//! empty store (they check outbox depths and sweep counts exactly). Clocks are synthetic:
//! the store takes every time from its caller, so nothing here sleeps.

use std::collections::HashSet;
use std::sync::Arc;

use super::{
    Account, AccountIndex, DeviceId, JobOutcome, NewMessage, OutboxStats, PushInputs, PushJob, Store,
    StoreError, Subscription,
};

/// The synthetic "now" the tests start at.
const T0: i64 = 1_700_000_000_000;
/// A long time to live.
const DAY: i64 = 86_400_000;
/// A namespace for messages.
const NS: u32 = 20;

/// An account, its index, and helpers to build messages and subscriptions for it.
struct Fixture {
    account: Account,
    index: AccountIndex,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            account: crate::store::Account(tidings_proto::random_bytes()),
            index: crate::store::AccountIndex(tidings_proto::random_bytes()),
        }
    }

    fn msg(&self, namespace: u32, data: &[u8], created_ms: i64, expires_ms: i64) -> NewMessage {
        NewMessage {
            account: self.account,
            account_index: self.index,
            namespace,
            hash: tidings_proto::hash::message_hash(&self.account, namespace, data),
            data: data.to_vec(),
            created_ms,
            expires_ms,
        }
    }

    fn sub(&self, device_id: DeviceId, namespaces: &[u32], expires_ms: i64) -> Subscription {
        Subscription {
            account_index: self.index,
            device_id,
            namespaces: namespaces.to_vec(),
            want_data: false,
            sealed: b"sealed token and key".to_vec(),
            expires_ms,
        }
    }

    /// Stores a message that lives a day, returning its seq.
    async fn put(&self, store: &dyn Store, data: &[u8]) -> u64 {
        let out = store.put_message(self.msg(NS, data, T0, T0 + DAY)).await.unwrap();
        assert!(!out.duplicate);
        out.seq
    }

    /// Stores a message in another namespace of the account and one of another account,
    /// which no count of this mailbox may include.
    async fn put_elsewhere(&self, store: &dyn Store) {
        store
            .put_message(self.msg(NS + 1, b"other ns", T0, T0 + DAY))
            .await
            .unwrap();
        store
            .put_message(Fixture::new().msg(NS, b"other account", T0, T0 + DAY))
            .await
            .unwrap();
    }

    async fn seqs(&self, store: &dyn Store, now_ms: i64) -> Vec<u64> {
        let page = store
            .get_messages(&self.account, NS, 0, 10_000, now_ms)
            .await
            .unwrap();
        page.messages.iter().map(|m| m.seq).collect()
    }
}

fn device() -> DeviceId {
    tidings_proto::random_bytes()
}

/// Claims every job due at `now_ms` (leasing it for a minute).
async fn claim_all(store: &dyn Store, now_ms: i64) -> Vec<PushJob> {
    store.claim_jobs("node-a", now_ms, 60_000, 10_000).await.unwrap()
}

/// `seq` grows strictly per mailbox and is never handed out again after deletes and sweeps.
pub async fn seq_strictly_increasing_and_never_reused(store: &dyn Store) {
    let f = Fixture::new();
    let s1 = f.put(store, b"a").await;
    let s2 = f.put(store, b"b").await;
    let s3 = f.put(store, b"c").await;
    assert!(0 < s1 && s1 < s2 && s2 < s3);

    let c = f.msg(NS, b"c", T0, T0 + DAY).hash;
    assert_eq!(store.delete_messages(&f.account, NS, &[c]).await.unwrap(), 1);
    let s4 = f.put(store, b"d").await;
    assert!(s4 > s3, "a deleted last seq must not be reused");

    let all: Vec<_> = [&b"a"[..], b"b", b"d"]
        .iter()
        .map(|d| f.msg(NS, d, T0, T0 + DAY).hash)
        .collect();
    assert_eq!(store.delete_messages(&f.account, NS, &all).await.unwrap(), 3);
    let s5 = f.put(store, b"e").await;
    assert!(s5 > s4, "an emptied mailbox continues its seq");

    let short = store.put_message(f.msg(NS, b"short", T0, T0 + 10)).await.unwrap();
    assert!(short.seq > s5);
    assert_eq!(store.sweep_expired(T0 + 100, 100).await.unwrap(), 1);
    let s6 = f.put(store, b"after sweep").await;
    assert!(s6 > short.seq, "a swept last seq must not be reused");

    // Other mailboxes count on their own.
    let other_ns = store
        .put_message(f.msg(NS + 1, b"a", T0, T0 + DAY))
        .await
        .unwrap();
    assert!(other_ns.seq > 0 && !other_ns.duplicate);
    let g = Fixture::new();
    assert!(g.put(store, b"a").await > 0);
    assert_eq!(f.seqs(store, T0).await, vec![s5, s6]);
}

/// Storing the same message again changes nothing and reports the original.
pub async fn restore_is_idempotent(store: &dyn Store) {
    let f = Fixture::new();
    let first = store
        .put_message(f.msg(NS, b"hello", T0, T0 + DAY))
        .await
        .unwrap();
    assert!(!first.duplicate);
    assert_eq!(first.expires_ms, T0 + DAY);

    let again = store
        .put_message(f.msg(NS, b"hello", T0 + 5, T0 + 2 * DAY))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(
        (again.seq, again.expires_ms, again.jobs_enqueued),
        (first.seq, T0 + DAY, 0)
    );

    let page = store.get_messages(&f.account, NS, 0, 100, T0 + 10).await.unwrap();
    assert_eq!(page.messages.len(), 1);
    assert_eq!(page.messages[0].created_ms, T0);
    assert_eq!(page.messages[0].expires_ms, T0 + DAY);

    // The same data in another namespace is another message.
    let elsewhere = store
        .put_message(f.msg(NS + 1, b"hello", T0, T0 + DAY))
        .await
        .unwrap();
    assert!(!elsewhere.duplicate);
}

/// Pages ascend by seq, hold at most `limit`, and `more` says whether more remain.
pub async fn paging_with_limit_and_more(store: &dyn Store) {
    let f = Fixture::new();
    let mut seqs = Vec::new();
    for i in 0..5u8 {
        seqs.push(f.put(store, &[i; 3]).await);
    }
    let get = |after, limit| store.get_messages(&f.account, NS, after, limit, T0);

    let p1 = get(0, 2).await.unwrap();
    assert_eq!(p1.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), seqs[..2]);
    assert!(p1.more);
    let p2 = get(seqs[1], 2).await.unwrap();
    assert_eq!(p2.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), seqs[2..4]);
    assert!(p2.more);
    let p3 = get(seqs[3], 2).await.unwrap();
    assert_eq!(p3.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), seqs[4..]);
    assert!(!p3.more);

    let exact = get(0, 5).await.unwrap();
    assert_eq!(exact.messages.len(), 5);
    assert!(!exact.more);
    assert_eq!(get(0, 50).await.unwrap().messages.len(), 5);
    let none = get(0, 0).await.unwrap();
    assert!(none.messages.is_empty() && none.more);
    let past = get(seqs[4], 10).await.unwrap();
    assert!(past.messages.is_empty() && !past.more);
    assert!(get(u64::MAX, 10).await.unwrap().messages.is_empty());

    let m = &exact.messages[2];
    let sent = f.msg(NS, &[2; 3], T0, T0 + DAY);
    assert_eq!(
        (m.hash, &m.data, m.created_ms, m.expires_ms),
        (sent.hash, &sent.data, T0, T0 + DAY)
    );
    let one = store
        .get_message(&f.account, NS, &sent.hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&one, m);
    assert_eq!(
        store.get_message(&f.account, NS + 1, &sent.hash).await.unwrap(),
        None
    );
}

/// Expired messages are never returned, are swept in bounded batches, and do not make a
/// re-store a duplicate.
pub async fn expired_messages_are_hidden_and_swept(store: &dyn Store) {
    let f = Fixture::new();
    let put = |data: &'static [u8], expires| store.put_message(f.msg(NS, data, T0, expires));
    let a = put(b"a", T0 + 1000).await.unwrap().seq;
    let _b = put(b"b", T0 + 10).await.unwrap().seq;
    let c = put(b"c", T0 + 1000).await.unwrap().seq;
    let _d = put(b"d", T0 + 20).await.unwrap().seq;

    assert_eq!(f.seqs(store, T0 + 9).await.len(), 4);
    assert_eq!(
        f.seqs(store, T0 + 10).await.len(),
        3,
        "a message is expired at its expiry"
    );
    let first = store.get_messages(&f.account, NS, 0, 1, T0 + 50).await.unwrap();
    assert_eq!(first.messages[0].seq, a);
    assert!(first.more, "c is still live");
    let second = store.get_messages(&f.account, NS, a, 1, T0 + 50).await.unwrap();
    assert_eq!(second.messages[0].seq, c);
    assert!(!second.more, "only expired messages remain after c");

    assert_eq!(
        store.sweep_expired(T0 + 50, 1).await.unwrap(),
        1,
        "sweeps are bounded"
    );
    assert_eq!(store.sweep_expired(T0 + 50, 100).await.unwrap(), 1);
    assert_eq!(store.sweep_expired(T0 + 50, 100).await.unwrap(), 0);
    let b_hash = f.msg(NS, b"b", T0, 0).hash;
    assert_eq!(store.get_message(&f.account, NS, &b_hash).await.unwrap(), None);
    assert_eq!(f.seqs(store, T0 + 50).await, vec![a, c]);

    // An expired but not yet swept original does not make a re-store a duplicate.
    let e1 = put(b"e", T0 + 100).await.unwrap();
    let e2 = store
        .put_message(f.msg(NS, b"e", T0 + 200, T0 + 5000))
        .await
        .unwrap();
    assert!(!e2.duplicate);
    assert!(e2.seq > e1.seq);
    assert_eq!(e2.expires_ms, T0 + 5000);
    assert_eq!(f.seqs(store, T0 + 300).await, vec![a, c, e2.seq]);
    assert_eq!(store.sweep_expired(T0 + 10 * DAY, 100).await.unwrap(), 3);
    assert!(f.seqs(store, T0).await.is_empty());
}

/// Deletes count only stored messages, once each, within the named mailbox.
pub async fn delete_counts_existing(store: &dyn Store) {
    let f = Fixture::new();
    let a = f.msg(NS, b"a", T0, T0 + DAY);
    let b = f.msg(NS, b"b", T0, T0 + DAY);
    let sa = f.put(store, b"a").await;
    f.put(store, b"b").await;
    let keep = f.put(store, b"keep").await;

    assert_eq!(
        store
            .delete_messages(&f.account, NS + 1, &[a.hash])
            .await
            .unwrap(),
        0
    );
    let unknown = [9u8; 32];
    assert_eq!(
        store
            .delete_messages(&f.account, NS, &[a.hash, b.hash, unknown, a.hash])
            .await
            .unwrap(),
        2
    );
    assert_eq!(store.delete_messages(&f.account, NS, &[a.hash]).await.unwrap(), 0);
    assert_eq!(store.delete_messages(&f.account, NS, &[]).await.unwrap(), 0);
    assert_eq!(f.seqs(store, T0).await, vec![keep]);
    assert_eq!(store.get_message(&f.account, NS, &a.hash).await.unwrap(), None);

    let again = store.put_message(a).await.unwrap();
    assert!(!again.duplicate, "a deleted message can be stored again");
    assert!(again.seq > keep && again.seq > sa);
}

/// Subscriptions are added, replaced (token rotation) and removed by (account_index, device).
pub async fn subscriptions_add_replace_remove(store: &dyn Store) {
    let f = Fixture::new();
    let (d1, d2) = (device(), device());
    let s1 = f.sub(d1, &[1, NS], T0 + DAY);
    assert!(store.upsert_subscription(s1.clone()).await.unwrap());
    assert!(
        store
            .upsert_subscription(f.sub(d2, &[NS], T0 + DAY))
            .await
            .unwrap()
    );
    assert_eq!(store.get_subscription(&f.index, &d1).await.unwrap(), Some(s1));

    let rotated = Subscription {
        namespaces: vec![NS, 30],
        want_data: true,
        sealed: b"new token".to_vec(),
        expires_ms: T0 + 2 * DAY,
        ..f.sub(d1, &[], 0)
    };
    assert!(!store.upsert_subscription(rotated.clone()).await.unwrap());
    assert_eq!(
        store.get_subscription(&f.index, &d1).await.unwrap(),
        Some(rotated)
    );

    assert!(store.remove_subscription(&f.index, &d1, i64::MAX).await.unwrap());
    assert!(!store.remove_subscription(&f.index, &d1, i64::MAX).await.unwrap());
    assert_eq!(store.get_subscription(&f.index, &d1).await.unwrap(), None);
    assert!(store.get_subscription(&f.index, &d2).await.unwrap().is_some());
    let other = Fixture::new();
    assert_eq!(store.get_subscription(&other.index, &d2).await.unwrap(), None);
}

/// A message enqueues one job per live subscription of its account that lists its namespace.
pub async fn jobs_fan_out_to_matching_namespaces(store: &dyn Store) {
    let f = Fixture::new();
    let other = Fixture::new();
    let (d1, d2, d3, d4, d5) = (device(), device(), device(), device(), device());
    store
        .upsert_subscription(f.sub(d1, &[1, NS], T0 + DAY))
        .await
        .unwrap();
    store
        .upsert_subscription(f.sub(d2, &[3], T0 + DAY))
        .await
        .unwrap();
    store.upsert_subscription(f.sub(d3, &[NS], T0 - 1)).await.unwrap();
    store
        .upsert_subscription(other.sub(d4, &[NS], T0 + DAY))
        .await
        .unwrap();
    store
        .upsert_subscription(Subscription {
            want_data: true,
            ..f.sub(d5, &[NS, 30], T0 + DAY)
        })
        .await
        .unwrap();

    let msg = f.msg(NS, b"fan out", T0, T0 + DAY);
    let out = store.put_message(msg.clone()).await.unwrap();
    assert_eq!(out.jobs_enqueued, 2);

    let jobs = claim_all(store, T0).await;
    assert_eq!(jobs.len(), 2);
    let devices: HashSet<_> = jobs.iter().map(|j| j.device_id).collect();
    assert_eq!(devices, HashSet::from([d1, d5]));
    assert_ne!(jobs[0].id, jobs[1].id);
    for j in &jobs {
        assert_eq!(
            (j.account, j.account_index, j.namespace, j.hash),
            (f.account, f.index, NS, msg.hash)
        );
        assert_eq!(
            (j.seq, j.created_ms, j.expires_ms, j.attempts),
            (out.seq, T0, T0 + DAY, 0)
        );
    }

    let quiet = store
        .put_message(f.msg(7, b"nobody listens", T0, T0 + DAY))
        .await
        .unwrap();
    assert_eq!(quiet.jobs_enqueued, 0);
    assert!(
        claim_all(store, T0 + 10 * 60_000)
            .await
            .iter()
            .all(|j| j.namespace == NS)
    );
}

/// Storing a message again enqueues nothing.
pub async fn no_job_for_duplicate_store(store: &dyn Store) {
    let f = Fixture::new();
    store
        .upsert_subscription(f.sub(device(), &[NS], T0 + DAY))
        .await
        .unwrap();
    let first = store.put_message(f.msg(NS, b"once", T0, T0 + DAY)).await.unwrap();
    assert_eq!(first.jobs_enqueued, 1);
    let again = store
        .put_message(f.msg(NS, b"once", T0 + 1, T0 + DAY))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.jobs_enqueued, 0);
    assert_eq!(claim_all(store, T0 + 1).await.len(), 1);
    assert_eq!(store.outbox_stats().await.unwrap().depth, 1);
}

/// A leased job is invisible until the lease ends; then another node takes it over.
pub async fn claim_leases_and_takeover(store: &dyn Store) {
    let f = Fixture::new();
    store
        .upsert_subscription(f.sub(device(), &[NS], T0 + DAY))
        .await
        .unwrap();
    store
        .upsert_subscription(f.sub(device(), &[NS], T0 + DAY))
        .await
        .unwrap();
    assert_eq!(
        store
            .put_message(f.msg(NS, b"m", T0, T0 + DAY))
            .await
            .unwrap()
            .jobs_enqueued,
        2
    );

    let a = store.claim_jobs("node-a", T0, 1000, 1).await.unwrap();
    assert_eq!(a.len(), 1);
    let b = store.claim_jobs("node-b", T0 + 10, 1000, 10).await.unwrap();
    assert_eq!(b.len(), 1);
    assert_ne!(a[0].id, b[0].id);
    assert!(
        store
            .claim_jobs("node-c", T0 + 20, 1000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .claim_jobs("node-c", T0 + 999, 1000, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // node-a "crashed": its lease runs out and node-c takes the job over.
    let c = store.claim_jobs("node-c", T0 + 1001, 1000, 10).await.unwrap();
    assert_eq!(c.iter().map(|j| j.id).collect::<Vec<_>>(), vec![a[0].id]);
    assert_eq!(c[0].attempts, 0);
    let d = store.claim_jobs("node-d", T0 + 1011, 1000, 10).await.unwrap();
    assert_eq!(d.iter().map(|j| j.id).collect::<Vec<_>>(), vec![b[0].id]);

    store.finish_job(&c[0], JobOutcome::Delivered).await.unwrap();
    // The crashed node finishing late must not fail or resurrect anything.
    store.finish_job(&a[0], JobOutcome::Delivered).await.unwrap();
    assert_eq!(store.outbox_stats().await.unwrap().depth, 1);
    assert!(
        store
            .claim_jobs("node-e", T0 + 1012, 1000, 0)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A node whose lease ran out and whose job was claimed again (by another node, or by
/// itself) finishes it too late: that changes nothing, whatever the outcome; the current
/// claim still finishes it. A claim whose lease ran out but that nobody took over still
/// finishes its job.
pub async fn finish_after_losing_the_lease_changes_nothing(store: &dyn Store) {
    let f = Fixture::new();
    store
        .upsert_subscription(f.sub(device(), &[NS], T0 + DAY))
        .await
        .unwrap();
    f.put(store, b"m").await;
    let a = store.claim_jobs("node-a", T0, 1000, 10).await.unwrap();
    assert_eq!(a.len(), 1);
    let b = store.claim_jobs("node-b", T0 + 1000, 1000, 10).await.unwrap();
    assert_eq!(b.iter().map(|j| j.id).collect::<Vec<_>>(), vec![a[0].id]);

    // node-a is late with every outcome but TokenDead (which removes the subscription,
    // whoever holds the job): node-b's lease stands, the job stays.
    for late in [
        JobOutcome::Retry { not_before_ms: T0 },
        JobOutcome::Dropped,
        JobOutcome::Delivered,
    ] {
        store.finish_job(&a[0], late).await.unwrap();
        assert_eq!(store.outbox_stats().await.unwrap().depth, 1, "{late:?}");
        assert!(
            store
                .claim_jobs("node-c", T0 + 1999, 1000, 10)
                .await
                .unwrap()
                .is_empty(),
            "{late:?} released node-b's lease"
        );
    }

    // node-b's Retry counts once; node-a's did not.
    store
        .finish_job(
            &b[0],
            JobOutcome::Retry {
                not_before_ms: T0 + 5000,
            },
        )
        .await
        .unwrap();
    assert!(
        store
            .claim_jobs("node-c", T0 + 4999, 1000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // A finish of a released job by an earlier claim changes nothing either.
    store.finish_job(&b[0], JobOutcome::Dropped).await.unwrap();
    store.finish_job(&a[0], JobOutcome::Dropped).await.unwrap();
    let c1 = store.claim_jobs("node-c", T0 + 5000, 1000, 10).await.unwrap();
    assert_eq!(c1.len(), 1);
    assert_eq!((c1[0].id, c1[0].attempts), (a[0].id, 1));

    // node-c's own lease runs out (a provider call hung) and it claims the job again:
    // only the second claim counts.
    let c2 = store.claim_jobs("node-c", T0 + 6000, 1000, 10).await.unwrap();
    assert_eq!(c2.iter().map(|j| j.id).collect::<Vec<_>>(), vec![a[0].id]);
    store.finish_job(&c1[0], JobOutcome::Dropped).await.unwrap();
    assert_eq!(store.outbox_stats().await.unwrap().depth, 1);

    // node-c finishes after its second lease ran out, but nobody took the job over.
    assert!(
        store
            .claim_jobs("node-d", T0 + 6999, 1000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    store.finish_job(&c2[0], JobOutcome::Delivered).await.unwrap();
    assert_eq!(store.outbox_stats().await.unwrap().depth, 0);
    assert!(
        store
            .claim_jobs("node-d", T0 + DAY, 1000, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Each [`JobOutcome`] does what its doc says.
pub async fn job_outcomes(store: &dyn Store) {
    let f = Fixture::new();
    let (d1, d2) = (device(), device());
    store
        .upsert_subscription(f.sub(d1, &[NS], T0 + DAY))
        .await
        .unwrap();

    // Delivered: gone.
    f.put(store, b"delivered").await;
    let j = claim_all(store, T0).await;
    store.finish_job(&j[0], JobOutcome::Delivered).await.unwrap();
    assert!(claim_all(store, T0 + DAY).await.is_empty());
    assert_eq!(
        store.outbox_stats().await.unwrap(),
        OutboxStats {
            depth: 0,
            oldest_enqueued_ms: None
        }
    );

    // Retry: back after not_before, lease released, attempts counted.
    f.put(store, b"retried").await;
    let j = claim_all(store, T0).await;
    store
        .finish_job(
            &j[0],
            JobOutcome::Retry {
                not_before_ms: T0 + 5000,
            },
        )
        .await
        .unwrap();
    assert!(claim_all(store, T0 + 4999).await.is_empty());
    let again = claim_all(store, T0 + 5000).await;
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].attempts), (j[0].id, 1));
    store
        .finish_job(
            &again[0],
            JobOutcome::Retry {
                not_before_ms: T0 + 6000,
            },
        )
        .await
        .unwrap();
    let third = claim_all(store, T0 + 6000).await;
    assert_eq!(third[0].attempts, 2);

    // Dropped: gone.
    store.finish_job(&third[0], JobOutcome::Dropped).await.unwrap();
    assert!(claim_all(store, T0 + DAY).await.is_empty());

    // TokenDead: the subscription and all its pending jobs go; other devices keep theirs.
    store
        .upsert_subscription(f.sub(d2, &[NS], T0 + DAY))
        .await
        .unwrap();
    f.put(store, b"m3").await;
    f.put(store, b"m4").await;
    let jobs = claim_all(store, T0 + 2 * DAY).await;
    assert_eq!(jobs.len(), 4);
    let dead = jobs.iter().find(|j| j.device_id == d1).unwrap();
    store.finish_job(dead, JobOutcome::TokenDead).await.unwrap();
    assert_eq!(store.get_subscription(&f.index, &d1).await.unwrap(), None);
    assert!(store.get_subscription(&f.index, &d2).await.unwrap().is_some());
    let left = claim_all(store, T0 + 3 * DAY).await;
    assert_eq!(left.len(), 2);
    assert!(left.iter().all(|j| j.device_id == d2));
    assert_eq!(store.outbox_stats().await.unwrap().depth, 2);
    store
        .finish_job(dead, JobOutcome::Retry { not_before_ms: T0 })
        .await
        .unwrap();
    assert_eq!(
        store.outbox_stats().await.unwrap().depth,
        2,
        "finishing a removed job changes nothing"
    );
}

/// The same (device, hash) gets a job at most once, also after delete and re-store.
pub async fn same_device_and_hash_enqueued_once(store: &dyn Store) {
    let f = Fixture::new();
    let (d1, d2) = (device(), device());
    store
        .upsert_subscription(f.sub(d1, &[NS], T0 + DAY))
        .await
        .unwrap();
    let m = f.msg(NS, b"m", T0, T0 + DAY);
    assert_eq!(store.put_message(m.clone()).await.unwrap().jobs_enqueued, 1);

    // While the job is pending.
    assert_eq!(store.delete_messages(&f.account, NS, &[m.hash]).await.unwrap(), 1);
    let second = store.put_message(m.clone()).await.unwrap();
    assert!(!second.duplicate);
    assert_eq!(second.jobs_enqueued, 0);

    // After delivery.
    let jobs = claim_all(store, T0).await;
    assert_eq!(jobs.len(), 1);
    store.finish_job(&jobs[0], JobOutcome::Delivered).await.unwrap();
    store.delete_messages(&f.account, NS, &[m.hash]).await.unwrap();
    assert_eq!(store.put_message(m.clone()).await.unwrap().jobs_enqueued, 0);

    // A device that never had it does get it.
    store
        .upsert_subscription(f.sub(d2, &[NS], T0 + DAY))
        .await
        .unwrap();
    store.delete_messages(&f.account, NS, &[m.hash]).await.unwrap();
    assert_eq!(store.put_message(m).await.unwrap().jobs_enqueued, 1);
    let jobs = claim_all(store, T0 + DAY / 2).await;
    assert_eq!(jobs.iter().map(|j| j.device_id).collect::<Vec<_>>(), vec![d2]);
}

/// Removing a subscription removes its pending jobs.
pub async fn remove_subscription_drops_pending_jobs(store: &dyn Store) {
    let f = Fixture::new();
    let (d1, d2) = (device(), device());
    store
        .upsert_subscription(f.sub(d1, &[NS], T0 + DAY))
        .await
        .unwrap();
    store
        .upsert_subscription(f.sub(d2, &[NS], T0 + DAY))
        .await
        .unwrap();
    f.put(store, b"1").await;
    f.put(store, b"2").await;
    assert_eq!(store.outbox_stats().await.unwrap().depth, 4);
    assert!(store.remove_subscription(&f.index, &d1, i64::MAX).await.unwrap());
    assert_eq!(store.outbox_stats().await.unwrap().depth, 2);
    assert!(claim_all(store, T0).await.iter().all(|j| j.device_id == d2));
}

/// Expired subscriptions get no jobs and are swept.
pub async fn sweep_removes_expired_subscriptions(store: &dyn Store) {
    let f = Fixture::new();
    let (d1, d2) = (device(), device());
    store
        .upsert_subscription(f.sub(d1, &[NS], T0 + 100))
        .await
        .unwrap();
    store
        .upsert_subscription(f.sub(d2, &[NS], T0 + DAY))
        .await
        .unwrap();
    let out = store
        .put_message(f.msg(NS, b"late", T0 + 100, T0 + DAY))
        .await
        .unwrap();
    assert_eq!(out.jobs_enqueued, 1, "a subscription is expired at its expiry");

    assert_eq!(store.sweep_expired(T0 + 200, 100).await.unwrap(), 1);
    assert_eq!(store.sweep_expired(T0 + 200, 100).await.unwrap(), 0);
    assert_eq!(store.get_subscription(&f.index, &d1).await.unwrap(), None);
    assert!(store.get_subscription(&f.index, &d2).await.unwrap().is_some());
    assert_eq!(claim_all(store, T0 + 200).await[0].device_id, d2);

    // Renewing moves the expiry: the old one no longer sweeps it.
    store
        .upsert_subscription(f.sub(d2, &[NS], T0 + 2 * DAY))
        .await
        .unwrap();
    store.sweep_expired(T0 + DAY + 1, 100).await.unwrap();
    assert!(store.get_subscription(&f.index, &d2).await.unwrap().is_some());
}

/// The outbox reports its depth and the enqueue time of its oldest job.
pub async fn outbox_stats_report_depth_and_oldest(store: &dyn Store) {
    assert_eq!(store.outbox_stats().await.unwrap(), OutboxStats::default());
    let f = Fixture::new();
    store
        .upsert_subscription(f.sub(device(), &[NS], T0 + DAY))
        .await
        .unwrap();
    store.put_message(f.msg(NS, b"1", T0, T0 + DAY)).await.unwrap();
    store
        .put_message(f.msg(NS, b"2", T0 + 5, T0 + DAY))
        .await
        .unwrap();
    assert_eq!(
        store.outbox_stats().await.unwrap(),
        OutboxStats {
            depth: 2,
            oldest_enqueued_ms: Some(T0)
        }
    );
    let jobs = claim_all(store, T0 + 5).await;
    let oldest = jobs.iter().find(|j| j.created_ms == T0).unwrap();
    store.finish_job(oldest, JobOutcome::Delivered).await.unwrap();
    assert_eq!(
        store.outbox_stats().await.unwrap(),
        OutboxStats {
            depth: 1,
            oldest_enqueued_ms: Some(T0 + 5)
        }
    );
}

/// A store that can write says so.
pub async fn check_writable_when_healthy(store: &dyn Store) {
    store.check_writable().await.unwrap();
    store.check_writable().await.unwrap();
}

/// After `close` every method fails with [`StoreError::Closed`]; closing again is fine.
pub async fn closed_store_refuses_work(store: &dyn Store) {
    let f = Fixture::new();
    f.put(store, b"before close").await;
    store.close().await.unwrap();
    let closed = |r: Result<(), StoreError>| assert!(matches!(r, Err(StoreError::Closed)), "{r:?}");
    closed(
        store
            .put_message(f.msg(NS, b"after", T0, T0 + DAY))
            .await
            .map(drop),
    );
    closed(store.get_messages(&f.account, NS, 0, 10, T0).await.map(drop));
    closed(store.get_message(&f.account, NS, &[0; 32]).await.map(drop));
    closed(store.delete_messages(&f.account, NS, &[[0; 32]]).await.map(drop));
    closed(store.sweep_expired(T0, 10).await.map(drop));
    closed(
        store
            .upsert_subscription(f.sub(device(), &[NS], T0 + DAY))
            .await
            .map(drop),
    );
    closed(
        store
            .remove_subscription(&f.index, &device(), i64::MAX)
            .await
            .map(drop),
    );
    closed(store.get_subscription(&f.index, &device()).await.map(drop));
    closed(store.claim_jobs("n", T0, 10, 10).await.map(drop));
    closed(store.outbox_stats().await.map(drop));
    closed(store.check_writable().await);
    store.close().await.unwrap();
}

/// The seq span covers every stored message, expired or deleted ones in between
/// included, so it never undercounts.
pub async fn seq_span_bounds_the_count(store: &dyn Store) {
    let (f, other) = (Fixture::new(), Fixture::new());
    assert_eq!(store.seq_span(&f.account, NS).await.unwrap(), 0);
    let mut hashes = Vec::new();
    for i in 0..4u8 {
        let m = f.msg(NS, &[i], T0, T0 + DAY);
        hashes.push(m.hash);
        store.put_message(m).await.unwrap();
    }
    store
        .put_message(other.msg(NS, b"elsewhere", T0, T0 + DAY))
        .await
        .unwrap();
    assert_eq!(store.seq_span(&f.account, NS).await.unwrap(), 4);
    assert_eq!(store.seq_span(&f.account, NS + 1).await.unwrap(), 0);
    // A hole in the middle keeps the span; deleting the first one shrinks it.
    store
        .delete_messages(&f.account, NS, &hashes[1..2])
        .await
        .unwrap();
    assert_eq!(store.seq_span(&f.account, NS).await.unwrap(), 4);
    store.delete_messages(&f.account, NS, &hashes[..1]).await.unwrap();
    assert_eq!(store.seq_span(&f.account, NS).await.unwrap(), 2);
    store
        .delete_messages(&f.account, NS, &hashes[2..3])
        .await
        .unwrap();
    assert_eq!(store.seq_span(&f.account, NS).await.unwrap(), 1);
    assert_eq!(store.count_messages(&f.account, NS, 0, T0, 100).await.unwrap(), 1);
}

/// `count_messages` counts one mailbox's unexpired messages, stops at `at_most`, and
/// follows deletes; other namespaces and accounts do not count.
pub async fn count_messages_per_mailbox(store: &dyn Store) {
    let (f, other) = (Fixture::new(), Fixture::new());
    assert_eq!(store.count_messages(&f.account, NS, 0, T0, 100).await.unwrap(), 0);
    let mut hashes = Vec::new();
    for i in 0..5u8 {
        let m = f.msg(NS, &[i], T0, T0 + DAY);
        hashes.push(m.hash);
        store.put_message(m).await.unwrap();
    }
    // Expires soon, in the same mailbox; and messages elsewhere.
    store
        .put_message(f.msg(NS, b"short", T0, T0 + 1000))
        .await
        .unwrap();
    store
        .put_message(f.msg(NS + 1, b"other ns", T0, T0 + DAY))
        .await
        .unwrap();
    store
        .put_message(other.msg(NS, b"other account", T0, T0 + DAY))
        .await
        .unwrap();
    assert_eq!(store.count_messages(&f.account, NS, 0, T0, 100).await.unwrap(), 6);
    assert_eq!(
        store.count_messages(&f.account, NS, 0, T0, 3).await.unwrap(),
        3,
        "stops at at_most"
    );
    assert_eq!(
        store
            .count_messages(&f.account, NS, 0, T0 + 1000, 100)
            .await
            .unwrap(),
        5,
        "an expired message does not count, swept or not"
    );
    store.delete_messages(&f.account, NS, &hashes[..2]).await.unwrap();
    assert_eq!(store.count_messages(&f.account, NS, 0, T0, 100).await.unwrap(), 4);
    assert_eq!(
        store
            .count_messages(&f.account, NS + 1, 0, T0, 100)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .count_messages(&other.account, NS, 0, T0, 100)
            .await
            .unwrap(),
        1
    );
}

/// `count_messages` after a seq counts only the unexpired messages behind it (what a
/// Retrieve page reports as `remaining`), still stopping at `at_most`.
pub async fn count_messages_after_a_seq(store: &dyn Store) {
    let f = Fixture::new();
    let mut seqs = Vec::new();
    let mut hashes = Vec::new();
    for i in 0..6u8 {
        // The fourth expires first.
        let expires = if i == 3 { T0 + 1000 } else { T0 + DAY };
        let m = f.msg(NS, &[i], T0, expires);
        hashes.push(m.hash);
        seqs.push(store.put_message(m).await.unwrap().seq);
    }
    f.put_elsewhere(store).await;
    let count =
        |after: u64, now: i64, at_most: u32| store.count_messages(&f.account, NS, after, now, at_most);
    assert_eq!(count(seqs[1], T0, 100).await.unwrap(), 4);
    assert_eq!(
        count(seqs[1], T0 + 1000, 100).await.unwrap(),
        3,
        "expired: not counted"
    );
    assert_eq!(count(seqs[1], T0, 2).await.unwrap(), 2, "stops at at_most");
    assert_eq!(
        count(seqs[5], T0, 100).await.unwrap(),
        0,
        "nothing after the last"
    );
    assert_eq!(count(u64::MAX, T0, 100).await.unwrap(), 0);
    // Between two stored seqs (the cursor may sit on a deleted message).
    store
        .delete_messages(&f.account, NS, &hashes[2..3])
        .await
        .unwrap();
    assert_eq!(count(seqs[2], T0, 100).await.unwrap(), 3);
    assert_eq!(
        count(seqs[1], T0, 100).await.unwrap(),
        3,
        "a deleted one: not counted"
    );
    // It agrees with what paging finds after the same seq.
    let page = store
        .get_messages(&f.account, NS, seqs[1], 100, T0 + 1000)
        .await
        .unwrap();
    assert_eq!(
        page.messages.len() as u32,
        count(seqs[1], T0 + 1000, 100).await.unwrap()
    );
}

/// A conditional removal takes a subscription only while its expiry is no later than the
/// bound, and leaves one renewed past it (with its jobs) alone.
pub async fn remove_subscription_only_when_it_expires_by(store: &dyn Store) {
    let f = Fixture::new();
    let dev = device();
    let expires = T0 + DAY;
    store
        .upsert_subscription(f.sub(dev, &[NS], expires))
        .await
        .unwrap();
    f.put(store, b"pending").await;
    assert!(
        !store
            .remove_subscription(&f.index, &dev, expires - 1)
            .await
            .unwrap()
    );
    assert!(store.get_subscription(&f.index, &dev).await.unwrap().is_some());
    assert_eq!(store.outbox_stats().await.unwrap().depth, 1, "its job stays too");

    // Renewed later: a bound from before the renewal no longer reaches it.
    store
        .upsert_subscription(f.sub(dev, &[NS], expires + DAY))
        .await
        .unwrap();
    assert!(!store.remove_subscription(&f.index, &dev, expires).await.unwrap());
    assert_eq!(store.outbox_stats().await.unwrap().depth, 1);
    assert!(
        store
            .remove_subscription(&f.index, &dev, expires + DAY)
            .await
            .unwrap()
    );
    assert_eq!(store.get_subscription(&f.index, &dev).await.unwrap(), None);
    assert_eq!(
        store.outbox_stats().await.unwrap().depth,
        0,
        "its jobs went with it"
    );
    assert!(!store.remove_subscription(&f.index, &dev, i64::MAX).await.unwrap());
}

/// Many tasks storing into one mailbox at once all get distinct seqs, increasing per task.
pub async fn concurrent_puts_get_distinct_increasing_seqs(store: Arc<dyn Store>) {
    const TASKS: usize = 64;
    const PER_TASK: usize = 20;
    let f = Arc::new(Fixture::new());
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let (store, f) = (Arc::clone(&store), Arc::clone(&f));
        handles.push(tokio::spawn(async move {
            let mut seqs = Vec::with_capacity(PER_TASK);
            for i in 0..PER_TASK {
                let data = format!("task {task} message {i}");
                let out = store
                    .put_message(f.msg(NS, data.as_bytes(), T0, T0 + DAY))
                    .await
                    .unwrap();
                assert!(!out.duplicate);
                seqs.push(out.seq);
            }
            seqs
        }));
    }
    let mut all = HashSet::new();
    for h in handles {
        let seqs = h.await.unwrap();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "one task's seqs must increase"
        );
        all.extend(seqs);
    }
    assert_eq!(all.len(), TASKS * PER_TASK, "seqs must be distinct");
    let listed = f.seqs(&*store, T0).await;
    assert_eq!(listed.len(), TASKS * PER_TASK);
    assert!(listed.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(listed.into_iter().collect::<HashSet<_>>(), all);
}

/// `push_inputs` answers what `get_subscription` and `get_message` answer, gone or not.
pub async fn push_inputs_match_the_single_reads(store: &dyn Store) {
    let f = Fixture::new();
    let dev = device();
    store
        .upsert_subscription(f.sub(dev, &[NS], T0 + DAY))
        .await
        .unwrap();
    f.put(store, b"m").await;
    let job = claim_all(store, T0).await.pop().unwrap();
    let single = PushInputs {
        subscription: store.get_subscription(&f.index, &dev).await.unwrap(),
        message: store.get_message(&f.account, NS, &job.hash).await.unwrap(),
    };
    let batch = store.push_inputs(std::slice::from_ref(&job)).await.unwrap();
    assert_eq!(batch, std::slice::from_ref(&single));
    assert_eq!(single.message.unwrap().data, b"m");
    assert_eq!(single.subscription.unwrap().device_id, dev);

    store.delete_messages(&f.account, NS, &[job.hash]).await.unwrap();
    let mut gone = job.clone();
    gone.device_id = device();
    let both = store.push_inputs(&[job.clone(), gone]).await.unwrap();
    assert!(both[0].message.is_none() && both[0].subscription.is_some());
    assert_eq!(
        both[1],
        PushInputs::default(),
        "answers keep the order of the jobs"
    );
    store.remove_subscription(&f.index, &dev, i64::MAX).await.unwrap();
    assert_eq!(store.push_inputs(&[job]).await.unwrap(), [PushInputs::default()]);
    assert!(store.push_inputs(&[]).await.unwrap().is_empty());
}

/// Claims racing finishes from several tasks: while leases last, every job is handed out
/// exactly once (a finished job never comes back).
pub async fn claims_racing_finishes_take_each_job_once(store: Arc<dyn Store>) {
    let f = Arc::new(Fixture::new());
    for _ in 0..2 {
        store
            .upsert_subscription(f.sub(device(), &[NS], T0 + DAY))
            .await
            .unwrap();
    }
    let mut puts = tokio::task::JoinSet::new();
    for i in 0..200u32 {
        let (store, f) = (Arc::clone(&store), Arc::clone(&f));
        puts.spawn(async move { f.put(&*store, &i.to_be_bytes()).await });
    }
    puts.join_all().await;
    let mut seen = HashSet::new();
    let mut finishing = tokio::task::JoinSet::new();
    while seen.len() < 400 {
        for job in store.claim_jobs("node-a", T0, DAY, 16).await.unwrap() {
            assert!(seen.insert(job.id), "job {} handed out twice", job.id);
            let store = Arc::clone(&store);
            finishing.spawn(async move { store.finish_job(&job, JobOutcome::Delivered).await.unwrap() });
        }
        tokio::task::yield_now().await;
    }
    finishing.join_all().await;
    assert!(claim_all(&*store, T0 + 2 * DAY).await.is_empty());
    assert_eq!(store.outbox_stats().await.unwrap().depth, 0);
}

/// Generates one `#[tokio::test]` per conformance function.
///
/// `$fresh` is an `async fn() -> (G, Arc<dyn Store>)` returning a new, empty store and a
/// guard `G` kept alive for the test (a temp dir, a throwaway schema).
#[macro_export]
#[doc(hidden)]
macro_rules! store_conformance_tests {
    ($fresh:path) => {
        $crate::store_conformance_tests!(@each $fresh;
            seq_strictly_increasing_and_never_reused,
            restore_is_idempotent,
            paging_with_limit_and_more,
            count_messages_per_mailbox,
            count_messages_after_a_seq,
            seq_span_bounds_the_count,
            expired_messages_are_hidden_and_swept,
            delete_counts_existing,
            subscriptions_add_replace_remove,
            jobs_fan_out_to_matching_namespaces,
            no_job_for_duplicate_store,
            claim_leases_and_takeover,
            finish_after_losing_the_lease_changes_nothing,
            job_outcomes,
            same_device_and_hash_enqueued_once,
            remove_subscription_drops_pending_jobs,
            remove_subscription_only_when_it_expires_by,
            sweep_removes_expired_subscriptions,
            outbox_stats_report_depth_and_oldest,
            check_writable_when_healthy,
            closed_store_refuses_work,
            push_inputs_match_the_single_reads
        );

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn concurrent_puts_get_distinct_increasing_seqs() {
            let (_guard, store) = $fresh().await;
            let test = $crate::store::conformance::concurrent_puts_get_distinct_increasing_seqs(store);
            tokio::time::timeout(std::time::Duration::from_secs(120), test).await.expect("test timed out");
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn claims_racing_finishes_take_each_job_once() {
            let (_guard, store) = $fresh().await;
            let test = $crate::store::conformance::claims_racing_finishes_take_each_job_once(store);
            tokio::time::timeout(std::time::Duration::from_secs(120), test).await.expect("test timed out");
        }
    };
    (@each $fresh:path; $($name:ident),*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let (_guard, store) = $fresh().await;
            let test = $crate::store::conformance::$name(&*store);
            tokio::time::timeout(std::time::Duration::from_secs(60), test).await.expect("test timed out");
        }
    )*};
}
