#!/usr/bin/env bash
# Checks that every LOAD segment of each ELF shared library is aligned to 16 KB or more,
# which is what lets it load on Android devices with 16 KB memory pages.
#
#   mobile-glue/android/check-page-size.sh LIB.so...
#
# Uses $READELF, else llvm-readelf or readelf from PATH. Exits 1 naming the first library
# that is not aligned. (build-rust.sh runs it on what cargo-ndk built; the test suite runs
# it on two small libraries linked here, one of each kind.)
set -euo pipefail

readelf_bin="${READELF:-}"
if [ -z "$readelf_bin" ]; then
  readelf_bin="$(command -v llvm-readelf || command -v readelf || true)"
fi
if [ -z "$readelf_bin" ]; then
  echo "check-page-size.sh: no readelf (set READELF)" >&2
  exit 2
fi

status=0
for lib in "$@"; do
  loads=0
  smallest=""
  while read -r -a field; do
    [ "${field[0]:-}" = LOAD ] || continue
    loads=$((loads + 1))
    align="${field[${#field[@]} - 1]}"
    if [ -z "$smallest" ] || ((align < smallest)); then
      smallest=$((align))
    fi
  done < <("$readelf_bin" -lW "$lib")
  if [ "$loads" -eq 0 ]; then
    echo "check-page-size.sh: $lib: no LOAD segments (not an ELF shared library?)" >&2
    status=1
  elif ((smallest < 16384)); then
    echo "check-page-size.sh: $lib: a LOAD segment is aligned to $smallest bytes, below 16 KB" >&2
    status=1
  else
    echo "check-page-size.sh: $lib: $loads LOAD segments, aligned to at least $smallest bytes"
  fi
done
exit "$status"
