//! What each store operation does inside a redb transaction.
//!
//! Write operations run on the writer thread inside the batch's one write transaction;
//! they may be run again when another operation of the batch fails, so they keep no state
//! outside the transaction. Expiry is `expires_ms <= now`.

use ::redb::{ReadTransaction, ReadableTable, ReadableTableMetadata};

use super::keys;
use super::leases::Leases;
use super::records::{self, JobRecord, MsgHead};
use super::tables::{self, META_NEXT_JOB, META_PROBE, OpError, Tables};
use crate::store::{
    Account, AccountIndex, DeviceId, Hash, JobOutcome, Lease, NewMessage, OutboxStats, Page, PushJob,
    PutOutcome, StoreError, StoredMessage, Subscription,
    linkage::{self, JobMessage},
};

/// The most entries one sweep call removes, whatever the caller asks: a sweep shares its
/// write transaction with the Stores of its batch and must not hold them up for long.
pub const SWEEP_CAP: u32 = 10_000;

fn corrupt_key(table: &str) -> OpError {
    OpError::Op(StoreError::corrupt(format!("malformed key in table {table}")))
}

/// Stores a message, or finds the unexpired original of a duplicate.
pub fn put_message(t: &mut Tables<'_>, msg: &NewMessage) -> Result<PutOutcome, OpError> {
    // The caller's clock: an expired original does not make a re-store a duplicate, since
    // it would then be acknowledged but never delivered.
    let now = msg.created_ms;
    let hk = keys::hash(&msg.account, msg.namespace, &msg.hash);
    let existing = get_u64(&t.mailboxes, &hk, "hash index")?;
    if let Some(seq) = existing {
        match load_msg_head(&t.mailboxes, &msg.account, msg.namespace, seq)? {
            Some(head) if head.expires_ms > now => {
                return Ok(PutOutcome {
                    seq,
                    expires_ms: head.expires_ms,
                    duplicate: true,
                    jobs_enqueued: 0,
                });
            }
            Some(head) => remove_message(t, &msg.account, msg.namespace, seq, &head)?,
            None => {
                t.mailboxes.remove(hk.as_slice())?;
            }
        }
    }
    let seq = next_seq(t, &msg.account, msg.namespace)?;
    let head = MsgHead {
        hash: msg.hash,
        created_ms: msg.created_ms,
        expires_ms: msg.expires_ms,
    };
    let mk = keys::msg(&msg.account, msg.namespace, seq);
    t.mailboxes
        .insert(mk.as_slice(), records::encode_msg(&head, &msg.data).as_slice())?;
    t.mailboxes.insert(hk.as_slice(), seq.to_be_bytes().as_slice())?;
    let ek = keys::msg_expiry(msg.expires_ms, &msg.account, msg.namespace, seq);
    t.msg_expiry.insert(ek.as_slice(), ())?;
    let jobs_enqueued = fan_out(t, msg, seq, now)?;
    Ok(PutOutcome {
        seq,
        expires_ms: msg.expires_ms,
        duplicate: false,
        jobs_enqueued,
    })
}

fn next_seq(t: &mut Tables<'_>, account: &Account, namespace: u32) -> Result<u64, OpError> {
    let ck = keys::counter(account, namespace);
    let last = get_u64(&t.mailboxes, &ck, "seq counter")?.unwrap_or(0);
    let seq = last
        .checked_add(1)
        .ok_or_else(|| StoreError::corrupt("mailbox seq exhausted"))?;
    t.mailboxes.insert(ck.as_slice(), seq.to_be_bytes().as_slice())?;
    Ok(seq)
}

/// Enqueues a job for every live subscription of the account that wants this namespace
/// and never had a job for this hash.
fn fan_out(t: &mut Tables<'_>, msg: &NewMessage, seq: u64, now: i64) -> Result<u32, OpError> {
    let lo = keys::sub(&msg.account_index, &[0; 16]);
    let hi = keys::sub(&msg.account_index, &[0xff; 16]);
    let mut devices = Vec::new();
    for item in t.accounts.range(lo.as_slice()..=hi.as_slice())? {
        let (k, v) = item?;
        let v = v.value();
        if records::sub_expires(v)? <= now || !records::sub_has_namespace(v, msg.namespace)? {
            continue;
        }
        let (_, device) = keys::parse_sub(k.value()).ok_or_else(|| corrupt_key("push_accounts"))?;
        devices.push(device);
    }
    let mut enqueued = 0;
    if devices.is_empty() {
        return Ok(0);
    }
    let tag = t.keys.message_tag(&msg.account_index, &msg.hash);
    // One sealed reference serves every device: it is bound to the account index only.
    let sealed = t.keys.seal_job(
        &msg.account_index,
        &JobMessage {
            account: msg.account,
            namespace: msg.namespace,
            hash: msg.hash,
            seq,
            created_ms: msg.created_ms,
            expires_ms: msg.expires_ms,
        },
    );
    for device_id in devices {
        if !mark_pushed(t, &linkage::marker(&tag, &device_id), msg.expires_ms)? {
            continue;
        }
        let id = t.next_counter(META_NEXT_JOB)?;
        save_job(
            t,
            &JobRecord {
                id,
                account_index: msg.account_index,
                device_id,
                sealed: sealed.clone(),
                attempts: 0,
                enqueued_ms: now,
                not_before_ms: now,
                lease_until_ms: i64::MIN,
                lease_owner: String::new(),
            },
        )?;
        enqueued += 1;
    }
    Ok(enqueued)
}

/// Records that (device, hash), named by its keyed marker, got a job; returns false when
/// it already had one.
fn mark_pushed(t: &mut Tables<'_>, pk: &keys::PushedKey, expires_ms: i64) -> Result<bool, OpError> {
    if t.pushed.get(pk.as_slice())?.is_some() {
        return Ok(false);
    }
    t.pushed
        .insert(pk.as_slice(), expires_ms.to_be_bytes().as_slice())?;
    t.pushed_expiry
        .insert(keys::pushed_expiry(expires_ms, pk).as_slice(), ())?;
    Ok(true)
}

/// Bytes, for keys and values.
type B = &'static [u8];

/// Reads a `be64` value.
fn get_u64(table: &impl ReadableTable<B, B>, key: &[u8], what: &'static str) -> Result<Option<u64>, OpError> {
    match table.get(key)? {
        Some(g) => Ok(Some(records::decode_u64(g.value(), what)?)),
        None => Ok(None),
    }
}

fn load_msg_head(
    messages: &impl ReadableTable<&'static [u8], &'static [u8]>,
    account: &Account,
    namespace: u32,
    seq: u64,
) -> Result<Option<MsgHead>, OpError> {
    let mk = keys::msg(account, namespace, seq);
    let Some(guard) = messages.get(mk.as_slice())? else {
        return Ok(None);
    };
    Ok(Some(records::decode_msg(guard.value())?.0))
}

/// Removes a message and its index entries.
fn remove_message(
    t: &mut Tables<'_>,
    account: &Account,
    namespace: u32,
    seq: u64,
    head: &MsgHead,
) -> Result<(), OpError> {
    t.mailboxes
        .remove(keys::msg(account, namespace, seq).as_slice())?;
    t.mailboxes
        .remove(keys::hash(account, namespace, &head.hash).as_slice())?;
    t.msg_expiry
        .remove(keys::msg_expiry(head.expires_ms, account, namespace, seq).as_slice())?;
    Ok(())
}

/// Deletes messages by hash; returns how many were stored (expired or not).
pub fn delete_messages(
    t: &mut Tables<'_>,
    account: &Account,
    namespace: u32,
    hashes: &[Hash],
) -> Result<u32, OpError> {
    let mut deleted = 0;
    for hash in hashes {
        let hk = keys::hash(account, namespace, hash);
        let Some(seq) = get_u64(&t.mailboxes, &hk, "hash index")? else {
            continue;
        };
        match load_msg_head(&t.mailboxes, account, namespace, seq)? {
            Some(head) => {
                remove_message(t, account, namespace, seq, &head)?;
                deleted += 1;
            }
            None => {
                t.mailboxes.remove(hk.as_slice())?;
            }
        }
    }
    Ok(deleted)
}

/// Collects up to `max` keys of an expiry index whose time (the first 8 bytes) is `<= now`.
fn expired_keys(index: &impl ReadableTable<B, ()>, now: i64, max: u32) -> Result<Vec<Vec<u8>>, OpError> {
    // The 8-byte time after `now` sorts after every key that starts with `now`.
    let range = match now.checked_add(1) {
        Some(next) => index.range(..keys::ord_i64(next).as_slice())?,
        None => index.range::<B>(..)?,
    };
    let mut out = Vec::new();
    for item in range.take(max as usize) {
        out.push(item?.0.value().to_vec());
    }
    Ok(out)
}

/// Removes up to `max` expired messages, subscriptions and pushed markers.
pub fn sweep_expired(t: &mut Tables<'_>, now: i64, max: u32) -> Result<u64, OpError> {
    let mut budget = max.min(SWEEP_CAP);
    let mut removed = 0u64;
    for k in expired_keys(&t.msg_expiry, now, budget)? {
        let (_, account, ns, seq) =
            keys::parse_msg_expiry(&k).ok_or_else(|| corrupt_key("message_expiry"))?;
        match load_msg_head(&t.mailboxes, &account, ns, seq)? {
            Some(head) => remove_message(t, &account, ns, seq, &head)?,
            None => {
                t.msg_expiry.remove(k.as_slice())?;
            }
        }
        removed += 1;
        budget -= 1;
    }
    for k in expired_keys(&t.sub_expiry, now, budget)? {
        let (_, ai, dev) = keys::parse_sub_expiry(&k).ok_or_else(|| corrupt_key("subscription_expiry"))?;
        t.sub_expiry.remove(k.as_slice())?;
        remove_subscription(t, &ai, &dev)?;
        removed += 1;
        budget -= 1;
    }
    for k in expired_keys(&t.pushed_expiry, now, budget)? {
        let (_, pk) = keys::parse_pushed_expiry(&k).ok_or_else(|| corrupt_key("pushed_expiry"))?;
        t.pushed_expiry.remove(k.as_slice())?;
        t.pushed.remove(pk.as_slice())?;
        removed += 1;
    }
    Ok(removed)
}

/// Adds or replaces a subscription; true when added.
pub fn upsert_subscription(t: &mut Tables<'_>, sub: &Subscription) -> Result<bool, OpError> {
    let sk = keys::sub(&sub.account_index, &sub.device_id);
    let old_expiry = match t.accounts.get(sk.as_slice())? {
        Some(g) => Some(records::sub_expires(g.value())?),
        None => None,
    };
    if let Some(exp) = old_expiry {
        t.sub_expiry
            .remove(keys::sub_expiry(exp, &sub.account_index, &sub.device_id).as_slice())?;
    }
    t.accounts
        .insert(sk.as_slice(), records::encode_sub(sub).as_slice())?;
    t.sub_expiry.insert(
        keys::sub_expiry(sub.expires_ms, &sub.account_index, &sub.device_id).as_slice(),
        (),
    )?;
    Ok(old_expiry.is_none())
}

/// Removes a subscription and its pending jobs if it expires by `expiring_by`; true when
/// it removed one. Inside the batch's write transaction, so no Subscribe can come between
/// the check and the removal.
pub fn remove_subscription_expiring_by(
    t: &mut Tables<'_>,
    account_index: &AccountIndex,
    device_id: &DeviceId,
    expiring_by: i64,
) -> Result<bool, OpError> {
    let expires = match t.accounts.get(keys::sub(account_index, device_id).as_slice())? {
        Some(g) => records::sub_expires(g.value())?,
        None => return Ok(false),
    };
    if expires > expiring_by {
        return Ok(false);
    }
    remove_subscription(t, account_index, device_id)
}

/// Removes a subscription and its pending jobs; true when it existed.
pub fn remove_subscription(
    t: &mut Tables<'_>,
    account_index: &AccountIndex,
    device_id: &DeviceId,
) -> Result<bool, OpError> {
    let sk = keys::sub(account_index, device_id);
    let old_expiry = match t.accounts.remove(sk.as_slice())? {
        Some(g) => Some(records::sub_expires(g.value())?),
        None => None,
    };
    if let Some(exp) = old_expiry {
        t.sub_expiry
            .remove(keys::sub_expiry(exp, account_index, device_id).as_slice())?;
    }
    let lo = keys::sub_job(account_index, device_id, 0);
    let hi = keys::sub_job(account_index, device_id, u64::MAX);
    let mut ids = Vec::new();
    for item in t.accounts.range(lo.as_slice()..=hi.as_slice())? {
        let k = item?.0;
        ids.push(keys::parse_sub_job_id(k.value()).ok_or_else(|| corrupt_key("push_accounts"))?);
    }
    for id in ids {
        t.accounts
            .remove(keys::sub_job(account_index, device_id, id).as_slice())?;
        remove_job(t, id)?;
    }
    Ok(old_expiry.is_some())
}

fn load_job(t: &Tables<'_>, id: u64) -> Result<Option<JobRecord>, OpError> {
    match t.jobs.get(id)? {
        Some(g) => Ok(Some(records::decode_job(id, g.value())?)),
        None => Ok(None),
    }
}

fn save_job(t: &mut Tables<'_>, rec: &JobRecord) -> Result<(), OpError> {
    t.jobs.insert(rec.id, records::encode_job(rec).as_slice())?;
    t.due.insert(keys::due(rec.visible_at(), rec.id).as_slice(), ())?;
    t.accounts.insert(
        keys::sub_job(&rec.account_index, &rec.device_id, rec.id).as_slice(),
        &[][..],
    )?;
    Ok(())
}

/// Removes a job and its index entries; returns it when it existed.
fn remove_job(t: &mut Tables<'_>, id: u64) -> Result<Option<JobRecord>, OpError> {
    let Some(rec) = load_job(t, id)? else {
        return Ok(None);
    };
    t.jobs.remove(id)?;
    t.due.remove(keys::due(rec.visible_at(), id).as_slice())?;
    t.accounts
        .remove(keys::sub_job(&rec.account_index, &rec.device_id, id).as_slice())?;
    Ok(Some(rec))
}

/// Up to `max` due jobs (`visible_at <= now`, oldest first) that `leases` lets a claim at
/// `now` take, with their sealed references opened; `lease` is left for the caller to
/// fill in. Also returns the ids of jobs whose reference does not open (sealed under
/// another relay key, or damaged): they can never be delivered, and the caller drops them.
///
/// Leased jobs keep their due entries, so the scan steps over the jobs in flight: a few
/// hundred index entries at most, against a durable write per claim before.
// A stage boundary of `tidings-bench push-profile`, which finds stages by symbol name.
#[inline(never)]
pub fn due_jobs(
    txn: &ReadTransaction,
    keys: &linkage::StoreKeys,
    leases: &Leases,
    now: i64,
    max: u32,
) -> Result<(Vec<PushJob>, Vec<u64>), OpError> {
    let due = txn.open_table(tables::DUE)?;
    let jobs = txn.open_table(tables::JOBS)?;
    let hi = keys::due(now, u64::MAX);
    let mut found = Vec::new();
    let mut unreadable = Vec::new();
    for item in due.range(..=hi.as_slice())? {
        if found.len() >= max as usize {
            break;
        }
        let k = item?.0;
        let (_, id) = keys::parse_due(k.value()).ok_or_else(|| corrupt_key("job_due"))?;
        if !leases.claimable(id, now) {
            continue;
        }
        let Some(v) = jobs.get(id)? else { continue };
        let rec = records::decode_job(id, v.value())?;
        match keys.open_job(&rec.account_index, &rec.sealed) {
            Ok(m) => found.push(job_of(rec, &m)),
            Err(e) => {
                tracing::warn!(job = id, "dropping an unreadable push job: {e}");
                unreadable.push(id);
            }
        }
    }
    Ok((found, unreadable))
}

fn job_of(rec: JobRecord, m: &JobMessage) -> PushJob {
    PushJob {
        id: rec.id,
        account: m.account,
        account_index: rec.account_index,
        device_id: rec.device_id,
        namespace: m.namespace,
        hash: m.hash,
        seq: m.seq,
        created_ms: m.created_ms,
        expires_ms: m.expires_ms,
        attempts: rec.attempts,
        enqueued_ms: rec.enqueued_ms,
        lease: Lease::default(),
    }
}

/// Removes a job that can never be delivered.
pub fn drop_job(t: &mut Tables<'_>, id: u64) -> Result<(), OpError> {
    remove_job(t, id)?;
    Ok(())
}

/// Records how a claimed job ended. `held` says whether `job.lease` was still the job's
/// current claim when the caller checked its in-memory lease (see [`super::leases`]);
/// it travels in the log, so a replay does what the live write did.
// A stage boundary of `tidings-bench push-profile`, which finds stages by symbol name.
#[inline(never)]
pub fn finish_job(t: &mut Tables<'_>, job: &PushJob, outcome: JobOutcome, held: bool) -> Result<(), OpError> {
    match outcome {
        JobOutcome::Delivered => {
            if held {
                remove_job(t, job.id)?;
            }
            let pk = t
                .keys
                .pushed_marker(&job.account_index, &job.device_id, &job.hash);
            mark_pushed(t, &pk, job.expires_ms)?;
        }
        JobOutcome::TokenDead => {
            // The token is dead whoever holds the job: the subscription and all its jobs go.
            remove_job(t, job.id)?;
            remove_subscription(t, &job.account_index, &job.device_id)?;
        }
        JobOutcome::Retry { not_before_ms } => {
            if held && let Some(mut rec) = remove_job(t, job.id)? {
                rec.not_before_ms = not_before_ms;
                rec.lease_until_ms = i64::MIN;
                rec.attempts = rec.attempts.saturating_add(1);
                save_job(t, &rec)?;
            }
        }
        JobOutcome::Dropped => {
            if held {
                remove_job(t, job.id)?;
            }
        }
    }
    if !held {
        tracing::debug!(
            job = job.id,
            ?outcome,
            "push job no longer held under this claim (finished, or claimed again after the lease ran out); the job is left as it is"
        );
    }
    Ok(())
}

/// A write that proves the database takes writes.
pub fn probe(t: &mut Tables<'_>) -> Result<(), OpError> {
    t.next_counter(META_PROBE)?;
    Ok(())
}

/// Unexpired messages after `after_seq`, ascending, at most `limit`.
pub fn get_messages(
    txn: &ReadTransaction,
    account: &Account,
    namespace: u32,
    after_seq: u64,
    limit: u32,
    now: i64,
) -> Result<Page, OpError> {
    let mut page = Page::default();
    let Some(first) = after_seq.checked_add(1) else {
        return Ok(page);
    };
    let messages = txn.open_table(tables::MAILBOXES)?;
    let lo = keys::msg(account, namespace, first);
    let hi = keys::msg(account, namespace, u64::MAX);
    for item in messages.range(lo.as_slice()..=hi.as_slice())? {
        let (k, v) = item?;
        let (head, data) = records::decode_msg(v.value())?;
        if head.expires_ms <= now {
            continue;
        }
        if page.messages.len() >= limit as usize {
            page.more = true;
            break;
        }
        let (_, _, seq) = keys::parse_msg(k.value()).ok_or_else(|| corrupt_key("mailboxes"))?;
        page.messages.push(StoredMessage {
            hash: head.hash,
            seq,
            data: data.to_vec(),
            created_ms: head.created_ms,
            expires_ms: head.expires_ms,
        });
    }
    Ok(page)
}

/// How many seqs the mailbox's stored messages span (see `Store::seq_span`): two lookups.
pub fn seq_span(txn: &ReadTransaction, account: &Account, namespace: u32) -> Result<u64, OpError> {
    let messages = txn.open_table(tables::MAILBOXES)?;
    let lo = keys::msg(account, namespace, 0);
    let hi = keys::msg(account, namespace, u64::MAX);
    let mut range = messages.range(lo.as_slice()..=hi.as_slice())?;
    let seq_of = |k: &[u8]| -> Result<u64, OpError> {
        let (_, _, seq) = keys::parse_msg(k).ok_or_else(|| corrupt_key("mailboxes"))?;
        Ok(seq)
    };
    let Some(first) = range.next() else {
        return Ok(0);
    };
    let first = seq_of(first?.0.value())?;
    let last = match range.next_back() {
        Some(item) => seq_of(item?.0.value())?,
        None => first,
    };
    Ok(last.saturating_sub(first) + 1)
}

/// Unexpired messages of a mailbox after `after_seq`, up to `at_most`: decodes only each
/// record's head.
pub fn count_messages(
    txn: &ReadTransaction,
    account: &Account,
    namespace: u32,
    after_seq: u64,
    now: i64,
    at_most: u32,
) -> Result<u32, OpError> {
    let Some(first) = after_seq.checked_add(1) else {
        return Ok(0);
    };
    let messages = txn.open_table(tables::MAILBOXES)?;
    let lo = keys::msg(account, namespace, first);
    let hi = keys::msg(account, namespace, u64::MAX);
    let mut n = 0u32;
    for item in messages.range(lo.as_slice()..=hi.as_slice())? {
        if n >= at_most {
            break;
        }
        let (_, v) = item?;
        let (head, _) = records::decode_msg(v.value())?;
        if head.expires_ms > now {
            n += 1;
        }
    }
    Ok(n)
}

/// One message by hash, expired or not.
pub fn get_message(
    txn: &ReadTransaction,
    account: &Account,
    namespace: u32,
    hash: &Hash,
) -> Result<Option<StoredMessage>, OpError> {
    let mailboxes = txn.open_table(tables::MAILBOXES)?;
    let Some(seq) = get_u64(&mailboxes, &keys::hash(account, namespace, hash), "hash index")? else {
        return Ok(None);
    };
    let Some(v) = mailboxes.get(keys::msg(account, namespace, seq).as_slice())? else {
        return Ok(None);
    };
    let (head, data) = records::decode_msg(v.value())?;
    Ok(Some(StoredMessage {
        hash: head.hash,
        seq,
        data: data.to_vec(),
        created_ms: head.created_ms,
        expires_ms: head.expires_ms,
    }))
}

/// One subscription, expired or not.
pub fn get_subscription(
    txn: &ReadTransaction,
    account_index: &AccountIndex,
    device_id: &DeviceId,
) -> Result<Option<Subscription>, OpError> {
    let subs = txn.open_table(tables::ACCOUNTS)?;
    let Some(v) = subs.get(keys::sub(account_index, device_id).as_slice())? else {
        return Ok(None);
    };
    Ok(Some(records::decode_sub(*account_index, *device_id, v.value())?))
}

/// Outbox depth and the enqueue time of the oldest job (the lowest id: ids follow enqueue order).
pub fn outbox_stats(txn: &ReadTransaction) -> Result<OutboxStats, OpError> {
    let jobs = txn.open_table(tables::JOBS)?;
    let depth = jobs.len()?;
    let oldest_enqueued_ms = match jobs.first()? {
        Some((k, v)) => Some(records::decode_job(k.value(), v.value())?.enqueued_ms),
        None => None,
    };
    Ok(OutboxStats {
        depth,
        oldest_enqueued_ms,
    })
}
