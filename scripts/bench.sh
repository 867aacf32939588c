#!/usr/bin/env bash
# The benchmarks of issues 2 and 3 at their full sizes, on release builds:
#   mailbox: acknowledged Stores/s from 64 clients, Retrieves/s, long-poll wake latency
#            with 10 000 parked waiters, relay RSS;
#   push:    end-to-end pushes/s with 10 000 devices over mock APNs + FCM, and push
#            latency at 1 000 messages/s.
#   restore: phrase → converged documents for an account with 10 000 contacts.
# Extra arguments go to both runs (e.g. --json). Run it on an otherwise idle machine:
# the relay, the clients and the mock providers share its cores.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p tidings-relay -p tidings-tests --bin tidings-relay --bin tidings-bench

bench=target/release/tidings-bench
relay=target/release/tidings-relay

echo "bench.sh: load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
status=0
"$bench" mailbox --relay-bin "$relay" --clients 64 --duration 10 --waiters 10000 --wakes 1000 "$@" || status=$?
"$bench" push --relay-bin "$relay" --devices 10000 --count 20000 --rate 1000 --seconds 5 "$@" || status=$?
"$bench" restore --relay-bin "$relay" --contacts 10000 "$@" || status=$?
exit "$status"
