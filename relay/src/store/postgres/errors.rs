//! How database and pool failures become [`StoreError`]s.
//!
//! Everything the operator can fix by bringing the database back (refused or dropped
//! connections, pool timeouts, a read-only standby, a full disk, too many connections)
//! is [`StoreError::Unavailable`]; a schema that is not the one this relay migrated to
//! is [`StoreError::Corrupt`]. Server-side `DETAIL` lines are left out on purpose: they
//! quote key values (account ids, hashes).

use std::error::Error as _;

use deadpool_postgres::PoolError;
use tokio_postgres::error::SqlState;

use crate::store::StoreError;

/// Maps a tokio-postgres error.
pub(crate) fn db_error(e: tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        let cause = format!("PostgreSQL error {} ({})", code.code(), db.message());
        return if schema_mismatch(code) {
            StoreError::Corrupt(format!(
                "{cause}; the database schema is not the one this relay expects (run `tidings-relay migrate`?)"
            ))
        } else if *code == SqlState::READ_ONLY_SQL_TRANSACTION {
            StoreError::Unavailable(format!("the database is read-only: {cause}"))
        } else if *code == SqlState::DISK_FULL {
            StoreError::Unavailable(format!("the database disk is full: {cause}"))
        } else {
            StoreError::Unavailable(cause)
        };
    }
    match e.source() {
        Some(source) => StoreError::Unavailable(format!("PostgreSQL: {e}: {source}")),
        None => StoreError::Unavailable(format!("PostgreSQL: {e}")),
    }
}

/// Maps a failure to get a pooled connection.
pub(crate) fn pool_error(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => db_error(e),
        PoolError::Closed => StoreError::Closed,
        PoolError::Timeout(kind) => {
            StoreError::Unavailable(format!("no PostgreSQL connection in time ({kind:?} timed out)"))
        }
        other => StoreError::Unavailable(format!("PostgreSQL connection pool: {other}")),
    }
}

fn schema_mismatch(code: &SqlState) -> bool {
    [
        SqlState::UNDEFINED_TABLE,
        SqlState::UNDEFINED_COLUMN,
        SqlState::UNDEFINED_FUNCTION,
        SqlState::INVALID_SCHEMA_NAME,
    ]
    .contains(code)
}

/// A stored value that this relay could not have written.
pub(crate) fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("PostgreSQL: malformed {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_closed_is_closed_and_timeouts_are_unavailable() {
        assert!(matches!(pool_error(PoolError::Closed), StoreError::Closed));
        let e = pool_error(PoolError::Timeout(deadpool_postgres::TimeoutType::Wait));
        assert!(matches!(e, StoreError::Unavailable(m) if m.contains("Wait")));
    }
}
