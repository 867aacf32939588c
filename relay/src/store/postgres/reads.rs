//! Coalesced reads: the seq-span lookups of concurrent Stores in one statement.
//!
//! The mailbox cap asks [`crate::store::Store::seq_span`] before every Store into a
//! public mailbox, so under load there are as many of these small reads as Stores, and
//! each on its own would cost a round trip, a pooled connection and a statement in the
//! server. As the writer does for writes ([`super::writer`]), [`READERS`] tasks take turns
//! at one queue: one gathers what is queued while the others wait for their answer, and
//! every lookup of a batch is one row of one statement. A batch that fails runs its
//! lookups one by one, so each caller gets its own answer.

use std::sync::{Arc, Mutex, PoisonError};

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::errors::{corrupt, db_error, pool_error};
use super::ops::{self, col};
use crate::store::{Account, StoreError};

/// Batches in flight at once.
pub const READERS: usize = 2;
/// Lookups one statement carries at most.
pub const MAX_READS: usize = 512;

/// Per mailbox, how many seqs its messages span, from the primary key's two ends (see
/// `ops::seq_span`), one row per lookup in order.
const SEQ_SPANS: &str = "SELECT (SELECT COALESCE(max(m.seq) - min(m.seq) + 1, 0) FROM messages m
                 WHERE m.account = s.account AND m.namespace = s.namespace)
     FROM unnest($1::bytea[], $2::bigint[]) WITH ORDINALITY AS s(account, namespace, i)
     ORDER BY s.i";

type Lookup = (Account, u32, oneshot::Sender<Result<u64, StoreError>>);

struct Shared {
    pool: Pool,
    queue: tokio::sync::Mutex<mpsc::UnboundedReceiver<Lookup>>,
}

/// The seq-span reader of one store.
pub struct SpanReader {
    tx: Mutex<Option<mpsc::UnboundedSender<Lookup>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl SpanReader {
    /// Starts the reader tasks on the current runtime.
    pub fn spawn(pool: Pool) -> SpanReader {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            pool,
            queue: tokio::sync::Mutex::new(rx),
        });
        let tasks = (0..READERS)
            .map(|_| tokio::spawn(run(Arc::clone(&shared))))
            .collect();
        SpanReader {
            tx: Mutex::new(Some(tx)),
            tasks: Mutex::new(tasks),
        }
    }

    /// The seq span of one mailbox (see `Store::seq_span`).
    pub async fn seq_span(&self, account: &Account, namespace: u32) -> Result<u64, StoreError> {
        let (reply, answer) = oneshot::channel();
        {
            let tx = self.tx.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(tx) = tx.as_ref() else {
                return Err(StoreError::Closed);
            };
            tx.send((*account, namespace, reply))
                .map_err(|_| StoreError::Closed)?;
        }
        answer
            .await
            .map_err(|_| StoreError::unavailable("the PostgreSQL reader stopped before answering"))?
    }

    /// Takes no more lookups, answers the queued ones and waits for the readers to end.
    pub async fn close(&self) {
        drop(self.tx.lock().unwrap_or_else(PoisonError::into_inner).take());
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        for task in tasks {
            if let Err(e) = task.await {
                tracing::error!("a PostgreSQL reader task ended abnormally: {e}");
            }
        }
    }
}

async fn run(shared: Arc<Shared>) {
    loop {
        let batch = {
            let mut queue = shared.queue.lock().await;
            let Some(first) = queue.recv().await else { return };
            let mut batch = vec![first];
            while batch.len() < MAX_READS {
                let Ok(next) = queue.try_recv() else { break };
                batch.push(next);
            }
            batch
        };
        answer(&shared.pool, batch).await;
    }
}

async fn answer(pool: &Pool, batch: Vec<Lookup>) {
    match spans(pool, &batch).await {
        Ok(spans) => {
            for ((_, _, reply), span) in batch.into_iter().zip(spans) {
                let _ = reply.send(Ok(span));
            }
        }
        Err(e) if batch.len() == 1 => {
            if let Some((_, _, reply)) = batch.into_iter().next() {
                let _ = reply.send(Err(e));
            }
        }
        Err(e) => {
            tracing::debug!(
                reads = batch.len(),
                "a batch of seq spans failed ({e}); reading them one by one"
            );
            let each = batch.into_iter().map(|(account, namespace, reply)| async move {
                let r = match pool.get().await {
                    Ok(client) => ops::seq_span(&client, &account, namespace).await,
                    Err(e) => Err(pool_error(e)),
                };
                let _ = reply.send(r);
            });
            futures_util::future::join_all(each).await;
        }
    }
}

async fn spans(pool: &Pool, batch: &[Lookup]) -> Result<Vec<u64>, StoreError> {
    let client = pool.get().await.map_err(pool_error)?;
    let accounts: Vec<&[u8]> = batch.iter().map(|(a, _, _)| &a[..]).collect();
    let namespaces: Vec<i64> = batch.iter().map(|(_, ns, _)| i64::from(*ns)).collect();
    let stmt = client.prepare_cached(SEQ_SPANS).await.map_err(db_error)?;
    let rows = client
        .query(&stmt, &[&accounts, &namespaces])
        .await
        .map_err(db_error)?;
    if rows.len() != batch.len() {
        return Err(corrupt("seq span answer"));
    }
    rows.iter()
        .map(|row| u64::try_from(col::<i64>(row, 0)?).map_err(|_| corrupt("message seq")))
        .collect()
}
