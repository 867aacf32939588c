#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/) for a while, starting from the committed corpus.
#
#   scripts/fuzz.sh [--ci] [SECONDS_PER_TARGET] [TARGET...]
#
# Needs cargo-fuzz (installed from crates.io when missing) and libFuzzer's sanitizer
# build, which wants a nightly compiler: with a stable one, RUSTC_BOOTSTRAP=1 is set.
# New inputs go to target/fuzz-corpus/<target>, never into the committed fuzz/corpus; a
# crash leaves its input in fuzz/artifacts/<target>/ and fails the script. Fix the bug,
# then copy the input into fuzz/corpus/<target>/ so the test suite replays it
# (tests/fuzz-targets/tests/corpus.rs) on every run.
#
# --ci: 15 s per target. Not called from .ci/run: installing cargo-fuzz and building the
# instrumented targets costs far more than CI's budget on a 2-core machine (figures in
# docs/security.md, "Fuzzing"); CI replays the corpus instead.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=60
if [ "${1:-}" = "--ci" ]; then
  seconds=15
  shift
fi
if [ -n "${1:-}" ] && [ "$1" -eq "$1" ] 2>/dev/null; then
  seconds=$1
  shift
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(unseal_registration push_payload config_message request)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi
if ! rustc --version | grep -q nightly; then
  export RUSTC_BOOTSTRAP=1
fi

cd fuzz
for t in "${targets[@]}"; do
  scratch="../target/fuzz-corpus/$t"
  mkdir -p "$scratch"
  echo "fuzz.sh: $t for ${seconds}s"
  cargo fuzz run "$t" "$scratch" "corpus/$t" -- -max_total_time="$seconds" 2>&1 |
    grep -E "INITED|Done [0-9]+ runs|ERROR|panicked|SUMMARY|Test unit written" || true
  if compgen -G "artifacts/$t/crash-*" >/dev/null; then
    echo "fuzz.sh: $t crashed; inputs in fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
echo "fuzz.sh: no crashes"
