//! Throwaway PostgreSQL schemas for tests, here and in `tidings-tests`.
//!
//! Each test gets an empty, uniquely named schema and a URL whose connections use it
//! (`options=-c search_path=…`), so tests run in parallel on one server. The server is
//! `TIDINGS_TEST_POSTGRES_URL` (default: the local one). When it cannot be reached the
//! test prints a `SKIPPED:` line and passes, unless `TIDINGS_TEST_REQUIRE_POSTGRES` is
//! set (CI sets it where PostgreSQL runs), in which case it fails.

use std::io::Write;
use std::time::Duration;

use tokio_postgres::NoTls;

use super::parse_url;

/// The environment variable naming the test server.
pub const URL_ENV: &str = "TIDINGS_TEST_POSTGRES_URL";
/// Set (to anything) to fail instead of skip when the server is unreachable.
pub const REQUIRE_ENV: &str = "TIDINGS_TEST_REQUIRE_POSTGRES";
/// The server tests use when [`URL_ENV`] is not set.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// An empty schema, dropped (with everything in it) when this is dropped.
#[derive(Debug)]
pub struct TestSchema {
    name: String,
    server_url: String,
    url: String,
}

impl TestSchema {
    /// Creates a fresh schema for `test`, or says why not and returns `None` (the test
    /// should then return; see the module docs).
    pub async fn create(test: &str) -> Option<TestSchema> {
        let server_url = std::env::var(URL_ENV).unwrap_or_else(|_| DEFAULT_URL.to_owned());
        let client = match connect(&server_url).await {
            Ok(client) => client,
            Err(why) => {
                skip(test, &server_url, &why);
                return None;
            }
        };
        let name = format!("tidings_test_{}", hex::encode(tidings_proto::random_bytes::<8>()));
        client
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .expect("the test server refuses to create a schema");
        Some(TestSchema {
            url: with_search_path(&server_url, &name),
            name,
            server_url,
        })
    }

    /// A URL for stores (and relay configs) that work in this schema.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// This schema's URL with more server settings, e.g. `-c default_transaction_read_only=on`.
    pub fn url_with_options(&self, options: &str) -> String {
        with_options(
            &self.server_url,
            &format!("-c search_path={} {options}", self.name),
        )
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server the schema lives on (its URL without the schema's search path), for
    /// tests that look into the schema over a connection of their own.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot be blocked on; a thread with
        // its own runtime can. A schema left behind (server gone meanwhile) is harmless.
        let (url, name) = (self.server_url.clone(), self.name.clone());
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async {
                if let Ok(client) = connect(&url).await {
                    let _ = client
                        .batch_execute(&format!(
                            "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {name} CASCADE"
                        ))
                        .await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// Connects once (its connection driven by a task), with a short timeout.
async fn connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let mut config = parse_url(url).map_err(|e| e.to_string())?;
    config.connect_timeout(Duration::from_secs(3));
    let (client, connection) = config.connect(NoTls).await.map_err(|e| {
        let source = std::error::Error::source(&e)
            .map(|s| format!(": {s}"))
            .unwrap_or_default();
        format!("{e}{source}")
    })?;
    tokio::spawn(connection);
    Ok(client)
}

fn skip(test: &str, url: &str, why: &str) {
    let url = redact(url);
    assert!(
        std::env::var_os(REQUIRE_ENV).is_none(),
        "{test}: PostgreSQL not reachable at {url} ({why}) but {REQUIRE_ENV} is set"
    );
    // Straight to the process's stderr: libtest captures eprintln! of passing tests.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {test}: PostgreSQL not reachable at {url} ({why}); set {URL_ENV}"
    );
}

/// `url` with its password (if any) hidden.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

fn with_search_path(url: &str, schema: &str) -> String {
    with_options(url, &format!("-c search_path={schema}"))
}

/// Adds the `options` connection parameter to a URL or key=value string.
fn with_options(url: &str, options: &str) -> String {
    if url.contains("://") {
        let encoded = options
            .replace('%', "%25")
            .replace(' ', "%20")
            .replace('=', "%3D");
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}options={encoded}")
    } else {
        format!("{url} options='{options}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_get_options_and_lose_passwords() {
        assert_eq!(
            with_search_path("postgres://u@h/db", "s1"),
            "postgres://u@h/db?options=-c%20search_path%3Ds1"
        );
        assert_eq!(
            with_search_path("postgres://u@h/db?sslmode=disable", "s1"),
            "postgres://u@h/db?sslmode=disable&options=-c%20search_path%3Ds1"
        );
        assert_eq!(
            with_search_path("host=h user=u", "s1"),
            "host=h user=u options='-c search_path=s1'"
        );
        let parsed = parse_url(&with_search_path("postgres://u@h/db", "s1")).unwrap();
        assert_eq!(parsed.get_options(), Some("-c search_path=s1"));
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
