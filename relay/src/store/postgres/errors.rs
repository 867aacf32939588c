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

/// A PostgreSQL server error, kept as a [`StoreError`]'s source by its SQLSTATE and
/// message only: the server's `DETAIL` and `HINT` lines quote key values (account
/// indexes, hashes), so the driver's own error, which prints them, is not kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SQLSTATE {code}: {message}")]
pub struct SqlError {
    /// The five-character SQLSTATE, e.g. `25006` for a read-only transaction.
    pub code: String,
    /// The server's primary message.
    pub message: String,
}

/// Maps a tokio-postgres error.
pub(crate) fn db_error(e: tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        let cause = format!("PostgreSQL error {} ({})", code.code(), db.message());
        let sql = SqlError {
            code: code.code().to_owned(),
            message: db.message().to_owned(),
        };
        let err = if schema_mismatch(code) {
            StoreError::corrupt(format!(
                "{cause}; the database schema is not the one this relay expects (run `tidings-relay migrate`?)"
            ))
        } else if *code == SqlState::READ_ONLY_SQL_TRANSACTION {
            StoreError::unavailable(format!("the database is read-only: {cause}"))
        } else if *code == SqlState::DISK_FULL {
            StoreError::unavailable(format!("the database disk is full: {cause}"))
        } else {
            StoreError::unavailable(cause)
        };
        // Not `e` itself: its Display carries the server's DETAIL line.
        return err.because(sql);
    }
    let reason = match e.source() {
        Some(source) => format!("PostgreSQL: {e}: {source}"),
        None => format!("PostgreSQL: {e}"),
    };
    StoreError::unavailable(reason).because(e)
}

/// Maps a failure to get a pooled connection.
pub(crate) fn pool_error(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => db_error(e),
        PoolError::Closed => StoreError::Closed,
        PoolError::Timeout(kind) => {
            StoreError::unavailable(format!("no PostgreSQL connection in time ({kind:?} timed out)"))
        }
        other => StoreError::unavailable(format!("PostgreSQL connection pool: {other}")).because(other),
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
    StoreError::corrupt(format!("PostgreSQL: malformed {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_closed_is_closed_and_timeouts_are_unavailable() {
        assert!(matches!(pool_error(PoolError::Closed), StoreError::Closed));
        let e = pool_error(PoolError::Timeout(deadpool_postgres::TimeoutType::Wait));
        assert!(matches!(e, StoreError::Unavailable { reason: m, .. } if m.contains("Wait")));
    }
}
