//! Mapping redb's errors to [`StoreError`], naming the cause an operator can act on.

use std::io::ErrorKind;

use ::redb::{DatabaseError, Error};

use crate::store::StoreError;

/// Names an I/O failure by what the operator must fix.
pub fn io_cause(e: &std::io::Error) -> String {
    match e.kind() {
        ErrorKind::StorageFull => format!("disk full: {e}"),
        ErrorKind::QuotaExceeded => format!("disk quota exceeded: {e}"),
        ErrorKind::ReadOnlyFilesystem => format!("file system is read-only: {e}"),
        ErrorKind::PermissionDenied => format!("permission denied: {e}"),
        _ => format!("I/O error: {e}"),
    }
}

/// Whether redb latched the database after this error, so it must be reopened.
pub fn reopen_needed(e: &Error) -> bool {
    matches!(e, Error::Io(_) | Error::PreviousIo)
}

/// Maps an error of a transaction.
pub fn db_error(e: Error) -> StoreError {
    match e {
        Error::Io(io) => StoreError::unavailable(io_cause(&io)).because(io),
        Error::PreviousIo => {
            StoreError::unavailable("an earlier I/O error stopped the database; it is being reopened")
        }
        Error::Corrupted(why) => StoreError::corrupt(why),
        Error::DatabaseClosed => StoreError::Closed,
        Error::TableTypeMismatch { .. }
        | Error::TypeDefinitionChanged { .. }
        | Error::TableIsMultimap(_)
        | Error::TableIsNotMultimap(_) => {
            StoreError::corrupt(format!("the file is not a tidings store: {e}")).because(e)
        }
        other => StoreError::unavailable(other.to_string()).because(other),
    }
}

/// Maps an error of opening the file.
pub fn open_error(e: DatabaseError) -> StoreError {
    match e {
        DatabaseError::DatabaseAlreadyOpen => {
            StoreError::unavailable("the database file is in use by another process")
        }
        DatabaseError::UpgradeRequired(v) => StoreError::corrupt(format!(
            "the database file has an unsupported redb format version {v}"
        )),
        other => db_error(other.into()),
    }
}
