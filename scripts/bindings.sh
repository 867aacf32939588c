#!/usr/bin/env bash
# Generates the UniFFI bindings of tidings-mobile (mobile-glue/) from its shared library.
#
#   scripts/bindings.sh               Swift and Kotlin into mobile-glue/bindings/ (committed)
#   scripts/bindings.sh --check       regenerate into a temp dir, diff against the committed ones
#   scripts/bindings.sh --python DIR  Python into DIR, the shared library copied beside it
#
# The library is built as a debug cdylib only (no staticlib: faster); bindings do not
# depend on the profile. Generation runs with --no-format so the output does not depend
# on whether swiftformat or ktlint happen to be installed.
set -euo pipefail
cd "$(dirname "$0")/.."

case "$(uname -s)" in
  Darwin) ext=dylib ;;
  *) ext=so ;;
esac
lib="target/debug/libtidings_mobile.$ext"
bindgen="target/debug/uniffi-bindgen"

build() {
  cargo rustc -q -p tidings-mobile --lib --crate-type cdylib
  cargo build -q -p uniffi-bindgen
}

generate() { # language out-dir
  "$bindgen" generate --library "$lib" --language "$1" --out-dir "$2" --no-format >/dev/null
}

generate_mobile() { # out-dir
  generate swift "$1/swift"
  generate kotlin "$1/kotlin"
}

mode="${1:-write}"
build
case "$mode" in
  write)
    rm -rf mobile-glue/bindings/swift mobile-glue/bindings/kotlin
    generate_mobile mobile-glue/bindings
    echo "bindings.sh: wrote mobile-glue/bindings/{swift,kotlin}"
    ;;
  --check)
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    generate_mobile "$tmp"
    if diff -ru mobile-glue/bindings/swift "$tmp/swift" && diff -ru mobile-glue/bindings/kotlin "$tmp/kotlin"; then
      echo "bindings.sh: Swift and Kotlin bindings are up to date"
    else
      echo "bindings.sh: mobile-glue/bindings is stale: run scripts/bindings.sh and commit the result" >&2
      exit 1
    fi
    ;;
  --python)
    out="${2:?usage: scripts/bindings.sh --python DIR}"
    mkdir -p "$out"
    generate python "$out"
    cp "$lib" "$out/"
    echo "bindings.sh: Python bindings in $out"
    ;;
  *)
    echo "usage: scripts/bindings.sh [--check | --python DIR]" >&2
    exit 2
    ;;
esac
