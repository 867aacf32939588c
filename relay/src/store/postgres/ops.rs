//! What each store operation does in SQL, on its own.
//!
//! Reads, claims, deletes and sweeps are one statement each in autocommit. Stores,
//! Subscribes and push outcomes normally go through the group-commit writer
//! ([`super::writer`], [`super::batch`]); the single-write versions here are what it falls
//! back to when a batch fails, so that each caller gets its own answer. A Store on its own
//! needs its seq, message, push jobs and NOTIFY in one transaction. Statements are
//! prepared once per pooled connection (`prepare_cached`). Expiry is `expires_ms <= now`,
//! as in redb.

use deadpool_postgres::{Client, GenericClient, Transaction};
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, ToSql};

use super::errors::{corrupt, db_error};
use super::listener;
use crate::store::{
    Account, AccountIndex, DeviceId, Hash, JobOutcome, Lease, NewMessage, OutboxStats, Page, PushInputs,
    PushJob, PutOutcome, StoreError, StoredMessage, Subscription,
    linkage::{JobMessage, StoreKeys},
};

/// The most entries one sweep call removes, whatever the caller asks (as in redb).
pub const SWEEP_CAP: u32 = 10_000;

/// How often a Store starts over when a concurrent Store of the same message interferes.
const PUT_ATTEMPTS: usize = 3;

type Result<T> = std::result::Result<T, StoreError>;

/// Prepares (or reuses) a statement and runs it, returning its rows.
async fn query(c: &impl GenericClient, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
    let stmt = c.prepare_cached(sql).await.map_err(db_error)?;
    c.query(&stmt, params).await.map_err(db_error)
}

async fn query_opt(c: &impl GenericClient, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>> {
    let stmt = c.prepare_cached(sql).await.map_err(db_error)?;
    c.query_opt(&stmt, params).await.map_err(db_error)
}

async fn query_one(c: &impl GenericClient, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row> {
    let stmt = c.prepare_cached(sql).await.map_err(db_error)?;
    c.query_one(&stmt, params).await.map_err(db_error)
}

async fn execute(c: &impl GenericClient, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
    let stmt = c.prepare_cached(sql).await.map_err(db_error)?;
    c.execute(&stmt, params).await.map_err(db_error)
}

/// Column `idx` of a row; a type this relay did not write is corruption, not a panic.
pub(super) fn col<'a, T: FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T> {
    row.try_get(idx)
        .map_err(|e| StoreError::corrupt(format!("PostgreSQL: unexpected column {idx}: {e}")).because(e))
}

fn bytes<const N: usize>(row: &Row, idx: usize, what: &str) -> Result<[u8; N]> {
    let v: &[u8] = col(row, idx)?;
    v.try_into().map_err(|_| corrupt(what))
}

fn u64_of(v: i64, what: &str) -> Result<u64> {
    u64::try_from(v).map_err(|_| corrupt(what))
}

fn u32_of(v: i64, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| corrupt(what))
}

/// A seq as the database stores it. A seq above `i64::MAX` was never handed out.
fn seq_param(seq: u64) -> Option<i64> {
    i64::try_from(seq).ok()
}

const BUMP_COUNTER: &str = "INSERT INTO mailbox_counters (account, namespace, last_seq) VALUES ($1, $2, 1)
     ON CONFLICT (account, namespace) DO UPDATE SET last_seq = mailbox_counters.last_seq + 1
     RETURNING last_seq";

const INSERT_MESSAGE: &str =
    "INSERT INTO messages (account, namespace, seq, hash, data, created_ms, expires_ms)
     VALUES ($1, $2, $3, $4, $5, $6, $7)
     ON CONFLICT (account, namespace, hash) DO NOTHING
     RETURNING seq";

/// Marks (device, hash) for every live subscription of the account that wants the
/// namespace and never had this hash, and enqueues a job for each one newly marked.
/// `$4` is the message's keyed tag: a device's marker is `sha256(tag ‖ device_id)` (see
/// `store::linkage`); `$5` the sealed message reference every job of it carries.
const FAN_OUT: &str = "WITH targets AS (
         SELECT device_id FROM subscriptions
         WHERE account_index = $1 AND expires_ms > $6 AND $2 = ANY(namespaces)
     ), marked AS (
         INSERT INTO pushed (marker, expires_ms)
         SELECT sha256($4::bytea || device_id), $3 FROM targets
         ON CONFLICT DO NOTHING
         RETURNING marker
     ), jobs AS (
         INSERT INTO push_jobs (account_index, device_id, sealed, enqueued_ms, not_before_ms)
         SELECT $1, t.device_id, $5, $6, $6 FROM targets t
         WHERE sha256($4::bytea || t.device_id) IN (SELECT marker FROM marked)
         ORDER BY t.device_id
         RETURNING 1
     )
     SELECT count(*) FROM jobs";

const NOTIFY: &str = "SELECT pg_notify($1, $2)";

const FIND_BY_HASH: &str =
    "SELECT seq, expires_ms FROM messages WHERE account = $1 AND namespace = $2 AND hash = $3";

const DELETE_EXPIRED_ORIGINAL: &str =
    "DELETE FROM messages WHERE account = $1 AND namespace = $2 AND hash = $3 AND expires_ms <= $4";

/// Stores a message (see [`crate::store::Store::put_message`]).
///
/// The counter row's lock, taken first, serialises the Stores of one mailbox across all
/// nodes until commit, so seqs become visible in order and a concurrent Store of the same
/// message has committed (or rolled back) before this one looks for it.
pub async fn put_message(client: &mut Client, keys: &StoreKeys, msg: &NewMessage) -> Result<PutOutcome> {
    let mut replace_expired = false;
    for _ in 0..PUT_ATTEMPTS {
        let tx = client.transaction().await.map_err(db_error)?;
        match try_put(&tx, keys, msg, replace_expired).await? {
            Attempt::Stored(outcome) => {
                tx.commit().await.map_err(db_error)?;
                return Ok(outcome);
            }
            Attempt::Duplicate(outcome) => {
                // Nothing of this attempt may stay: not the seq, not the jobs.
                tx.rollback().await.map_err(db_error)?;
                return Ok(outcome);
            }
            Attempt::Again => {
                tx.rollback().await.map_err(db_error)?;
                replace_expired = true;
            }
        }
    }
    Err(StoreError::unavailable(
        "a message kept changing under concurrent Stores; try again",
    ))
}

enum Attempt {
    Stored(PutOutcome),
    Duplicate(PutOutcome),
    /// The original is expired (to be replaced) or was deleted meanwhile: start over.
    Again,
}

async fn try_put(
    tx: &Transaction<'_>,
    keys: &StoreKeys,
    msg: &NewMessage,
    replace_expired: bool,
) -> Result<Attempt> {
    let now = msg.created_ms;
    let namespace = i64::from(msg.namespace);
    let (account, index, hash) = (&msg.account[..], &msg.account_index[..], &msg.hash[..]);
    let seq: i64 = col(&query_one(tx, BUMP_COUNTER, &[&account, &namespace]).await?, 0)?;
    if replace_expired {
        execute(tx, DELETE_EXPIRED_ORIGINAL, &[&account, &namespace, &hash, &now]).await?;
    }
    let (insert, fan_out, notify) = (
        tx.prepare_cached(INSERT_MESSAGE).await.map_err(db_error)?,
        tx.prepare_cached(FAN_OUT).await.map_err(db_error)?,
        tx.prepare_cached(NOTIFY).await.map_err(db_error)?,
    );
    let arrival = listener::payload(&msg.account, msg.namespace);
    // Sent back to back in one round trip; they run in this order. Should the insert
    // find the message stored already, the jobs and the notification roll back with it.
    let insert_params: [&(dyn ToSql + Sync); 7] = [
        &account,
        &namespace,
        &seq,
        &hash,
        &msg.data,
        &msg.created_ms,
        &msg.expires_ms,
    ];
    let tag = keys.message_tag(&msg.account_index, &msg.hash);
    let sealed = keys.seal_job(
        &msg.account_index,
        &JobMessage {
            account: msg.account,
            namespace: msg.namespace,
            hash: msg.hash,
            seq: u64_of(seq, "mailbox counter")?,
            created_ms: msg.created_ms,
            expires_ms: msg.expires_ms,
        },
    );
    let fan_out_params: [&(dyn ToSql + Sync); 6] =
        [&index, &namespace, &msg.expires_ms, &&tag[..], &sealed, &now];
    let notify_params: [&(dyn ToSql + Sync); 2] = [&listener::CHANNEL, &arrival];
    let (inserted, jobs, _) = tokio::try_join!(
        tx.query_opt(&insert, &insert_params),
        tx.query_one(&fan_out, &fan_out_params),
        tx.execute(&notify, &notify_params),
    )
    .map_err(db_error)?;
    if inserted.is_some() {
        let jobs: i64 = col(&jobs, 0)?;
        return Ok(Attempt::Stored(PutOutcome {
            seq: u64_of(seq, "mailbox counter")?,
            expires_ms: msg.expires_ms,
            duplicate: false,
            jobs_enqueued: u32::try_from(jobs).unwrap_or(u32::MAX),
        }));
    }
    let Some(original) = query_opt(tx, FIND_BY_HASH, &[&account, &namespace, &hash]).await? else {
        return Ok(Attempt::Again);
    };
    let (orig_seq, orig_expires): (i64, i64) = (col(&original, 0)?, col(&original, 1)?);
    if orig_expires <= now {
        return Ok(Attempt::Again);
    }
    Ok(Attempt::Duplicate(PutOutcome {
        seq: u64_of(orig_seq, "message seq")?,
        expires_ms: orig_expires,
        duplicate: true,
        jobs_enqueued: 0,
    }))
}

/// A message row selected as `seq, hash, data, created_ms, expires_ms`.
fn message_from(row: &Row) -> Result<StoredMessage> {
    message_at(row, 0)
}

/// A message selected as `seq, hash, data, created_ms, expires_ms` from column `at`.
fn message_at(row: &Row, at: usize) -> Result<StoredMessage> {
    Ok(StoredMessage {
        seq: u64_of(col(row, at)?, "message seq")?,
        hash: bytes(row, at + 1, "message hash")?,
        data: col(row, at + 2)?,
        created_ms: col(row, at + 3)?,
        expires_ms: col(row, at + 4)?,
    })
}

/// Unexpired messages after `after_seq`, ascending, at most `limit`.
pub async fn get_messages(
    client: &Client,
    account: &Account,
    namespace: u32,
    after_seq: u64,
    limit: u32,
    now: i64,
) -> Result<Page> {
    let Some(after) = seq_param(after_seq) else {
        return Ok(Page::default());
    };
    // One row more than asked tells whether more remain.
    let fetch = i64::from(limit) + 1;
    let rows = query(
        client,
        "SELECT seq, hash, data, created_ms, expires_ms FROM messages
         WHERE account = $1 AND namespace = $2 AND seq > $3 AND expires_ms > $4
         ORDER BY seq LIMIT $5",
        &[&&account[..], &i64::from(namespace), &after, &now, &fetch],
    )
    .await?;
    let more = rows.len() > limit as usize;
    let messages = rows
        .iter()
        .take(limit as usize)
        .map(message_from)
        .collect::<Result<Vec<_>>>()?;
    Ok(Page { messages, more })
}

/// How many seqs the mailbox's stored messages span (see `Store::seq_span`).
pub async fn seq_span(client: &Client, account: &Account, namespace: u32) -> Result<u64> {
    // min and max each walk the primary key (account, namespace, seq) from one end.
    let row = query_one(
        client,
        "SELECT COALESCE(max(seq) - min(seq) + 1, 0) FROM messages
           WHERE account = $1 AND namespace = $2",
        &[&&account[..], &i64::from(namespace)],
    )
    .await?;
    let n: i64 = col(&row, 0)?;
    u64::try_from(n).map_err(|_| corrupt("message seq"))
}

/// Unexpired messages of a mailbox after `after_seq`, up to `at_most` (the LIMIT stops the
/// primary key scan there; large `data` lives out of line, so the rows read stay small).
pub async fn count_messages(
    client: &Client,
    account: &Account,
    namespace: u32,
    after_seq: u64,
    now: i64,
    at_most: u32,
) -> Result<u32> {
    let Some(after) = seq_param(after_seq) else {
        return Ok(0);
    };
    let row = query_one(
        client,
        "SELECT count(*) FROM (SELECT 1 FROM messages
           WHERE account = $1 AND namespace = $2 AND seq > $3 AND expires_ms > $4 LIMIT $5) AS m",
        &[
            &&account[..],
            &i64::from(namespace),
            &after,
            &now,
            &i64::from(at_most),
        ],
    )
    .await?;
    let n: i64 = col(&row, 0)?;
    Ok(u32::try_from(n).unwrap_or(at_most))
}

/// One message by hash, expired or not.
pub async fn get_message(
    client: &Client,
    account: &Account,
    namespace: u32,
    hash: &Hash,
) -> Result<Option<StoredMessage>> {
    query_opt(
        client,
        "SELECT seq, hash, data, created_ms, expires_ms FROM messages
         WHERE account = $1 AND namespace = $2 AND hash = $3",
        &[&&account[..], &i64::from(namespace), &&hash[..]],
    )
    .await?
    .as_ref()
    .map(message_from)
    .transpose()
}

/// Deletes messages by hash; returns how many were stored.
pub async fn delete_messages(
    client: &Client,
    account: &Account,
    namespace: u32,
    hashes: &[Hash],
) -> Result<u32> {
    if hashes.is_empty() {
        return Ok(0);
    }
    let hashes: Vec<&[u8]> = hashes.iter().map(|h| &h[..]).collect();
    let n = execute(
        client,
        "DELETE FROM messages WHERE account = $1 AND namespace = $2 AND hash = ANY($3)",
        &[&&account[..], &i64::from(namespace), &hashes],
    )
    .await?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

/// Expired messages, by primary key, skipping rows another node is sweeping right now.
const SWEEP_MESSAGES: &str = "WITH victims AS (
         SELECT account, namespace, seq FROM messages WHERE expires_ms <= $1
         ORDER BY expires_ms LIMIT $2 FOR UPDATE SKIP LOCKED
     )
     DELETE FROM messages m USING victims v
     WHERE m.account = v.account AND m.namespace = v.namespace AND m.seq = v.seq";

/// Expired subscriptions and their pending jobs.
const SWEEP_SUBSCRIPTIONS: &str = "WITH victims AS (
         SELECT account_index, device_id FROM subscriptions WHERE expires_ms <= $1
         ORDER BY expires_ms LIMIT $2 FOR UPDATE SKIP LOCKED
     ), gone AS (
         DELETE FROM subscriptions s USING victims v
         WHERE s.account_index = v.account_index AND s.device_id = v.device_id
         RETURNING s.account_index, s.device_id
     ), jobs AS (
         DELETE FROM push_jobs j USING gone
         WHERE j.account_index = gone.account_index AND j.device_id = gone.device_id
     )
     SELECT count(*) FROM gone";

/// Pushed markers of messages that have expired.
const SWEEP_PUSHED: &str = "WITH victims AS (
         SELECT marker FROM pushed WHERE expires_ms <= $1
         ORDER BY expires_ms LIMIT $2 FOR UPDATE SKIP LOCKED
     )
     DELETE FROM pushed p USING victims v WHERE p.marker = v.marker";

/// Removes up to `max` expired entries, each kind in its own short statement.
pub async fn sweep_expired(client: &Client, now: i64, max: u32) -> Result<u64> {
    let mut budget = i64::from(max.min(SWEEP_CAP));
    let mut removed = 0u64;
    if budget > 0 {
        let n = execute(client, SWEEP_MESSAGES, &[&now, &budget]).await?;
        removed += n;
        budget -= i64::try_from(n).unwrap_or(budget);
    }
    if budget > 0 {
        let n: i64 = col(
            &query_one(client, SWEEP_SUBSCRIPTIONS, &[&now, &budget]).await?,
            0,
        )?;
        removed += u64::try_from(n).unwrap_or(0);
        budget -= n;
    }
    if budget > 0 {
        removed += execute(client, SWEEP_PUSHED, &[&now, &budget]).await?;
    }
    Ok(removed)
}

/// Adds or replaces a subscription; true when added.
pub async fn upsert_subscription(client: &Client, sub: &Subscription) -> Result<bool> {
    let namespaces: Vec<i64> = sub.namespaces.iter().map(|&n| i64::from(n)).collect();
    // `xmax = 0` only on a freshly inserted row version; an update through ON CONFLICT
    // leaves the updating transaction's id there.
    let row = query_one(
        client,
        "INSERT INTO subscriptions (account_index, device_id, namespaces, want_data, sealed, expires_ms)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (account_index, device_id) DO UPDATE SET
             namespaces = EXCLUDED.namespaces, want_data = EXCLUDED.want_data,
             sealed = EXCLUDED.sealed, expires_ms = EXCLUDED.expires_ms
         RETURNING (xmax = 0) AS inserted",
        &[
            &&sub.account_index[..],
            &&sub.device_id[..],
            &namespaces,
            &sub.want_data,
            &sub.sealed,
            &sub.expires_ms,
        ],
    )
    .await?;
    col(&row, 0)
}

/// Removes a subscription and its pending jobs if it expires by `expiring_by`; true when
/// it removed one. One statement: a DELETE that meets a row a concurrent Subscribe is
/// updating waits for it and re-checks `expires_ms` on the new version, and the jobs go
/// only with the subscription.
pub async fn remove_subscription(
    client: &Client,
    account_index: &AccountIndex,
    device_id: &DeviceId,
    expiring_by: i64,
) -> Result<bool> {
    let row = query_one(
        client,
        "WITH gone AS (
             DELETE FROM subscriptions
             WHERE account_index = $1 AND device_id = $2 AND expires_ms <= $3 RETURNING 1
         ), jobs AS (
             DELETE FROM push_jobs WHERE account_index = $1 AND device_id = $2
               AND EXISTS (SELECT 1 FROM gone)
         )
         SELECT count(*) FROM gone",
        &[&&account_index[..], &&device_id[..], &expiring_by],
    )
    .await?;
    Ok(col::<i64>(&row, 0)? > 0)
}

/// One subscription, expired or not.
pub async fn get_subscription(
    client: &Client,
    account_index: &AccountIndex,
    device_id: &DeviceId,
) -> Result<Option<Subscription>> {
    query_opt(
        client,
        "SELECT namespaces, want_data, sealed, expires_ms FROM subscriptions
         WHERE account_index = $1 AND device_id = $2",
        &[&&account_index[..], &&device_id[..]],
    )
    .await?
    .map(|row| subscription_from(&row, 0, account_index, device_id))
    .transpose()
}

/// A subscription selected as `namespaces, want_data, sealed, expires_ms` from column `at`.
fn subscription_from(
    row: &Row,
    at: usize,
    account_index: &AccountIndex,
    device_id: &DeviceId,
) -> Result<Subscription> {
    let namespaces: Vec<i64> = col(row, at)?;
    Ok(Subscription {
        account_index: *account_index,
        device_id: *device_id,
        namespaces: namespaces
            .into_iter()
            .map(|n| u32_of(n, "subscription namespace"))
            .collect::<Result<_>>()?,
        want_data: col(row, at + 1)?,
        sealed: col(row, at + 2)?,
        expires_ms: col(row, at + 3)?,
    })
}

/// What every job of a claimed batch needs, in one statement: one row per job, in order,
/// its subscription and message joined where they still exist (by `LATERAL` lookups, which
/// the planner cannot turn into a hash join over a whole table).
const PUSH_INPUTS: &str = "SELECT s.namespaces, s.want_data, s.sealed, s.expires_ms,
            m.seq, m.hash, m.data, m.created_ms, m.expires_ms
     FROM unnest($1::bytea[], $2::bytea[], $3::bytea[], $4::bigint[], $5::bytea[])
         WITH ORDINALITY AS j(account_index, device_id, account, namespace, hash, n)
     LEFT JOIN LATERAL (
         SELECT namespaces, want_data, sealed, expires_ms FROM subscriptions
         WHERE account_index = j.account_index AND device_id = j.device_id LIMIT 1
     ) AS s ON true
     LEFT JOIN LATERAL (
         SELECT seq, hash, data, created_ms, expires_ms FROM messages
         WHERE account = j.account AND namespace = j.namespace AND hash = j.hash LIMIT 1
     ) AS m ON true
     ORDER BY j.n";

/// Loads the subscription and message of every job (see `Store::push_inputs`).
pub async fn push_inputs(client: &Client, jobs: &[PushJob]) -> Result<Vec<PushInputs>> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let index: Vec<&[u8]> = jobs.iter().map(|j| &j.account_index[..]).collect();
    let device: Vec<&[u8]> = jobs.iter().map(|j| &j.device_id[..]).collect();
    let account: Vec<&[u8]> = jobs.iter().map(|j| &j.account[..]).collect();
    let namespace: Vec<i64> = jobs.iter().map(|j| i64::from(j.namespace)).collect();
    let hash: Vec<&[u8]> = jobs.iter().map(|j| &j.hash[..]).collect();
    let rows = query(
        client,
        PUSH_INPUTS,
        &[&index, &device, &account, &namespace, &hash],
    )
    .await?;
    if rows.len() != jobs.len() {
        return Err(corrupt("push inputs answer"));
    }
    jobs.iter()
        .zip(&rows)
        .map(|(job, row)| {
            let subscription = match col::<Option<Vec<i64>>>(row, 0)? {
                Some(_) => Some(subscription_from(row, 0, &job.account_index, &job.device_id)?),
                None => None,
            };
            let message = match col::<Option<i64>>(row, 4)? {
                Some(_) => Some(message_at(row, 4)?),
                None => None,
            };
            Ok(PushInputs {
                subscription,
                message,
            })
        })
        .collect()
}

/// Leases due jobs; a job held by a live lease is locked or not due, so two nodes never
/// claim the same one, and neither waits for the other.
const CLAIM: &str = "WITH due AS (
         SELECT id FROM push_jobs WHERE due_ms <= $1
         ORDER BY due_ms, id LIMIT $2 FOR UPDATE SKIP LOCKED
     )
     UPDATE push_jobs j SET lease_owner = $3, lease_until_ms = $4
     FROM due WHERE j.id = due.id
     RETURNING j.id, j.account_index, j.device_id, j.sealed, j.attempts, j.enqueued_ms,
               j.lease_owner, j.lease_until_ms";

/// Leases up to `max` due jobs to `node`.
pub async fn claim_jobs(
    client: &Client,
    keys: &StoreKeys,
    node: &str,
    now: i64,
    lease_ms: i64,
    max: u32,
) -> Result<Vec<PushJob>> {
    if max == 0 {
        return Ok(Vec::new());
    }
    let until = now.saturating_add(lease_ms.max(0));
    let rows = query(client, CLAIM, &[&now, &i64::from(max), &node, &until]).await?;
    let mut jobs = Vec::with_capacity(rows.len());
    let mut unreadable = Vec::new();
    for row in &rows {
        match job_from(keys, row) {
            Ok(job) => jobs.push(job),
            Err(e @ StoreError::Corrupt { .. }) => {
                // Sealed under another relay key (or damaged): it can never be delivered.
                let id: i64 = col(row, 0)?;
                tracing::warn!(job = id, "dropping an unreadable push job: {e}");
                unreadable.push(id);
            }
            Err(e) => return Err(e),
        }
    }
    if !unreadable.is_empty() {
        execute(client, "DELETE FROM push_jobs WHERE id = ANY($1)", &[&unreadable]).await?;
    }
    jobs.sort_by_key(|j| j.id);
    Ok(jobs)
}

/// A claimed job row, its message reference opened.
fn job_from(keys: &StoreKeys, row: &Row) -> Result<PushJob> {
    let account_index = AccountIndex(bytes(row, 1, "job account index")?);
    let sealed: &[u8] = col(row, 3)?;
    let m = keys.open_job(&account_index, sealed)?;
    Ok(PushJob {
        id: u64_of(col(row, 0)?, "job id")?,
        account: m.account,
        account_index,
        device_id: bytes(row, 2, "job device id")?,
        namespace: m.namespace,
        hash: m.hash,
        seq: m.seq,
        created_ms: m.created_ms,
        expires_ms: m.expires_ms,
        attempts: u32_of(col(row, 4)?, "job attempts")?,
        enqueued_ms: col(row, 5)?,
        lease: Lease {
            owner: col(row, 6)?,
            until_ms: col(row, 7)?,
        },
    })
}

/// A push outcome to record: what of its job and claim the SQL needs.
#[derive(Debug, Clone)]
pub struct Finish {
    pub id: i64,
    pub account_index: AccountIndex,
    pub device_id: DeviceId,
    /// The job's pushed marker (see `store::linkage`).
    pub marker: [u8; 32],
    /// The message's expiry, which the marker keeps.
    pub expires_ms: i64,
    pub owner: String,
    pub until_ms: i64,
    pub outcome: JobOutcome,
}

impl Finish {
    /// The outcome of `job` under its claim.
    pub fn new(keys: &StoreKeys, job: &PushJob, outcome: JobOutcome) -> Result<Finish> {
        Ok(Finish {
            id: i64::try_from(job.id).map_err(|_| corrupt("job id"))?,
            account_index: job.account_index,
            device_id: job.device_id,
            marker: keys.pushed_marker(&job.account_index, &job.device_id, &job.hash),
            expires_ms: job.expires_ms,
            owner: job.lease.owner.clone(),
            until_ms: job.lease.until_ms,
            outcome,
        })
    }

    /// Says (at debug) that the job was no longer held under this claim.
    pub fn log_not_held(&self) {
        tracing::debug!(
            job = self.id,
            outcome = ?self.outcome,
            "push job no longer held under this claim (finished, or claimed again after the lease ran out); the job is left as it is"
        );
    }
}

/// The token is dead whoever holds the job: the subscription and all its jobs go (a
/// current holder's finish then matches nothing). Answers whether the job was still held
/// under the claim (`$4`, `$5`).
pub(super) const FINISH_TOKEN_DEAD: &str =
    "WITH dead AS (DELETE FROM subscriptions WHERE account_index = $2 AND device_id = $3),
     gone AS (
         DELETE FROM push_jobs WHERE id = $1 OR (account_index = $2 AND device_id = $3)
         RETURNING id, lease_owner, lease_until_ms
     )
     SELECT count(*) FROM gone WHERE id = $1 AND lease_owner = $4 AND lease_until_ms = $5";

/// Records how a claimed job ended, if its claim is still the job's current one (see
/// [`crate::store::Store::finish_job`]). Every statement touches the job row only under
/// `lease_owner` and `lease_until_ms` as claimed; a node that claimed the job since has
/// moved `lease_until_ms` on, so a late finish of a node that lost its lease matches no
/// row. `Delivered` still remembers (device, hash) and `TokenDead` still removes the
/// subscription and its jobs.
pub async fn finish_job(client: &Client, f: &Finish) -> Result<()> {
    let (index, device) = (&f.account_index[..], &f.device_id[..]);
    let (id, owner, until) = (&f.id, &f.owner, &f.until_ms);
    let finished = match f.outcome {
        JobOutcome::Delivered => {
            let row = query_one(
                client,
                "WITH done AS (
                     DELETE FROM push_jobs WHERE id = $1 AND lease_owner = $4 AND lease_until_ms = $5
                     RETURNING 1
                 ), marked AS (
                     INSERT INTO pushed (marker, expires_ms) VALUES ($2, $3)
                     ON CONFLICT DO NOTHING
                 )
                 SELECT count(*) FROM done",
                &[id, &&f.marker[..], &f.expires_ms, owner, until],
            )
            .await?;
            col::<i64>(&row, 0)?
        }
        JobOutcome::TokenDead => {
            let row = query_one(client, FINISH_TOKEN_DEAD, &[id, &index, &device, owner, until]).await?;
            col::<i64>(&row, 0)?
        }
        JobOutcome::Retry { not_before_ms } => {
            let n = execute(
                client,
                "UPDATE push_jobs SET not_before_ms = $2, lease_owner = NULL, lease_until_ms = NULL,
                     attempts = LEAST(attempts + 1, 4294967295)
                 WHERE id = $1 AND lease_owner = $3 AND lease_until_ms = $4",
                &[id, &not_before_ms, owner, until],
            )
            .await?;
            i64::try_from(n).unwrap_or(i64::MAX)
        }
        JobOutcome::Dropped => {
            let n = execute(
                client,
                "DELETE FROM push_jobs WHERE id = $1 AND lease_owner = $2 AND lease_until_ms = $3",
                &[id, owner, until],
            )
            .await?;
            i64::try_from(n).unwrap_or(i64::MAX)
        }
    };
    if finished == 0 {
        f.log_not_held();
    }
    Ok(())
}

/// Outbox depth and the enqueue time of the oldest job (the lowest id).
pub async fn outbox_stats(client: &Client) -> Result<OutboxStats> {
    let row = query_one(
        client,
        "SELECT count(*), (SELECT enqueued_ms FROM push_jobs ORDER BY id LIMIT 1) FROM push_jobs",
        &[],
    )
    .await?;
    Ok(OutboxStats {
        depth: u64_of(col(&row, 0)?, "outbox depth")?,
        oldest_enqueued_ms: col(&row, 1)?,
    })
}

/// A write that proves the database takes writes (not a standby, not read-only).
pub async fn probe(client: &Client) -> Result<()> {
    execute(
        client,
        "INSERT INTO store_probe (id, writes) VALUES (1, 1)
         ON CONFLICT (id) DO UPDATE SET writes = store_probe.writes + 1",
        &[],
    )
    .await?;
    Ok(())
}
