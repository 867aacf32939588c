#!/usr/bin/env bash
# Audits the dependencies with cargo-deny (deny.toml), offline, against the RustSec
# snapshot in ../shared/advisory-db: advisories (none ignored), licences compatible with the
# AGPL, bans (duplicate versions only where deny.toml says why; `rsa`, RUSTSEC-2023-0071,
# and jsonwebtoken refused anywhere in the workspace) and sources (crates.io only).
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

# cargo-deny reads `cargo metadata` for every platform, so it needs the sources of crates
# that only another target uses (Windows console crates, say), which a build here never
# downloads; fetch them first, or `--offline` fails on a fresh machine.
cargo fetch --locked --quiet

# The snapshot sits beside the checkout (../shared); a checkout elsewhere (a CI clone)
# finds it at the workplace's path, or is told with TIDINGS_ADVISORY_DB.
source_db=""
for candidate in "${TIDINGS_ADVISORY_DB:-}" ../shared/advisory-db /work/shared/advisory-db; do
  if [ -n "$candidate" ] && [ -d "$candidate" ]; then
    source_db="$candidate"
    break
  fi
done
if [ -z "$source_db" ]; then
  # Licences, bans and sources need no database: they are checked all the same.
  echo "deny.sh: SKIPPING the advisories check: no RustSec snapshot at ../shared/advisory-db" \
    "or /work/shared/advisory-db (set TIDINGS_ADVISORY_DB)" >&2
  cargo deny --offline check licenses bans sources
  exit 0
fi
# cargo-deny reads its default database as a git checkout under db-path (deny.toml).
db=target/advisory-db
checkout="$db/advisory-db-3157b0e258782691"
rm -rf "$db" && mkdir -p "$db"
cp -r "$source_db" "$checkout"
git -C "$checkout" init -q
git -C "$checkout" add -A
git -C "$checkout" -c user.name=ci -c user.email=ci@localhost commit -qm snapshot

echo "deny.sh: advisories from $source_db"
cargo deny --offline check advisories licenses bans sources
