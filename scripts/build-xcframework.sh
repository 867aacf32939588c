#!/usr/bin/env bash
# Builds the iOS XCFramework of tidings-mobile: the Rust static library for devices
# (aarch64-apple-ios) and for the simulator (aarch64-apple-ios-sim and x86_64-apple-ios
# combined with lipo), each with the generated C header and its module map, so that the
# Swift package (Package.swift, target TidingsMobile) can import TidingsMobileFFI.
#
#   scripts/build-xcframework.sh [--zip] [--skip-bindings-check]
#
#   --zip                   also write TidingsMobileFFI.xcframework.zip and print the
#                           checksum for a release's binaryTarget(url:checksum:)
#   --skip-bindings-check   do not check that mobile-glue/bindings/swift is current
#
# Output: mobile-glue/swift/TidingsMobileFFI.xcframework (not committed: build it, or use
# a release's zip). Runs on macOS with Xcode and rustup; the profile is release-mobile
# (root Cargo.toml: LTO, one codegen unit, opt-level "s", unwinding panics).
# IPHONEOS_DEPLOYMENT_TARGET (default 15.0) is the oldest iOS the library runs on.
#
# Written to Apple's conventions; not run on the CI machine (no Xcode there): there it is
# only linted (scripts/lint-scripts.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

zip=false
check_bindings=true
for arg in "$@"; do
  case "$arg" in
    --zip) zip=true ;;
    --skip-bindings-check) check_bindings=false ;;
    *)
      echo "usage: scripts/build-xcframework.sh [--zip] [--skip-bindings-check]" >&2
      exit 2
      ;;
  esac
done

if [ "$(uname -s)" != Darwin ] || ! command -v xcodebuild >/dev/null 2>&1; then
  echo "build-xcframework.sh: needs macOS with Xcode (xcodebuild, lipo, strip)" >&2
  exit 1
fi

profile=release-mobile
device=aarch64-apple-ios
simulators=(aarch64-apple-ios-sim x86_64-apple-ios)
lib=libtidings_mobile.a
bindings=mobile-glue/bindings/swift
out=mobile-glue/swift/TidingsMobileFFI.xcframework
work=target/xcframework
export IPHONEOS_DEPLOYMENT_TARGET="${IPHONEOS_DEPLOYMENT_TARGET:-15.0}"

missing=()
for target in "$device" "${simulators[@]}"; do
  rustup target list --installed | grep -qx "$target" || missing+=("$target")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "build-xcframework.sh: missing Rust targets; run: rustup target add ${missing[*]}" >&2
  exit 1
fi

# The header in the XCFramework must match the Swift bindings the package compiles.
if $check_bindings; then
  scripts/bindings.sh --check
fi

build() { # target
  # The crate's own crate types are lib and cdylib; the static library is asked for here.
  cargo rustc -p tidings-mobile --lib --crate-type staticlib --profile "$profile" --target "$1"
}

rm -rf "$work"
mkdir -p "$work/ios" "$work/ios-simulator" "$work/headers/TidingsMobileFFI"

for target in "$device" "${simulators[@]}"; do
  echo "build-xcframework.sh: building $target"
  build "$target"
done
# What an app must link besides the library (Package.swift's linkerSettings list them).
cargo rustc -q -p tidings-mobile --lib --crate-type staticlib --profile "$profile" --target "$device" \
  -- --print native-static-libs 2>&1 | grep -i 'native-static-libs' || true

cp "target/$device/$profile/$lib" "$work/ios/$lib"
sim_libs=()
for target in "${simulators[@]}"; do
  sim_libs+=("target/$target/$profile/$lib")
done
lipo -create "${sim_libs[@]}" -output "$work/ios-simulator/$lib"

# Debug symbols and local symbols only: a static library's global symbols are what the
# app's linker resolves against.
for slice in ios ios-simulator; do
  strip -S -x "$work/$slice/$lib"
done

# One subdirectory per module, so that the module map does not collide with another
# XCFramework's in the app's build directory (Xcode copies every Headers/ into one place).
cp "$bindings/TidingsMobileFFI.h" "$work/headers/TidingsMobileFFI/"
cp "$bindings/TidingsMobileFFI.modulemap" "$work/headers/TidingsMobileFFI/module.modulemap"

rm -rf "$out"
xcodebuild -create-xcframework \
  -library "$work/ios/$lib" -headers "$work/headers" \
  -library "$work/ios-simulator/$lib" -headers "$work/headers" \
  -output "$out"

for slice in ios ios-simulator; do
  echo "build-xcframework.sh: $slice: $(wc -c <"$work/$slice/$lib") bytes ($(lipo -archs "$work/$slice/$lib"))"
done
echo "build-xcframework.sh: wrote $out"

if $zip; then
  archive="$out.zip"
  rm -f "$archive"
  (cd "$(dirname "$out")" && ditto -c -k --sequesterRsrc --keepParent "$(basename "$out")" "$(basename "$archive")")
  echo "build-xcframework.sh: wrote $archive"
  echo "build-xcframework.sh: checksum $(swift package compute-checksum "$archive")"
fi
