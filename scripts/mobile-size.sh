#!/usr/bin/env bash
# The size of the phone library as shipped: builds the tidings-mobile cdylib for this host
# with the release-mobile profile (root Cargo.toml) and prints its size, its largest
# sections and, when cargo-bloat is installed (cargo install cargo-bloat --locked), the
# crates and functions that dominate its code (from an unstripped build of the same
# profile, in target/size-analysis).
#
#   scripts/mobile-size.sh [-n N]      (N: how many crates and functions to list; default 25)
#
# Takes a few minutes (fat LTO, one codegen unit). The figures in docs/mobile.md "Size"
# come from it.
set -euo pipefail
cd "$(dirname "$0")/.."

rows=25
if [ "${1:-}" = "-n" ]; then rows="${2:?usage: scripts/mobile-size.sh [-n N]}"; fi

case "$(uname -s)" in
  Darwin) lib=libtidings_mobile.dylib ;;
  *) lib=libtidings_mobile.so ;;
esac

cargo rustc -q -p tidings-mobile --lib --crate-type cdylib --profile release-mobile
shipped="target/release-mobile/$lib"
bytes=$(wc -c <"$shipped")
echo "mobile-size.sh: $shipped: $bytes bytes ($((bytes / 1024)) KiB), $(gzip -9c "$shipped" | wc -c) bytes gzipped"
if command -v size >/dev/null 2>&1 && [ "$(uname -s)" != Darwin ]; then
  echo "mobile-size.sh: largest sections (bytes):"
  size -A "$shipped" | awk '$1 ~ /^\./ && $2 > 4096 { printf "  %-20s %10d\n", $1, $2 }' | sort -k2 -nr
fi

if cargo bloat --version >/dev/null 2>&1; then
  # The same profile without stripping, in its own directory so the shipped build stays.
  export CARGO_PROFILE_SIZE_ANALYSIS_INHERITS=release-mobile
  export CARGO_PROFILE_SIZE_ANALYSIS_STRIP=false
  cargo bloat -q -p tidings-mobile --lib --profile size-analysis --crates -n "$rows"
  cargo bloat -q -p tidings-mobile --lib --profile size-analysis -n "$rows"
else
  echo "mobile-size.sh: no per-crate figures: cargo-bloat is not installed (cargo install cargo-bloat --locked)"
fi
