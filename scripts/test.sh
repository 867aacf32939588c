#!/usr/bin/env bash
# The whole test suite, on a fresh machine: Rust unit, property and end-to-end tests
# (cargo-nextest when present, else cargo test), doc tests, and the binding tests.
# Tests that need PostgreSQL skip with a visible message when none is reachable.
set -euo pipefail
cd "$(dirname "$0")/.."

pg_url="${TIDINGS_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
if (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
  echo "test.sh: PostgreSQL reachable; PostgreSQL tests use $pg_url"
elif [ -n "${TIDINGS_TEST_REQUIRE_POSTGRES:-}" ] && [ -z "${TIDINGS_TEST_POSTGRES_URL:-}" ]; then
  # CI (.ci/run) sets this: PostgreSQL tests must run, not skip.
  echo "test.sh: nothing listens on 127.0.0.1:5432 but TIDINGS_TEST_REQUIRE_POSTGRES is set" >&2
  exit 1
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

# The sealed-message test vectors (docs/test-vectors.json), checked by an independent
# implementation: libsodium through PyNaCl and OpenSSL through `cryptography` (skips with
# a message when PyNaCl is missing; CI installs it).
if command -v python3 >/dev/null 2>&1; then
  python3 device-link/tests/python/check_sealed_vectors.py
  # The OHTTP gateway's key derivation (issue 13), from first principles over hmac and
  # OpenSSL's X25519.
  python3 relay/tests/python/check_ohttp_vectors.py
fi

# Soak (issue 7, part 6): Store, Retrieve long-polls, Subscribe churn and pushes to the
# mock providers at once for 10 s; exits non-zero on any error or a lost/duplicated push.
cargo build -q -p tidings-tests --bin tidings-bench
echo "test.sh: soak: tidings-bench soak --duration 10"
target/debug/tidings-bench soak --duration 10
echo "test.sh: soak passed (no errors, every push delivered exactly once)"

# The end-to-end suites again, on PostgreSQL (issue 6: same suite on both backends); each
# relay gets a throwaway schema (tidings-tests `TestRelay`).
if (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null || [ -n "${TIDINGS_TEST_POSTGRES_URL:-}" ]; then
  e2e=(--test mailbox --test fast_mode)
  [ -f tests/tests/device_link.rs ] && e2e+=(--test device_link)
  echo "test.sh: end-to-end suites on PostgreSQL: ${e2e[*]}"
  if cargo nextest --version >/dev/null 2>&1; then
    TIDINGS_TEST_BACKEND=postgres cargo nextest run -p tidings-tests --no-fail-fast "${e2e[@]}"
  else
    TIDINGS_TEST_BACKEND=postgres cargo test -p tidings-tests --no-fail-fast "${e2e[@]}"
  fi
else
  echo "test.sh: SKIPPING end-to-end suites on PostgreSQL: nothing listens on 127.0.0.1:5432 (set TIDINGS_TEST_POSTGRES_URL)"
fi

# Binding tests (mobile-glue): the cdylib, its generated Python bindings, and a relay wired
# to the mock APNs/FCM (tidings-testbed); also checks that the committed Swift and Kotlin
# bindings in mobile-glue/bindings are up to date.
if command -v python3 >/dev/null 2>&1; then
  scripts/bindings.sh --python target/bindings/python
  cargo build -q -p tidings-tests --bin tidings-testbed
  mobile_lib=target/debug/libtidings_mobile.so
  if [ "$(uname -s)" = Darwin ]; then mobile_lib=target/debug/libtidings_mobile.dylib; fi
  TIDINGS_BINDINGS_DIR=target/bindings/python \
    TIDINGS_TESTBED=target/debug/tidings-testbed \
    TIDINGS_BINDGEN=target/debug/uniffi-bindgen \
    TIDINGS_LIBRARY="$mobile_lib" \
    python3 mobile-glue/tests/python/run.py
else
  echo "test.sh: SKIPPING binding tests (mobile-glue/tests/python): python3 not found"
fi

# The iOS and Android packaging, as far as it can be checked without Xcode or the NDK: the
# shell scripts linted (shellcheck; skips with a message when missing, CI installs it), the
# 16 KB page-size check of the Android libraries, the Swift wrappers' symbols against the
# generated bindings.
scripts/packaging-check.sh

# The generated Kotlin and the Android library's Flow layer compiled against JNA and
# kotlinx-coroutines and run with the library, the Flow tests against tidings-testbed
# (skips with a message unless kotlinc and libjna-java are installed:
# scripts/kotlin-check.sh --install).
# CI sets KOTLIN_CHECK_INSTALL=1 so the toolchain is installed and the check never skips.
scripts/kotlin-check.sh ${KOTLIN_CHECK_INSTALL:+--install}
