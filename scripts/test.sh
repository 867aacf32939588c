#!/usr/bin/env bash
# The whole test suite, on a fresh machine: Rust unit, property and end-to-end tests
# (cargo-nextest when present, else cargo test), doc tests, and the binding tests.
# Tests that need PostgreSQL skip with a visible message when none is reachable.
set -euo pipefail
cd "$(dirname "$0")/.."

pg_url="${TIDINGS_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
if (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
  echo "test.sh: PostgreSQL reachable; PostgreSQL tests use $pg_url"
else
  echo "test.sh: SKIPPING PostgreSQL tests: nothing listens on 127.0.0.1:5432 (set TIDINGS_TEST_POSTGRES_URL)"
fi

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  echo "test.sh: cargo-nextest not found, using cargo test"
  cargo test --workspace --no-fail-fast "$@"
fi
cargo test --workspace --doc --quiet
