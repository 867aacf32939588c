//! `tidings-relay migrate`: applies the PostgreSQL schema once, then finds it up to date;
//! with the embedded store it has nothing to do. Skips visibly without PostgreSQL.

// Test code: a failed unwrap is a failed test with its line.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use support::{BIN, Schema, connect};

async fn run_migrate(config: &Path) -> Output {
    let run = tokio::process::Command::new(BIN)
        .args(["migrate", "--config"])
        .arg(config)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("migrate finishes")
        .expect("the binary runs")
}

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn migrate_applies_the_schema_once() {
    let Some(throwaway) = Schema::create("migrate_applies_the_schema_once").await else {
        return;
    };
    let client = connect(throwaway.server_url()).await.unwrap();
    let schema = throwaway.name();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("relay.toml");
    std::fs::write(
        &file,
        format!(
            "data_dir = {:?}\n[storage]\nbackend = \"postgres\"\npostgres_url = \"{}\"\n",
            dir.path().join("data"),
            throwaway.url()
        ),
    )
    .unwrap();
    let first = stdout(&run_migrate(&file).await);
    let second = stdout(&run_migrate(&file).await);
    let version: i64 = client
        .query_one(
            &format!("SELECT max(version) FROM {schema}.schema_migrations"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
    assert!(
        first.contains("applied PostgreSQL schema migration(s) [1, 2]"),
        "{first}"
    );
    assert!(second.contains("up to date (version 2)"), "{second}");
    assert_eq!(version, 2);

    std::fs::write(&file, format!("data_dir = {:?}\n", dir.path().join("data"))).unwrap();
    let embedded = stdout(&run_migrate(&file).await);
    assert!(embedded.contains("nothing to migrate"), "{embedded}");
}
