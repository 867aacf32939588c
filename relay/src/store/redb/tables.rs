//! The redb tables, the schema version, and errors of the transaction code.
//!
//! Keys are the fixed-length byte strings of [`super::keys`]; values are the records of
//! [`super::records`], or plain integers where that is all there is.

use ::redb::{
    Database, ReadableDatabase, ReadableTable, Table, TableDefinition, TableError, WriteTransaction,
};

use crate::store::StoreError;

/// Bytes, for keys and values.
type B = &'static [u8];

/// `msg key` → message record.
pub const MESSAGES: TableDefinition<B, B> = TableDefinition::new("messages");
/// `hash key` → seq: idempotency and deletes by hash.
pub const HASHES: TableDefinition<B, u64> = TableDefinition::new("message_hashes");
/// `mailbox key` → last seq handed out; never lowered, so seqs are never reused.
pub const COUNTERS: TableDefinition<B, u64> = TableDefinition::new("mailbox_last_seq");
/// `msg expiry key` → (): the sweep's range scan.
pub const MSG_EXPIRY: TableDefinition<B, ()> = TableDefinition::new("message_expiry");
/// `sub key` → subscription record. The key starts with the account index, so a prefix
/// range is the account → devices index of the fan-out.
pub const SUBS: TableDefinition<B, B> = TableDefinition::new("subscriptions");
/// `sub expiry key` → ().
pub const SUB_EXPIRY: TableDefinition<B, ()> = TableDefinition::new("subscription_expiry");
/// job id → job record.
pub const JOBS: TableDefinition<u64, B> = TableDefinition::new("jobs");
/// `due key` (visible_at, id) → (): what claim scans.
pub const DUE: TableDefinition<B, ()> = TableDefinition::new("job_due");
/// `sub job key` → (): the pending jobs of one subscription.
pub const SUB_JOBS: TableDefinition<B, ()> = TableDefinition::new("subscription_jobs");
/// `pushed key` → expiry of the message: a job for (device, hash) was created once.
pub const PUSHED: TableDefinition<B, i64> = TableDefinition::new("pushed");
/// `pushed expiry key` → ().
pub const PUSHED_EXPIRY: TableDefinition<B, ()> = TableDefinition::new("pushed_expiry");
/// Named counters and the schema version.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The layout version this code reads and writes.
pub const SCHEMA_VERSION: u64 = 1;
/// Meta key of the schema version.
pub const META_SCHEMA: &str = "schema_version";
/// Meta key of the next job id.
pub const META_NEXT_JOB: &str = "next_job_id";
/// Meta key that `check_writable` bumps.
pub const META_PROBE: &str = "writable_probe";

/// Why one operation inside a transaction failed.
#[derive(Debug)]
pub enum OpError {
    /// This operation alone fails (bad record, exhausted counter); the rest of the batch
    /// goes on without it.
    Op(StoreError),
    /// redb failed: the transaction is lost and the whole batch fails.
    Db(::redb::Error),
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        OpError::Op(e)
    }
}

macro_rules! db_error_into_op_error {
    ($($t:ty),*) => {$(
        impl From<$t> for OpError {
            fn from(e: $t) -> Self {
                OpError::Db(e.into())
            }
        }
    )*};
}
db_error_into_op_error!(
    ::redb::Error,
    ::redb::StorageError,
    ::redb::TableError,
    ::redb::TransactionError,
    ::redb::CommitError,
    ::redb::SetDurabilityError
);

/// All tables, opened in one write transaction.
pub struct Tables<'t> {
    pub messages: Table<'t, B, B>,
    pub hashes: Table<'t, B, u64>,
    pub counters: Table<'t, B, u64>,
    pub msg_expiry: Table<'t, B, ()>,
    pub subs: Table<'t, B, B>,
    pub sub_expiry: Table<'t, B, ()>,
    pub jobs: Table<'t, u64, B>,
    pub due: Table<'t, B, ()>,
    pub sub_jobs: Table<'t, B, ()>,
    pub pushed: Table<'t, B, i64>,
    pub pushed_expiry: Table<'t, B, ()>,
    pub meta: Table<'t, &'static str, u64>,
}

impl<'t> Tables<'t> {
    /// Opens (and on first use creates) every table.
    pub fn open(txn: &'t WriteTransaction) -> Result<Self, TableError> {
        Ok(Tables {
            messages: txn.open_table(MESSAGES)?,
            hashes: txn.open_table(HASHES)?,
            counters: txn.open_table(COUNTERS)?,
            msg_expiry: txn.open_table(MSG_EXPIRY)?,
            subs: txn.open_table(SUBS)?,
            sub_expiry: txn.open_table(SUB_EXPIRY)?,
            jobs: txn.open_table(JOBS)?,
            due: txn.open_table(DUE)?,
            sub_jobs: txn.open_table(SUB_JOBS)?,
            pushed: txn.open_table(PUSHED)?,
            pushed_expiry: txn.open_table(PUSHED_EXPIRY)?,
            meta: txn.open_table(META)?,
        })
    }

    /// Takes the next value of a meta counter (starting at 1).
    pub fn next_counter(&mut self, key: &str) -> Result<u64, OpError> {
        let next = self.meta.get(key)?.map(|g| g.value()).unwrap_or(1);
        let after = next
            .checked_add(1)
            .ok_or_else(|| StoreError::Corrupt(format!("meta counter {key} exhausted")))?;
        self.meta.insert(key, after)?;
        Ok(next)
    }
}

/// Creates the tables of a new file and checks the schema version of an existing one.
pub fn init_schema(db: &Database) -> Result<(), OpError> {
    let txn = db.begin_write()?;
    {
        let mut tables = Tables::open(&txn)?;
        let version = tables.meta.get(META_SCHEMA)?.map(|g| g.value());
        match version {
            Some(SCHEMA_VERSION) => {}
            Some(other) => {
                return Err(OpError::Op(StoreError::Corrupt(format!(
                    "database has schema version {other}, this relay knows only {SCHEMA_VERSION}"
                ))));
            }
            None => {
                tables.meta.insert(META_SCHEMA, SCHEMA_VERSION)?;
            }
        }
    }
    txn.commit()?;
    // A read right away proves the tables are readable too (catches type mismatches early).
    let read = db.begin_read()?;
    read.open_table(MESSAGES)?;
    Ok(())
}
