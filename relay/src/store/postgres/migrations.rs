//! Versioned schema migrations, embedded in the binary.
//!
//! All pending migrations run in one transaction that first takes a transaction-scoped
//! advisory lock, so nodes starting together queue up: the first applies them, the
//! others then find nothing left to do. `schema_migrations` records each version with a
//! checksum of its SQL; a released migration that was edited afterwards is refused, since
//! databases migrated before and after the edit would differ silently.
//!
//! A database already at a newer version than this binary knows is accepted with a
//! warning: during a rolling upgrade old nodes keep running against the new schema, so
//! migrations must stay compatible with the previous release.

use sha2::{Digest, Sha256};

use super::errors::db_error;
use crate::store::StoreError;

/// One embedded migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Its version; versions ascend without gaps from 1.
    pub version: i64,
    /// A short name for logs.
    pub name: &'static str,
    /// The SQL, run as one batch.
    pub sql: &'static str,
}

/// Every migration this binary knows, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../../../migrations/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "unlinkable_outbox",
        sql: include_str!("../../../migrations/0002_unlinkable_outbox.sql"),
    },
];

/// The two-key advisory lock space of the migrator ("ti"); the second key is the schema,
/// so deployments in different schemas of one database do not wait for each other.
const LOCK_CLASS: i32 = 0x7469;

/// What a migration run (`apply`) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// The versions this call applied, ascending (empty when the schema was up to date).
    pub applied: Vec<i64>,
    /// The schema version the database is at now.
    pub version: i64,
}

/// Applies the pending migrations in one transaction (see the module docs).
pub(crate) async fn apply(client: &mut tokio_postgres::Client) -> Result<MigrationReport, StoreError> {
    let tx = client.transaction().await.map_err(db_error)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))",
        &[&LOCK_CLASS],
    )
    .await
    .map_err(db_error)?;
    // Looked up first, so that a node on a read-only standby can still open a migrated
    // database (and report itself unready) instead of failing on the CREATE.
    let exists: bool = tx
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await
        .map_err(db_error)?
        .try_get(0)
        .map_err(db_error)?;
    if !exists {
        tx.batch_execute(
            "CREATE TABLE schema_migrations (
             version    bigint      PRIMARY KEY,
             name       text        NOT NULL,
             checksum   text        NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
        )
        .await
        .map_err(db_error)?;
    }
    let rows = tx
        .query(
            "SELECT version, checksum FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .map_err(db_error)?;
    let recorded = rows
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<Vec<(i64, String)>, tokio_postgres::Error>>()
        .map_err(db_error)?;
    let mut applied = Vec::new();
    for m in MIGRATIONS {
        let sum = checksum(m.sql);
        match recorded.iter().find(|(v, _)| *v == m.version) {
            Some((_, stored)) if *stored == sum => continue,
            Some(_) => {
                return Err(StoreError::corrupt(format!(
                    "schema migration {} ({}) differs from the one applied to this database",
                    m.version, m.name
                )));
            }
            None => {}
        }
        tx.batch_execute(m.sql).await.map_err(db_error)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &sum],
        )
        .await
        .map_err(db_error)?;
        applied.push(m.version);
    }
    tx.commit().await.map_err(db_error)?;
    for v in &applied {
        tracing::info!(version = v, "applied PostgreSQL schema migration");
    }
    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    let newest = recorded.iter().map(|(v, _)| *v).max().unwrap_or(0);
    if newest > known {
        tracing::warn!(
            database = newest,
            known,
            "the PostgreSQL schema is newer than this relay; running on it (rolling upgrade?)"
        );
    }
    Ok(MigrationReport {
        applied,
        version: newest.max(known),
    })
}

fn checksum(sql: &str) -> String {
    hex::encode(Sha256::digest(sql.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_ascend_from_one_without_gaps() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i64::try_from(i).unwrap() + 1, "{}", m.name);
            assert!(!m.sql.trim().is_empty());
        }
    }
}
