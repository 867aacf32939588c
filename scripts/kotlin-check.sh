#!/usr/bin/env bash
# Compiles the committed Kotlin bindings (mobile-glue/bindings/kotlin) together with the
# Android library's Kotlin layer (mobile-glue/android/src/main/kotlin/tidings/mobile/flow:
# Flow/StateFlow wrappers and suspend helpers) and the JVM tests (mobile-glue/tests/kotlin)
# against JNA and kotlinx-coroutines, and runs them on the JVM with the library:
#
#   Smoke.kt  the bindings: typed exceptions, records, objects, suspend functions (no network)
#   Flows.kt  the Flow layer against a real relay (the tidings-testbed binary): a Flow
#             collects a message another client sent, cancelling the collecting coroutine
#             cancels the SDK call under it, the mode status as a StateFlow, restore progress
#
# TIDINGS_KOTLIN_BINDINGS=DIR compiles other bindings instead (e.g. freshly generated ones,
# before they are committed); TIDINGS_TESTBED=PATH uses a testbed binary built elsewhere.
# The Android-only TidingsPlatform.kt (android.content.Context) is compiled by Gradle only.
#
# Needs a JDK, JNA (Debian: libjna-java) and kotlinc (npm: kotlin-compiler, which also
# ships kotlinx-coroutines). `scripts/kotlin-check.sh --install` installs the last two
# (kotlinc into target/kotlinc); without them the check prints why it skips and succeeds.
set -euo pipefail
cd "$(dirname "$0")/.."

KOTLIN_COMPILER_VERSION=2.4.20
kotlin_home="target/kotlinc/node_modules/kotlin-compiler"

if [ "${1:-}" = "--install" ]; then
  # A registry that cannot be reached makes the check skip (below), not fail: only a
  # compile or run failure of the bindings is an error.
  if [ ! -f /usr/share/java/jna.jar ]; then
    { apt-get install -y -qq libjna-java >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq libjna-java >/dev/null 2>&1; }; } ||
      echo "kotlin-check.sh: could not install libjna-java"
  fi
  if [ ! -x "$kotlin_home/bin/kotlinc" ]; then
    npm install --silent --no-audit --no-fund --prefix target/kotlinc "kotlin-compiler@$KOTLIN_COMPILER_VERSION" ||
      echo "kotlin-check.sh: could not install kotlin-compiler from npm"
  fi
fi

jna="${JNA_JAR:-/usr/share/java/jna.jar}"
kotlinc="${KOTLINC:-$kotlin_home/bin/kotlinc}"
if ! command -v java >/dev/null 2>&1 || [ ! -f "$jna" ] || [ ! -x "$kotlinc" ]; then
  echo "kotlin-check.sh: SKIPPING the Kotlin compile check: needs java, $jna (libjna-java) and $kotlinc (run scripts/kotlin-check.sh --install)"
  exit 0
fi
kotlin_lib="$(dirname "$(dirname "$(readlink -f "$kotlinc")")")/lib"
coroutines="$kotlin_lib/kotlinx-coroutines-core-jvm.jar"

bindings="${TIDINGS_KOTLIN_BINDINGS:-mobile-glue/bindings/kotlin}"
cargo rustc -q -p tidings-mobile --lib --crate-type cdylib
testbed="${TIDINGS_TESTBED:-}"
if [ -z "$testbed" ]; then
  cargo build -q -p tidings-tests --bin tidings-testbed
  testbed=target/debug/tidings-testbed
fi
out="target/kotlin-check"
rm -rf "$out" && mkdir -p "$out"
"$kotlinc" -nowarn "$bindings/tidings/mobile/tidings_mobile.kt" \
  mobile-glue/android/src/main/kotlin/tidings/mobile/flow/*.kt \
  mobile-glue/tests/kotlin/*.kt \
  -cp "$jna:$coroutines" -d "$out/kotlin-check.jar"
classpath="$out/kotlin-check.jar:$jna:$coroutines:$kotlin_lib/kotlin-stdlib.jar"
java -Djna.library.path=target/debug -cp "$classpath" SmokeKt
TIDINGS_TESTBED="$testbed" java -Djna.library.path=target/debug -cp "$classpath" flowtest.FlowsKt
