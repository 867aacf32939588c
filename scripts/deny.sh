#!/usr/bin/env bash
# Audits the dependencies with cargo-deny (deny.toml), offline, against the RustSec
# snapshot in ../shared/advisory-db, and checks that no shipped crate links `rsa`
# (RUSTSEC-2023-0071; deny.toml explains why the advisory is ignored for the mocks).
#
#   scripts/deny.sh            install cargo-deny when missing, then check
#
# A snapshot elsewhere: TIDINGS_ADVISORY_DB=/path/to/advisory-db scripts/deny.sh
set -euo pipefail
cd "$(dirname "$0")/.."

version=0.20.2
if ! command -v cargo-deny >/dev/null 2>&1; then
  echo "deny.sh: installing cargo-deny $version (about 3 minutes)" >&2
  cargo install cargo-deny --locked --version "$version" --quiet
fi

source_db="${TIDINGS_ADVISORY_DB:-../shared/advisory-db}"
if [ ! -d "$source_db" ]; then
  echo "deny.sh: no advisory snapshot at $source_db (set TIDINGS_ADVISORY_DB)" >&2
  exit 1
fi
# cargo-deny reads its default database as a git checkout under db-path (deny.toml).
db=target/advisory-db
checkout="$db/advisory-db-3157b0e258782691"
rm -rf "$db" && mkdir -p "$db"
cp -r "$source_db" "$checkout"
git -C "$checkout" init -q
git -C "$checkout" add -A
git -C "$checkout" -c user.name=ci -c user.email=ci@localhost commit -qm snapshot

cargo deny --offline check advisories licenses bans sources

shipped=(-p tidings-proto -p tidings-relay -p tidings-device-link -p tidings-mobile -p tidings-cli)
# `cargo tree -i` prints nothing (and succeeds) when the crate is not in the graph.
linked=$(cargo tree "${shipped[@]}" -e normal,build -i rsa --offline 2>/dev/null || true)
if [ -n "$linked" ]; then
  echo "deny.sh: a shipped crate links rsa (RUSTSEC-2023-0071):" >&2
  echo "$linked" >&2
  exit 1
fi
echo "deny.sh: no shipped crate links rsa"
