//! `tidings-relay migrate`: applies the PostgreSQL schema once, then finds it up to date;
//! with the embedded store it has nothing to do. Skips visibly without PostgreSQL.

use std::io::Write;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use tokio_postgres::NoTls;

const BIN: &str = env!("CARGO_BIN_EXE_tidings-relay");
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

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
    let url = std::env::var("TIDINGS_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
    let mut config: tokio_postgres::Config = url.parse().unwrap();
    config.connect_timeout(Duration::from_secs(3));
    let client = match config.connect(NoTls).await {
        Ok((client, connection)) => {
            tokio::spawn(connection);
            client
        }
        Err(e) => {
            assert!(
                std::env::var_os("TIDINGS_TEST_REQUIRE_POSTGRES").is_none(),
                "PostgreSQL not reachable: {e}"
            );
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: migrate_applies_the_schema_once: PostgreSQL not reachable ({e})"
            );
            return;
        }
    };
    let schema = format!("tidings_test_{}", hex::encode(tidings_proto::random_bytes::<8>()));
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("relay.toml");
    let sep = if url.contains('?') { '&' } else { '?' };
    std::fs::write(
        &file,
        format!(
            "data_dir = {:?}\n[storage]\nbackend = \"postgres\"\npostgres_url = \"{url}{sep}options=-c%20search_path%3D{schema}\"\n",
            dir.path().join("data")
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
