//! The redb tables, the schema version, and errors of the transaction code.
//!
//! Keys are the fixed-length byte strings of [`super::keys`]; values are the records of
//! [`super::records`], or plain integers where that is all there is.

use ::redb::{
    Database, ReadableDatabase, ReadableTable, Table, TableDefinition, TableError, WriteTransaction,
};

use crate::store::{StoreError, linkage::StoreKeys};

/// Bytes, for keys and values.
type B = &'static [u8];

/// A mailbox's seq counter (`be64`), messages (record) and hash index (`be64` seq),
/// under one prefix per mailbox (see [`super::keys`]). The counter is never lowered, so
/// seqs are never reused.
pub const MAILBOXES: TableDefinition<B, B> = TableDefinition::new("mailboxes");
/// `msg expiry key` → (): the sweep's range scan.
pub const MSG_EXPIRY: TableDefinition<B, ()> = TableDefinition::new("message_expiry");
/// An account's subscriptions (record) and per-subscription job index (empty), under one
/// prefix per account index. A prefix range over the subscriptions is the account →
/// devices index of the fan-out.
pub const ACCOUNTS: TableDefinition<B, B> = TableDefinition::new("push_accounts");
/// Pushed markers (keyed, opaque: see `store::linkage`) → `be64` expiry of the message:
/// a job for (device, hash) was created once.
pub const PUSHED: TableDefinition<B, B> = TableDefinition::new("pushed_markers");
/// `sub expiry key` → ().
pub const SUB_EXPIRY: TableDefinition<B, ()> = TableDefinition::new("subscription_expiry");
/// `pushed expiry key` → ().
pub const PUSHED_EXPIRY: TableDefinition<B, ()> = TableDefinition::new("pushed_expiry");
/// job id → job record.
pub const JOBS: TableDefinition<u64, B> = TableDefinition::new("jobs");
/// `due key` (visible_at, id) → (): what claim scans.
pub const DUE: TableDefinition<B, ()> = TableDefinition::new("job_due");
/// Named counters and the schema version.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The layout version this code reads and writes. Version 2 sealed what push jobs deliver
/// and keyed the pushed markers; version 1 files are refused (see `init_schema`).
pub const SCHEMA_VERSION: u64 = 2;
/// Meta key of the schema version.
pub const META_SCHEMA: &str = "schema_version";
/// Meta key of the next job id.
pub const META_NEXT_JOB: &str = "next_job_id";
/// Meta key that `check_writable` bumps.
pub const META_PROBE: &str = "writable_probe";
/// Meta key of the number of the last batch applied (see `writer`): the write-ahead log's
/// records up to it are in the database.
pub const META_LAST_BATCH: &str = "last_batch";

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
    pub mailboxes: Table<'t, B, B>,
    pub msg_expiry: Table<'t, B, ()>,
    pub accounts: Table<'t, B, B>,
    pub pushed: Table<'t, B, B>,
    pub sub_expiry: Table<'t, B, ()>,
    pub pushed_expiry: Table<'t, B, ()>,
    pub jobs: Table<'t, u64, B>,
    pub due: Table<'t, B, ()>,
    pub meta: Table<'t, &'static str, u64>,
    /// Seals job references and keys pushed markers.
    pub keys: &'t StoreKeys,
}

impl<'t> Tables<'t> {
    /// Opens (and on first use creates) every table.
    pub fn open(txn: &'t WriteTransaction, keys: &'t StoreKeys) -> Result<Self, TableError> {
        Ok(Tables {
            mailboxes: txn.open_table(MAILBOXES)?,
            msg_expiry: txn.open_table(MSG_EXPIRY)?,
            accounts: txn.open_table(ACCOUNTS)?,
            pushed: txn.open_table(PUSHED)?,
            sub_expiry: txn.open_table(SUB_EXPIRY)?,
            pushed_expiry: txn.open_table(PUSHED_EXPIRY)?,
            jobs: txn.open_table(JOBS)?,
            due: txn.open_table(DUE)?,
            meta: txn.open_table(META)?,
            keys,
        })
    }

    /// Takes the next value of a meta counter (starting at 1).
    pub fn next_counter(&mut self, key: &str) -> Result<u64, OpError> {
        let next = self.meta.get(key)?.map(|g| g.value()).unwrap_or(1);
        let after = next
            .checked_add(1)
            .ok_or_else(|| StoreError::corrupt(format!("meta counter {key} exhausted")))?;
        self.meta.insert(key, after)?;
        Ok(next)
    }
}

/// Creates the tables of a new file and checks the schema version of an existing one.
pub fn init_schema(db: &Database, keys: &StoreKeys) -> Result<(), OpError> {
    let txn = db.begin_write()?;
    {
        let mut tables = Tables::open(&txn, keys)?;
        let version = tables.meta.get(META_SCHEMA)?.map(|g| g.value());
        match version {
            Some(SCHEMA_VERSION) => {}
            Some(other) => {
                return Err(OpError::Op(StoreError::corrupt(format!(
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
    read.open_table(MAILBOXES)?;
    Ok(())
}
