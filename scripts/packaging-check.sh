#!/usr/bin/env bash
# What can be checked here of the iOS and Android packaging, whose builds need Xcode or the
# Android NDK (neither is on the CI machine):
#
#   1. every shell script of the repository is linted with shellcheck (skipped, visibly,
#      when it is not installed; CI installs it);
#   2. mobile-glue/android/check-page-size.sh, which build-rust.sh runs on the Android
#      libraries, accepts a library linked with 16 KB pages and rejects one with 4 KB pages
#      (two small libraries linked here with cc);
#   3. the Swift wrappers (mobile-glue/swift/Sources/TidingsAsync) use only symbols the
#      committed Swift bindings declare (mobile-glue/tests/swift/check_symbols.py, which
#      first checks that it catches deliberate mistakes).
#
#   scripts/packaging-check.sh
#
# TIDINGS_SWIFT_BINDINGS=FILE checks the wrappers against another TidingsMobile.swift (e.g.
# freshly generated, before it is committed).
set -euo pipefail
cd "$(dirname "$0")/.."

passed=0
failed=0
ok() { echo "packaging-check.sh: ok: $1"; passed=$((passed + 1)); }
fail() { echo "packaging-check.sh: FAILED: $1"; failed=$((failed + 1)); }

# 1. shellcheck
scripts=()
while IFS= read -r -d '' f; do scripts+=("$f"); done < <(
  find . \( -path ./target -o -path ./fuzz/target -o -path ./.git -o -path '*/node_modules' \) -prune \
    -o -type f \( -name '*.sh' -o -path ./.ci/run \) -print0 | sort -z
)
if command -v shellcheck >/dev/null 2>&1; then
  if shellcheck "${scripts[@]}"; then
    ok "shellcheck: ${#scripts[@]} scripts"
  else
    fail "shellcheck"
  fi
else
  echo "packaging-check.sh: SKIPPING shellcheck of ${#scripts[@]} scripts: shellcheck not found (apt-get install shellcheck)"
fi

# 2. the 16 KB page-size check
if command -v cc >/dev/null 2>&1 && { command -v llvm-readelf || command -v readelf; } >/dev/null 2>&1; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  printf 'int tidings_page_probe(void) { return 1; }\n' >"$tmp/probe.c"
  cc -shared -fPIC -Wl,-z,max-page-size=16384 -o "$tmp/aligned.so" "$tmp/probe.c"
  cc -shared -fPIC -Wl,-z,max-page-size=4096 -o "$tmp/small.so" "$tmp/probe.c"
  if mobile-glue/android/check-page-size.sh "$tmp/aligned.so" >/dev/null &&
    ! mobile-glue/android/check-page-size.sh "$tmp/small.so" >/dev/null 2>&1; then
    ok "check-page-size.sh accepts 16 KB alignment and rejects 4 KB"
  else
    fail "check-page-size.sh misjudged a library"
  fi
else
  echo "packaging-check.sh: SKIPPING the page-size check's test: needs cc and readelf"
fi

# 3. the Swift wrappers against the generated bindings
swift_bindings=(${TIDINGS_SWIFT_BINDINGS:+--bindings "$TIDINGS_SWIFT_BINDINGS"})
if ! command -v python3 >/dev/null 2>&1; then
  echo "packaging-check.sh: SKIPPING the Swift wrappers' symbol check: python3 not found"
elif python3 mobile-glue/tests/swift/check_symbols.py --self-test "${swift_bindings[@]}"; then
  ok "Swift wrapper symbols"
else
  fail "Swift wrapper symbols (mobile-glue/tests/swift/check_symbols.py)"
fi

echo "packaging checks: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
