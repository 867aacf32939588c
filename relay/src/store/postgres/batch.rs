//! One batch of writes ([`super::writer`]) as one transaction of multi-row statements.
//!
//! Two round trips, each a pipeline of statements sent back to back on one connection:
//!
//! 1. `BEGIN`; bump the counter of every mailbox the batch stores into by its number of
//!    Stores (one statement, the mailboxes in one fixed order, so that two batches never
//!    wait for each other's counters in a cycle); look up every Store's hash, which runs
//!    once the counters' row locks are granted and so sees a concurrent Store of the same
//!    message, which held the same lock until it committed; record the push outcomes;
//!    upsert the subscriptions. A batch without Stores commits here.
//! 2. Give the seqs to the new messages in queue order; delete the expired originals they
//!    replace; give the seqs of duplicates back to the counter (nobody saw them: the
//!    counter is still locked); insert the messages with their pushed markers and push
//!    jobs (one statement); NOTIFY each mailbox once; `COMMIT`.
//!
//! The counter rows stay locked until COMMIT, so per mailbox, seqs become visible in order
//! across all nodes, as they did when every Store was its own transaction. Every
//! statement takes its rows from `unnest` over array parameters, so a batch costs the same
//! number of statements whatever its size.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;

use deadpool_postgres::{Client, Object};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};

use super::errors::{corrupt, db_error};
use super::listener;
use super::ops::{Finish, col};
use crate::store::{
    Account, AccountIndex, DeviceId, JobOutcome, NewMessage, PutOutcome, StoreError, Subscription,
    linkage::{JobMessage, StoreKeys},
};

/// What a committed batch answers, in the order of its writes.
pub struct Outcomes {
    pub puts: Vec<PutOutcome>,
    /// Whether each Subscribe added a subscription (rather than replacing one).
    pub subs: Vec<bool>,
    /// Whether each push outcome found its job still held under its claim.
    pub finished: Vec<bool>,
}

/// Why a batch did not commit; nothing of it did.
pub enum BatchError {
    /// Another transaction got in the way (deadlock, serialization failure): run it again.
    Retry(StoreError),
    /// Anything else.
    Failed(StoreError),
}

/// Adds (or creates) every mailbox counter by its batch's Stores, locking the rows in the
/// order of the key, and answers each mailbox's new last seq.
const BUMP_COUNTERS: &str = "INSERT INTO mailbox_counters (account, namespace, last_seq)
     SELECT account, namespace, n FROM unnest($1::bytea[], $2::bigint[], $3::bigint[])
         AS b(account, namespace, n)
     ORDER BY account, namespace
     ON CONFLICT (account, namespace) DO UPDATE SET last_seq = mailbox_counters.last_seq + EXCLUDED.last_seq
     RETURNING account, namespace, last_seq";

/// The Stores (by 1-based position) whose message is stored already.
/// (Lookups and joins against the tables are `LATERAL` subqueries with `LIMIT`/`OFFSET`,
/// which the planner cannot flatten into a hash join: that would scan the whole table per
/// batch, and a generic plan made while the tables were small would keep doing so.)
const FIND_STORED: &str = "SELECT f.i, m.seq, m.expires_ms
     FROM unnest($1::bytea[], $2::bigint[], $3::bytea[]) WITH ORDINALITY AS f(account, namespace, hash, i)
     CROSS JOIN LATERAL (
         SELECT seq, expires_ms FROM messages
         WHERE account = f.account AND namespace = f.namespace AND hash = f.hash LIMIT 1
     ) AS m";

const DELETE_EXPIRED: &str = "DELETE FROM messages m
     USING unnest($1::bytea[], $2::bigint[], $3::bytea[], $4::bigint[]) AS d(account, namespace, hash, now)
     WHERE m.account = ANY($1) AND m.account = d.account AND m.namespace = d.namespace
       AND m.hash = d.hash AND m.expires_ms <= d.now";

const SET_COUNTERS: &str = "UPDATE mailbox_counters c SET last_seq = f.last_seq
     FROM unnest($1::bytea[], $2::bigint[], $3::bigint[]) AS f(account, namespace, last_seq)
     WHERE c.account = ANY($1) AND c.account = f.account AND c.namespace = f.namespace";

/// Inserts the new messages and, as a Store on its own does (`ops::FAN_OUT`), marks (device,
/// hash) for every live subscription of the account that wants the namespace and never
/// had this hash, and enqueues a job for each one newly marked. Answers the jobs per
/// message (by 1-based position), for messages that got any. A message stored meanwhile
/// cannot be: its counter is locked; should it be anyway, the unique key fails the
/// statement and the whole batch.
const STORE_MESSAGES: &str = "WITH input AS (
         SELECT * FROM unnest($1::bytea[], $2::bigint[], $3::bigint[], $4::bytea[], $5::bytea[],
                              $6::bigint[], $7::bigint[], $8::bytea[], $9::bytea[], $10::bytea[])
             WITH ORDINALITY AS i(account, namespace, seq, hash, data, created_ms, expires_ms,
                                  account_index, tag, sealed, n)
     ), stored AS (
         INSERT INTO messages (account, namespace, seq, hash, data, created_ms, expires_ms)
         SELECT account, namespace, seq, hash, data, created_ms, expires_ms FROM input
     ), targets AS (
         SELECT i.n, s.device_id, i.account_index, sha256(i.tag || s.device_id) AS marker,
                i.sealed, i.created_ms, i.expires_ms
         FROM input i CROSS JOIN LATERAL (
             SELECT device_id FROM subscriptions
             WHERE account_index = i.account_index AND expires_ms > i.created_ms
               AND i.namespace = ANY(namespaces)
             OFFSET 0
         ) AS s
     ), marked AS (
         INSERT INTO pushed (marker, expires_ms)
         SELECT marker, expires_ms FROM targets
         ON CONFLICT DO NOTHING
         RETURNING marker
     ), jobs AS (
         INSERT INTO push_jobs (account_index, device_id, sealed, enqueued_ms, not_before_ms)
         SELECT t.account_index, t.device_id, t.sealed, t.created_ms, t.created_ms
         FROM targets t JOIN marked m ON m.marker = t.marker
         ORDER BY t.n, t.device_id
     )
     SELECT t.n, count(*) FROM targets t JOIN marked m ON m.marker = t.marker GROUP BY t.n";

const NOTIFY: &str = "SELECT pg_notify($1::text, p) FROM unnest($2::text[]) AS p";

const FINISH_DELIVERED: &str = "WITH f AS (
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bytea[], $5::bigint[])
             AS f(id, owner, until_ms, marker, expires_ms)
     ), done AS (
         DELETE FROM push_jobs j USING f
         WHERE j.id = ANY($1) AND j.id = f.id AND j.lease_owner = f.owner AND j.lease_until_ms = f.until_ms
         RETURNING j.id
     ), marked AS (
         INSERT INTO pushed (marker, expires_ms) SELECT marker, expires_ms FROM f
         ON CONFLICT DO NOTHING
     )
     SELECT id FROM done";

const FINISH_DROPPED: &str = "DELETE FROM push_jobs j
     USING unnest($1::bigint[], $2::text[], $3::bigint[]) AS f(id, owner, until_ms)
     WHERE j.id = ANY($1) AND j.id = f.id AND j.lease_owner = f.owner AND j.lease_until_ms = f.until_ms
     RETURNING j.id";

const FINISH_RETRY: &str = "UPDATE push_jobs j SET not_before_ms = f.not_before_ms,
         lease_owner = NULL, lease_until_ms = NULL, attempts = LEAST(j.attempts + 1, 4294967295)
     FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[]) AS f(id, owner, until_ms, not_before_ms)
     WHERE j.id = ANY($1) AND j.id = f.id AND j.lease_owner = f.owner AND j.lease_until_ms = f.until_ms
     RETURNING j.id";

const UPSERT_SUBSCRIPTIONS: &str = "INSERT INTO subscriptions
         (account_index, device_id, namespaces, want_data, sealed, expires_ms)
     SELECT account_index, device_id, namespaces::bigint[], want_data, sealed, expires_ms
     FROM unnest($1::bytea[], $2::bytea[], $3::text[], $4::bool[], $5::bytea[], $6::bigint[])
         AS s(account_index, device_id, namespaces, want_data, sealed, expires_ms)
     ORDER BY account_index, device_id
     ON CONFLICT (account_index, device_id) DO UPDATE SET
         namespaces = EXCLUDED.namespaces, want_data = EXCLUDED.want_data,
         sealed = EXCLUDED.sealed, expires_ms = EXCLUDED.expires_ms
     RETURNING account_index, device_id, (xmax = 0) AS inserted";

type Answer = Result<Vec<Row>, tokio_postgres::Error>;
type Pending<'a> = Pin<Box<dyn Future<Output = Answer> + Send + 'a>>;

/// Statements for one pipeline, each sent as soon as the pipeline runs.
struct Pipeline<'a> {
    client: &'a Client,
    steps: Vec<Pending<'a>>,
}

impl<'a> Pipeline<'a> {
    fn new(client: &'a Client) -> Self {
        Pipeline {
            client,
            steps: Vec::new(),
        }
    }

    /// A statement without parameters, over the simple protocol (BEGIN, COMMIT).
    fn simple(&mut self, sql: &'static str) -> usize {
        let client = self.client;
        self.steps.push(Box::pin(async move {
            client.batch_execute(sql).await.map(|()| Vec::new())
        }));
        self.steps.len() - 1
    }

    /// A prepared statement; its index in the answers.
    fn query(&mut self, stmt: Statement, params: Vec<&'a (dyn ToSql + Sync)>) -> usize {
        let client = self.client;
        self.steps
            .push(Box::pin(async move { client.query(&stmt, &params).await }));
        self.steps.len() - 1
    }

    /// Sends every statement at once (tokio-postgres writes each request when its future
    /// is first polled, and `join_all` polls them in order) and collects every answer.
    async fn run(self) -> Vec<Answer> {
        futures_util::future::join_all(self.steps).await
    }
}

/// The answers of a pipeline, or why the transaction failed: the first error that is not
/// "the transaction is aborted" (which every statement after a failed one answers).
fn check(answers: Vec<Answer>) -> Result<Vec<Vec<Row>>, BatchError> {
    let aborted = |e: &tokio_postgres::Error| e.code() == Some(&SqlState::IN_FAILED_SQL_TRANSACTION);
    let mut first: Option<tokio_postgres::Error> = None;
    let mut rows = Vec::with_capacity(answers.len());
    for a in answers {
        match a {
            Ok(r) => rows.push(r),
            Err(e) => {
                if first.as_ref().is_none_or(|f| aborted(f) && !aborted(&e)) {
                    first = Some(e);
                }
                rows.push(Vec::new());
            }
        }
    }
    match first {
        None => Ok(rows),
        Some(e) => {
            let retry = [
                SqlState::T_R_DEADLOCK_DETECTED,
                SqlState::T_R_SERIALIZATION_FAILURE,
                SqlState::UNIQUE_VIOLATION,
            ]
            .iter()
            .any(|c| e.code() == Some(c));
            let e = db_error(e);
            Err(if retry {
                BatchError::Retry(e)
            } else {
                BatchError::Failed(e)
            })
        }
    }
}

/// Ends a failed transaction, so the connection goes back to the pool clean; a connection
/// that cannot even roll back is closed instead.
async fn abandon(client: Client) {
    if client.batch_execute("ROLLBACK").await.is_err() {
        drop(Object::take(client));
    }
}

/// A statement prepared on this connection (once; afterwards no round trip).
async fn prepared(client: &Client, sql: &'static str) -> Result<Statement, BatchError> {
    client
        .prepare_cached(sql)
        .await
        .map_err(|e| BatchError::Failed(db_error(e)))
}

/// Runs a batch as one transaction (see the module docs).
pub async fn run(
    client: Client,
    keys: &StoreKeys,
    puts: &[&NewMessage],
    subs: &[&Subscription],
    finishes: &[&Finish],
) -> Result<Outcomes, BatchError> {
    match run_on(&client, keys, puts, subs, finishes).await {
        Ok(outcomes) => Ok(outcomes),
        Err(e) => {
            abandon(client).await;
            Err(e)
        }
    }
}

/// The columns of the finishes of one kind.
#[derive(Default)]
struct FinishColumns<'a> {
    ids: Vec<i64>,
    owners: Vec<&'a str>,
    untils: Vec<i64>,
    markers: Vec<&'a [u8]>,
    expires: Vec<i64>,
    not_before: Vec<i64>,
}

impl<'a> FinishColumns<'a> {
    fn add(&mut self, f: &'a Finish) {
        self.ids.push(f.id);
        self.owners.push(&f.owner);
        self.untils.push(f.until_ms);
    }
}

/// A dead token's row for the statement that retires it: job id, account index, device id,
/// and the lease (owner, until) that proves this node still holds the job.
type DeadRow<'a> = (i64, &'a [u8], &'a [u8], &'a str, i64);

async fn run_on(
    client: &Client,
    keys: &StoreKeys,
    puts: &[&NewMessage],
    subs: &[&Subscription],
    finishes: &[&Finish],
) -> Result<Outcomes, BatchError> {
    // Round trip 1's columns.
    let mut mailboxes: BTreeMap<(Account, u32), i64> = BTreeMap::new();
    for m in puts {
        *mailboxes.entry((m.account, m.namespace)).or_default() += 1;
    }
    let mb_account: Vec<&[u8]> = mailboxes.keys().map(|(a, _)| &a[..]).collect();
    let mb_namespace: Vec<i64> = mailboxes.keys().map(|(_, ns)| i64::from(*ns)).collect();
    let mb_count: Vec<i64> = mailboxes.values().copied().collect();
    let put_account: Vec<&[u8]> = puts.iter().map(|m| &m.account[..]).collect();
    let put_namespace: Vec<i64> = puts.iter().map(|m| i64::from(m.namespace)).collect();
    let put_hash: Vec<&[u8]> = puts.iter().map(|m| &m.hash[..]).collect();

    let (mut delivered, mut dropped, mut retried) = (
        FinishColumns::default(),
        FinishColumns::default(),
        FinishColumns::default(),
    );
    let mut dead: Vec<&Finish> = Vec::new();
    for f in finishes {
        match f.outcome {
            JobOutcome::Delivered => {
                delivered.add(f);
                delivered.markers.push(&f.marker[..]);
                delivered.expires.push(f.expires_ms);
            }
            JobOutcome::Dropped => dropped.add(f),
            JobOutcome::Retry { not_before_ms } => {
                retried.add(f);
                retried.not_before.push(not_before_ms);
            }
            JobOutcome::TokenDead => dead.push(f),
        }
    }
    let dead_params: Vec<DeadRow<'_>> = dead
        .iter()
        .map(|f| {
            (
                f.id,
                &f.account_index[..],
                &f.device_id[..],
                f.owner.as_str(),
                f.until_ms,
            )
        })
        .collect();

    let sub_index: Vec<&[u8]> = subs.iter().map(|s| &s.account_index[..]).collect();
    let sub_device: Vec<&[u8]> = subs.iter().map(|s| &s.device_id[..]).collect();
    let sub_namespaces: Vec<String> = subs.iter().map(|s| namespaces_literal(&s.namespaces)).collect();
    let sub_want: Vec<bool> = subs.iter().map(|s| s.want_data).collect();
    let sub_sealed: Vec<&[u8]> = subs.iter().map(|s| &s.sealed[..]).collect();
    let sub_expires: Vec<i64> = subs.iter().map(|s| s.expires_ms).collect();

    let mut rt1 = Pipeline::new(client);
    rt1.simple("BEGIN");
    let (mut bump, mut find) = (None, None);
    if !puts.is_empty() {
        let stmt = prepared(client, BUMP_COUNTERS).await?;
        bump = Some(rt1.query(stmt, vec![&mb_account, &mb_namespace, &mb_count]));
        let stmt = prepared(client, FIND_STORED).await?;
        find = Some(rt1.query(stmt, vec![&put_account, &put_namespace, &put_hash]));
    }
    let mut finish_steps = Vec::new();
    if !delivered.ids.is_empty() {
        let stmt = prepared(client, FINISH_DELIVERED).await?;
        finish_steps.push(rt1.query(
            stmt,
            vec![
                &delivered.ids,
                &delivered.owners,
                &delivered.untils,
                &delivered.markers,
                &delivered.expires,
            ],
        ));
    }
    if !dropped.ids.is_empty() {
        let stmt = prepared(client, FINISH_DROPPED).await?;
        finish_steps.push(rt1.query(stmt, vec![&dropped.ids, &dropped.owners, &dropped.untils]));
    }
    if !retried.ids.is_empty() {
        let stmt = prepared(client, FINISH_RETRY).await?;
        finish_steps.push(rt1.query(
            stmt,
            vec![
                &retried.ids,
                &retried.owners,
                &retried.untils,
                &retried.not_before,
            ],
        ));
    }
    let mut dead_steps = Vec::new();
    if !dead_params.is_empty() {
        let stmt = prepared(client, super::ops::FINISH_TOKEN_DEAD).await?;
        for (id, index, device, owner, until) in &dead_params {
            dead_steps.push((
                *id,
                rt1.query(stmt.clone(), vec![id, index, device, owner, until]),
            ));
        }
    }
    let mut upsert = None;
    if !subs.is_empty() {
        let stmt = prepared(client, UPSERT_SUBSCRIPTIONS).await?;
        upsert = Some(rt1.query(
            stmt,
            vec![
                &sub_index,
                &sub_device,
                &sub_namespaces,
                &sub_want,
                &sub_sealed,
                &sub_expires,
            ],
        ));
    }
    let commit = puts.is_empty().then(|| rt1.simple("COMMIT"));
    let answers = check(rt1.run().await)?;

    // What round trip 1 answered, except for the Stores.
    let mut finished_ids: HashSet<i64> = HashSet::new();
    for step in &finish_steps {
        for row in &answers[*step] {
            finished_ids.insert(col(row, 0).map_err(BatchError::Failed)?);
        }
    }
    for (id, step) in &dead_steps {
        let n: i64 = match answers[*step].first() {
            Some(row) => col(row, 0).map_err(BatchError::Failed)?,
            None => 0,
        };
        if n > 0 {
            finished_ids.insert(*id);
        }
    }
    let finished = finishes.iter().map(|f| finished_ids.contains(&f.id)).collect();
    let subs_out = match upsert {
        None => Vec::new(),
        Some(step) => {
            let mut inserted: HashMap<(AccountIndex, DeviceId), bool> = HashMap::new();
            for row in &answers[step] {
                let index = AccountIndex(bytes32(row, 0)?);
                let device: DeviceId = col::<&[u8]>(row, 1)
                    .map_err(BatchError::Failed)?
                    .try_into()
                    .map_err(|_| BatchError::Failed(corrupt("subscription device id")))?;
                inserted.insert((index, device), col(row, 2).map_err(BatchError::Failed)?);
            }
            subs.iter()
                .map(|s| {
                    inserted
                        .get(&(s.account_index, s.device_id))
                        .copied()
                        .ok_or_else(|| BatchError::Failed(corrupt("subscription upsert answer")))
                })
                .collect::<Result<Vec<bool>, BatchError>>()?
        }
    };
    if commit.is_some() {
        return Ok(Outcomes {
            puts: Vec::new(),
            subs: subs_out,
            finished,
        });
    }
    let (Some(bump), Some(find)) = (bump, find) else {
        // Stores always bump and look up (see above).
        return Err(BatchError::Failed(corrupt("batch without its Store statements")));
    };

    // The Stores: seqs, duplicates, replaced originals.
    let mut last: HashMap<(Account, u32), i64> = HashMap::new();
    for row in &answers[bump] {
        let account = Account(bytes32(row, 0)?);
        let namespace = u32::try_from(col::<i64>(row, 1).map_err(BatchError::Failed)?)
            .map_err(|_| BatchError::Failed(corrupt("mailbox namespace")))?;
        last.insert((account, namespace), col(row, 2).map_err(BatchError::Failed)?);
    }
    let mut stored: HashMap<usize, (i64, i64)> = HashMap::new();
    for row in &answers[find] {
        let i: i64 = col(row, 0).map_err(BatchError::Failed)?;
        let i = usize::try_from(i - 1).map_err(|_| BatchError::Failed(corrupt("batch position")))?;
        stored.insert(
            i,
            (
                col(row, 1).map_err(BatchError::Failed)?,
                col(row, 2).map_err(BatchError::Failed)?,
            ),
        );
    }
    // Per mailbox: the next seq to hand out (its first of this batch) and the last one
    // the counter was moved to.
    let mut seqs: HashMap<(Account, u32), (i64, i64)> = HashMap::new();
    for (mailbox, count) in &mailboxes {
        let l = *last
            .get(mailbox)
            .ok_or_else(|| BatchError::Failed(corrupt("mailbox counter answer")))?;
        seqs.insert(*mailbox, (l - count + 1, l));
    }
    let mut outcomes: Vec<Option<PutOutcome>> = vec![None; puts.len()];
    let mut new = Vec::new();
    let (mut expired_account, mut expired_namespace, mut expired_hash, mut expired_now) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, m) in puts.iter().enumerate() {
        if let Some(&(seq, expires_ms)) = stored.get(&i) {
            if expires_ms > m.created_ms {
                outcomes[i] = Some(PutOutcome {
                    seq: u64_of(seq)?,
                    expires_ms,
                    duplicate: true,
                    jobs_enqueued: 0,
                });
                continue;
            }
            // Expired, not yet swept: replaced, and the message gets a new seq.
            expired_account.push(&m.account[..]);
            expired_namespace.push(i64::from(m.namespace));
            expired_hash.push(&m.hash[..]);
            expired_now.push(m.created_ms);
        }
        let (next, _) = seqs
            .get_mut(&(m.account, m.namespace))
            .ok_or_else(|| BatchError::Failed(corrupt("mailbox counter answer")))?;
        new.push((i, *next));
        *next += 1;
    }
    // Seqs that went to duplicates go back: the counter ends at the last one handed out.
    let (mut fix_account, mut fix_namespace, mut fix_last) = (Vec::new(), Vec::new(), Vec::new());
    for (mailbox, (next, last)) in &seqs {
        if next - 1 != *last {
            fix_account.push(&mailbox.0[..]);
            fix_namespace.push(i64::from(mailbox.1));
            fix_last.push(next - 1);
        }
    }

    // Round trip 2's columns.
    let mut s_account: Vec<&[u8]> = Vec::with_capacity(new.len());
    let mut s_namespace = Vec::with_capacity(new.len());
    let mut s_seq = Vec::with_capacity(new.len());
    let mut s_hash: Vec<&[u8]> = Vec::with_capacity(new.len());
    let mut s_data: Vec<&[u8]> = Vec::with_capacity(new.len());
    let mut s_created = Vec::with_capacity(new.len());
    let mut s_expires = Vec::with_capacity(new.len());
    let mut s_index: Vec<&[u8]> = Vec::with_capacity(new.len());
    let mut tags: Vec<[u8; 32]> = Vec::with_capacity(new.len());
    let mut s_sealed: Vec<Vec<u8>> = Vec::with_capacity(new.len());
    let mut arrivals = BTreeSet::new();
    for &(i, seq) in &new {
        let m = puts[i];
        s_account.push(&m.account[..]);
        s_namespace.push(i64::from(m.namespace));
        s_seq.push(seq);
        s_hash.push(&m.hash[..]);
        s_data.push(&m.data[..]);
        s_created.push(m.created_ms);
        s_expires.push(m.expires_ms);
        s_index.push(&m.account_index[..]);
        tags.push(keys.message_tag(&m.account_index, &m.hash));
        s_sealed.push(keys.seal_job(
            &m.account_index,
            &JobMessage {
                account: m.account,
                namespace: m.namespace,
                hash: m.hash,
                seq: u64_of(seq)?,
                created_ms: m.created_ms,
                expires_ms: m.expires_ms,
            },
        ));
        arrivals.insert((m.account, m.namespace));
    }
    let s_tag: Vec<&[u8]> = tags.iter().map(|t| &t[..]).collect();
    let s_sealed_refs: Vec<&[u8]> = s_sealed.iter().map(|s| &s[..]).collect();
    let payloads: Vec<String> = arrivals
        .iter()
        .map(|(account, ns)| listener::payload(account, *ns))
        .collect();

    let mut rt2 = Pipeline::new(client);
    if !expired_account.is_empty() {
        let stmt = prepared(client, DELETE_EXPIRED).await?;
        rt2.query(
            stmt,
            vec![&expired_account, &expired_namespace, &expired_hash, &expired_now],
        );
    }
    if !fix_account.is_empty() {
        let stmt = prepared(client, SET_COUNTERS).await?;
        rt2.query(stmt, vec![&fix_account, &fix_namespace, &fix_last]);
    }
    let mut store = None;
    if !new.is_empty() {
        let stmt = prepared(client, STORE_MESSAGES).await?;
        store = Some(rt2.query(
            stmt,
            vec![
                &s_account,
                &s_namespace,
                &s_seq,
                &s_hash,
                &s_data,
                &s_created,
                &s_expires,
                &s_index,
                &s_tag,
                &s_sealed_refs,
            ],
        ));
        let stmt = prepared(client, NOTIFY).await?;
        rt2.query(stmt, vec![&listener::CHANNEL, &payloads]);
    }
    rt2.simple("COMMIT");
    let answers = check(rt2.run().await)?;

    let mut jobs: HashMap<usize, i64> = HashMap::new();
    if let Some(step) = store {
        for row in &answers[step] {
            let n: i64 = col(row, 0).map_err(BatchError::Failed)?;
            let n = usize::try_from(n - 1).map_err(|_| BatchError::Failed(corrupt("batch position")))?;
            jobs.insert(n, col(row, 1).map_err(BatchError::Failed)?);
        }
    }
    for (k, &(i, seq)) in new.iter().enumerate() {
        let m = puts[i];
        outcomes[i] = Some(PutOutcome {
            seq: u64_of(seq)?,
            expires_ms: m.expires_ms,
            duplicate: false,
            jobs_enqueued: u32::try_from(jobs.get(&k).copied().unwrap_or(0)).unwrap_or(u32::MAX),
        });
    }
    let puts = outcomes
        .into_iter()
        .map(|o| o.ok_or_else(|| BatchError::Failed(corrupt("batch Store answer"))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Outcomes {
        puts,
        subs: subs_out,
        finished,
    })
}

/// `{1,2,3}`: a bigint[] literal, since arrays of arrays do not `unnest` row by row.
fn namespaces_literal(namespaces: &[u32]) -> String {
    let inner: Vec<String> = namespaces.iter().map(u32::to_string).collect();
    format!("{{{}}}", inner.join(","))
}

fn bytes32(row: &Row, idx: usize) -> Result<[u8; 32], BatchError> {
    col::<&[u8]>(row, idx)
        .map_err(BatchError::Failed)?
        .try_into()
        .map_err(|_| BatchError::Failed(corrupt("32-byte key")))
}

fn u64_of(v: i64) -> Result<u64, BatchError> {
    u64::try_from(v).map_err(|_| BatchError::Failed(corrupt("mailbox counter")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_literals_are_bigint_arrays() {
        assert_eq!(namespaces_literal(&[]), "{}");
        assert_eq!(namespaces_literal(&[20]), "{20}");
        assert_eq!(namespaces_literal(&[0, 7, 4_294_967_295]), "{0,7,4294967295}");
    }
}
