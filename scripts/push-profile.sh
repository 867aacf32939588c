#!/usr/bin/env bash
# Where an end-to-end push's CPU goes (issue 17): the release relay under
# `valgrind --tool=callgrind`, driven by `tidings-bench push-profile` over the APNs + FCM
# mocks; prints the relay's instructions per push in all and by stage, and the functions
# with the most instructions of their own. Instruction counts repeat for the same binary
# and input whatever else the machine does, so compare two builds with this, not with
# pushes/s. Output format: README.md, "Where a push's CPU goes". Extra arguments go to the
# bench (e.g. --json, --keep FILE to keep the callgrind dump, --count N).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v valgrind >/dev/null || ! command -v callgrind_control >/dev/null; then
  echo "push-profile.sh: needs valgrind (with callgrind_control and callgrind_annotate)" >&2
  exit 2
fi
cargo build --release -p tidings-relay -p tidings-tests --bin tidings-relay --bin tidings-bench
exec target/release/tidings-bench push-profile --relay-bin target/release/tidings-relay \
  --devices 200 --count 2000 --clients 16 --connections 4 "$@"
