#!/usr/bin/env bash
# Builds libtidings_mobile.so for the Android ABIs with cargo-ndk into OUT/<abi>/ (the
# layout of a jniLibs directory). The Gradle module (build.gradle.kts) runs it before
# every build; it can be run by hand too:
#
#   mobile-glue/android/build-rust.sh [OUT]        (default: mobile-glue/android/build/rustJniLibs)
#
# Needs: ANDROID_NDK_HOME (NDK r27 or later), the Rust targets and cargo-ndk:
#   rustup target add aarch64-linux-android armv7-linux-androideabi x86_64-linux-android
#   cargo install cargo-ndk --locked
#
# Every library is linked with 16 KB page alignment (Google Play requires it for apps
# targeting Android 15 on 64-bit devices; harmless on 4 KB devices and on armeabi-v7a),
# and the 64-bit ones are checked for it afterwards (check-page-size.sh, with the NDK's
# llvm-readelf).
#
# Written to the platform's conventions; not run on the CI machine (no NDK there).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-$here/build/rustJniLibs}"
min_sdk="${TIDINGS_ANDROID_MIN_SDK:-24}"
profile="${TIDINGS_PROFILE:-release-mobile}"

if [ -z "${ANDROID_NDK_HOME:-}" ]; then
  echo "build-rust.sh: set ANDROID_NDK_HOME to an NDK (r27 or later)" >&2
  exit 1
fi
if ! cargo ndk --version >/dev/null 2>&1; then
  echo "build-rust.sh: cargo-ndk is missing: cargo install cargo-ndk --locked" >&2
  exit 1
fi

# Per target, so build scripts and proc macros (built for the host) are left alone.
page_align="-C link-arg=-Wl,-z,max-page-size=16384"
export CARGO_TARGET_AARCH64_LINUX_ANDROID_RUSTFLAGS="$page_align"
export CARGO_TARGET_ARMV7_LINUX_ANDROIDEABI_RUSTFLAGS="$page_align"
export CARGO_TARGET_X86_64_LINUX_ANDROID_RUSTFLAGS="$page_align"

mkdir -p "$out"
cd "$root"
cargo ndk -t arm64-v8a -t armeabi-v7a -t x86_64 --platform "$min_sdk" -o "$out" \
  build --profile "$profile" -p tidings-mobile --lib

libs=()
for abi in arm64-v8a armeabi-v7a x86_64; do
  lib="$out/$abi/libtidings_mobile.so"
  if [ ! -f "$lib" ]; then
    echo "build-rust.sh: cargo-ndk did not produce $lib" >&2
    exit 1
  fi
  echo "build-rust.sh: $abi: $(wc -c <"$lib") bytes"
  # 16 KB pages exist on 64-bit devices only.
  [ "$abi" = armeabi-v7a ] || libs+=("$lib")
done
READELF="${READELF:-$(find "$ANDROID_NDK_HOME/toolchains/llvm/prebuilt" -name llvm-readelf -type f 2>/dev/null | head -n 1)}"
export READELF
"$here/check-page-size.sh" "${libs[@]}"
