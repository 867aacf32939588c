//! The scale-out store: PostgreSQL, shared by any number of relay nodes.
//!
//! Connections come from a deadpool pool. The schema is migrated when the store opens
//! (see [`migrations`]), so the first node of a new release upgrades the database. Writes
//! are group-committed ([`writer`]): the Stores (each with its seq, message, push jobs and
//! arrival NOTIFY), Subscribes and push outcomes that callers send at the same time share
//! one transaction of multi-row statements ([`batch`]), and each caller is answered once
//! it committed. Reads, claims, deletes and sweeps are one statement each in autocommit;
//! a claimed batch's subscriptions and messages are one statement too, and so are the
//! seq-span lookups of the mailbox cap that concurrent Stores ask at once ([`reads`]). A commit is
//! durable with PostgreSQL's default `synchronous_commit = on`; do not turn it off for the
//! relay's database.
//!
//! Several nodes stay consistent because the database arbitrates: a per-mailbox counter
//! row hands out seqs, unique keys make Stores and pushes idempotent, and jobs are
//! claimed with `FOR UPDATE SKIP LOCKED` under a lease. Arrivals reach the other nodes'
//! long-polls through LISTEN/NOTIFY ([`Store::arrivals`]).
//!
//! Connections are plain TCP unless the URL says `sslmode=require`, which means TLS with
//! the server verified (see [`tls`]).

mod batch;
pub mod errors;
mod listener;
pub mod migrations;
mod ops;
mod reads;
#[cfg(any(test, feature = "conformance"))]
#[doc(hidden)]
pub mod testing;
pub mod tls;
mod writer;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Client, Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

pub use self::errors::SqlError;
use self::errors::{db_error, pool_error};
pub use self::listener::CHANNEL as ARRIVALS_CHANNEL;
pub use self::migrations::MigrationReport;
use super::{
    Account, AccountIndex, DeviceId, Hash, JobOutcome, NewMessage, OutboxStats, Page, PushInputs, PushJob,
    PutOutcome, Store, StoreError, StoredMessage, Subscription, linkage::StoreKeys,
};

/// How many arrivals may queue for a slow receiver before it misses some (it then only
/// misses early wake-ups: long-polls re-read when they time out).
const ARRIVALS_CAPACITY: usize = 4096;

/// Pool and connection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    /// Most connections this node keeps open (plus one for LISTEN).
    pub pool_size: usize,
    /// How long a call waits for a free pooled connection before it fails as unavailable.
    pub wait_timeout: Duration,
    /// How long opening one connection may take, unless the URL sets `connect_timeout`.
    pub connect_timeout: Duration,
    /// Whether to listen for other nodes' arrivals ([`Store::arrivals`]).
    pub listen: bool,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            pool_size: 16,
            wait_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            listen: true,
        }
    }
}

/// The PostgreSQL [`Store`].
pub struct PostgresStore {
    pool: Pool,
    /// Seal job references, key pushed markers (see `store::linkage`).
    keys: StoreKeys,
    /// Group-commits Stores, Subscribes and push outcomes.
    writer: writer::Writer,
    /// Coalesces the seq-span lookups of concurrent Stores.
    reads: reads::SpanReader,
    closed: AtomicBool,
    arrivals: broadcast::Sender<(Account, u32)>,
    stop_listener: CancellationToken,
    listener: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("pool", &self.pool.status())
            .finish_non_exhaustive()
    }
}

/// Parses a `postgres://` URL (or a `key=value` connection string).
///
/// The error names what is wrong but never echoes the URL, which may hold a password.
pub fn parse_url(url: &str) -> Result<tokio_postgres::Config, StoreError> {
    url.parse::<tokio_postgres::Config>()
        .map_err(|e| StoreError::unavailable(format!("invalid PostgreSQL URL: {e}")).because(e))
}

/// Applies pending schema migrations over one connection and reports what it did
/// (`tidings-relay migrate`). Safe to run while relays run and from several places at
/// once.
pub async fn migrate(url: &str) -> Result<MigrationReport, StoreError> {
    let mut config = parse_url(url)?;
    prepare_config(&mut config, &PostgresOptions::default());
    let tls = tls::connector(&mut config)?;
    let mut connected = tls::connect(&config, tls.as_ref()).await.map_err(db_error)?;
    let report = migrations::apply(&mut connected.client).await;
    drop(connected.client);
    // The connection ends once the client is gone; its own error adds nothing here.
    let _ = connected.driver.await;
    report
}

/// Makes every pooled session plan each prepared statement once, not on every execution.
///
/// Left to itself, PostgreSQL weighs a statement's generic plan, costed for `unnest`
/// arrays of 100 rows, against custom plans for the few rows actually sent, keeps choosing
/// custom plans, and so plans again on every execution. `pg_stat_statements` during
/// `tidings-bench scaleout` put planning at 25 % of the database's statement time with one
/// node and 40 % with two (the seq-span lookup alone planned for 80 µs per call). The
/// statements are written for generic plans (an index lookup per array element,
/// `LATERAL … LIMIT`), so forcing them loses nothing. PostgreSQL before 12 has no such
/// setting, and there it is skipped.
async fn session_setup(client: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
    match client
        .batch_execute("SET plan_cache_mode = force_generic_plan")
        .await
    {
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_OBJECT) => Ok(()),
        other => other,
    }
}

fn prepare_config(config: &mut tokio_postgres::Config, options: &PostgresOptions) {
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(options.connect_timeout);
    }
    if config.get_application_name().is_none() {
        config.application_name("tidings-relay");
    }
}

impl PostgresStore {
    /// Opens the store at `url` with default [`PostgresOptions`]: connects, applies
    /// pending migrations and starts listening for arrivals.
    ///
    /// Fails with [`StoreError::Unavailable`] when the database cannot be reached and
    /// [`StoreError::Corrupt`] when its schema history does not match this binary.
    /// `keys` (from the relay secret) hide which account a push job or pushed marker
    /// belongs to.
    pub async fn open(url: &str, keys: StoreKeys) -> Result<PostgresStore, StoreError> {
        Self::open_with(parse_url(url)?, PostgresOptions::default(), keys).await
    }

    /// [`PostgresStore::open`] with a parsed configuration and explicit options.
    pub async fn open_with(
        mut config: tokio_postgres::Config,
        options: PostgresOptions,
        keys: StoreKeys,
    ) -> Result<PostgresStore, StoreError> {
        prepare_config(&mut config, &options);
        let tls = tls::connector(&mut config)?;
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &tls {
            None => Manager::from_config(config.clone(), NoTls, manager_config),
            Some(tls) => Manager::from_config(config.clone(), tls.clone(), manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .wait_timeout(Some(options.wait_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .runtime(Runtime::Tokio1)
            .post_create(Hook::async_fn(|client, _| {
                Box::pin(async move { session_setup(client).await.map_err(HookError::Backend) })
            }))
            .build()
            .map_err(|e| StoreError::unavailable(format!("PostgreSQL connection pool: {e}")).because(e))?;
        {
            let mut client = pool.get().await.map_err(pool_error)?;
            migrations::apply(&mut client).await?;
        }
        let (arrivals, _) = broadcast::channel(ARRIVALS_CAPACITY);
        let stop_listener = CancellationToken::new();
        let listener = options
            .listen
            .then(|| listener::spawn(config, tls, arrivals.clone(), stop_listener.clone()));
        let writer = writer::Writer::spawn(pool.clone(), keys.clone());
        let reads = reads::SpanReader::spawn(pool.clone());
        Ok(PostgresStore {
            pool,
            keys,
            writer,
            reads,
            closed: AtomicBool::new(false),
            arrivals,
            stop_listener,
            listener: Mutex::new(listener),
        })
    }

    async fn client(&self) -> Result<Client, StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        self.pool.get().await.map_err(pool_error)
    }

    /// What the group-commit writer did so far: (transactions, writes they carried,
    /// batches run again, batches split into single writes).
    #[cfg(test)]
    fn writer_stats(&self) -> (u64, u64, u64, u64) {
        let s = self.writer.stats();
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        (get(&s.batches), get(&s.writes), get(&s.retried), get(&s.split))
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.stop_listener.cancel();
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn put_message(&self, msg: NewMessage) -> Result<PutOutcome, StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        self.writer.put(msg).await
    }

    async fn get_messages(
        &self,
        account: &Account,
        namespace: u32,
        after_seq: u64,
        limit: u32,
        now_ms: i64,
    ) -> Result<Page, StoreError> {
        ops::get_messages(
            &self.client().await?,
            account,
            namespace,
            after_seq,
            limit,
            now_ms,
        )
        .await
    }

    async fn seq_span(&self, account: &Account, namespace: u32) -> Result<u64, StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        self.reads.seq_span(account, namespace).await
    }

    async fn count_messages(
        &self,
        account: &Account,
        namespace: u32,
        after_seq: u64,
        now_ms: i64,
        at_most: u32,
    ) -> Result<u32, StoreError> {
        let client = self.client().await?;
        ops::count_messages(&client, account, namespace, after_seq, now_ms, at_most).await
    }

    async fn get_message(
        &self,
        account: &Account,
        namespace: u32,
        hash: &Hash,
    ) -> Result<Option<StoredMessage>, StoreError> {
        ops::get_message(&self.client().await?, account, namespace, hash).await
    }

    async fn delete_messages(
        &self,
        account: &Account,
        namespace: u32,
        hashes: &[Hash],
    ) -> Result<u32, StoreError> {
        ops::delete_messages(&self.client().await?, account, namespace, hashes).await
    }

    async fn sweep_expired(&self, now_ms: i64, max: u32) -> Result<u64, StoreError> {
        ops::sweep_expired(&self.client().await?, now_ms, max).await
    }

    async fn upsert_subscription(&self, sub: Subscription) -> Result<bool, StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        self.writer.subscribe(sub).await
    }

    async fn remove_subscription(
        &self,
        account_index: &AccountIndex,
        device_id: &DeviceId,
        expiring_by: i64,
    ) -> Result<bool, StoreError> {
        ops::remove_subscription(&self.client().await?, account_index, device_id, expiring_by).await
    }

    async fn get_subscription(
        &self,
        account_index: &AccountIndex,
        device_id: &DeviceId,
    ) -> Result<Option<Subscription>, StoreError> {
        ops::get_subscription(&self.client().await?, account_index, device_id).await
    }

    async fn push_inputs(&self, jobs: &[PushJob]) -> Result<Vec<PushInputs>, StoreError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        ops::push_inputs(&self.client().await?, jobs).await
    }

    async fn claim_jobs(
        &self,
        node: &str,
        now_ms: i64,
        lease_ms: i64,
        max: u32,
    ) -> Result<Vec<PushJob>, StoreError> {
        ops::claim_jobs(&self.client().await?, &self.keys, node, now_ms, lease_ms, max).await
    }

    async fn finish_job(&self, job: &PushJob, outcome: JobOutcome) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        self.writer
            .finish(ops::Finish::new(&self.keys, job, outcome)?)
            .await
    }

    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        ops::outbox_stats(&self.client().await?).await
    }

    async fn check_writable(&self) -> Result<(), StoreError> {
        ops::probe(&self.client().await?).await
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.closed.store(true, Ordering::Release);
        self.stop_listener.cancel();
        // Queued writes commit first; calls in flight finish on the connections they hold.
        self.writer.close().await;
        self.reads.close().await;
        self.pool.close();
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(listener) = listener {
            // A listener that panicked has nothing left to flush.
            let _ = listener.await;
        }
        Ok(())
    }

    fn arrivals(&self) -> Option<broadcast::Receiver<(Account, u32)>> {
        Some(self.arrivals.subscribe())
    }
}

#[cfg(test)]
mod tests;
