#!/usr/bin/env bash
# The benchmarks of issues 2 and 3 at their full sizes, on release builds:
#   mailbox: acknowledged Stores/s from 64 clients, Retrieves/s, long-poll wake latency
#            with 10 000 parked waiters, relay RSS;
#   push:    end-to-end pushes/s with 10 000 devices over mock APNs + FCM, and push
#            latency at 1 000 messages/s; then the same with the devices spread over
#            APNs, FCM, Web Push and HMS (issue 14).
#   restore: phrase → converged documents for an account with 10 000 contacts.
#   nse:     NotificationProcessor open + process of a 2 KB sealed message from a contact
#            with 10 000 contacts in state, in fresh processes: peak RSS and time
#            (issue 11; targets < 15 MB, < 50 ms).
#   scaleout: Stores/s and end-to-end pushes/s on 1 node with the embedded store, 1 node
#            on PostgreSQL and 2 nodes on PostgreSQL, as ratios, and the long-poll wake
#            latency across nodes (issue 6); needs PostgreSQL (TIDINGS_TEST_POSTGRES_URL,
#            default the local server) and is skipped with a message without it.
#   ohttp:   Stores/s and Retrieve latency p50/p99 through the published OHTTP relay and
#            the relay's gateway vs direct gRPC, in one run, as ratios (target >= 0.5x
#            direct Stores/s), and the gateway's CPU per request (issue 13).
#   push-profile: the relay's instructions per end-to-end push by stage under callgrind
#            (issue 17; scripts/push-profile.sh); skipped with a message without valgrind.
# Extra arguments go to both runs (e.g. --json). Run it on an otherwise idle machine:
# the relay, the clients and the mock providers share its cores.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p tidings-relay -p tidings-tests --bin tidings-relay --bin tidings-bench --bin tidings-nse-bench --bin ohttp-relay

bench=target/release/tidings-bench
relay=target/release/tidings-relay

echo "bench.sh: load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
status=0
"$bench" mailbox --relay-bin "$relay" --clients 64 --duration 10 --waiters 10000 --wakes 1000 "$@" || status=$?
"$bench" push --relay-bin "$relay" --devices 10000 --count 20000 --rate 1000 --seconds 5 "$@" || status=$?
"$bench" push --relay-bin "$relay" --devices 10000 --count 20000 --rate 1000 --seconds 5 --services apns,fcm,webpush,hms "$@" || status=$?
"$bench" restore --relay-bin "$relay" --contacts 10000 "$@" || status=$?
target/release/tidings-nse-bench --contacts 10000 --runs 7 "$@" || status=$?
"$bench" ohttp --relay-bin "$relay" --clients 32 --latency-clients 4 --duration 5 "$@" || status=$?
if [ -n "${TIDINGS_TEST_POSTGRES_URL:-}" ] || (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
  "$bench" scaleout --relay-bin "$relay" --duration 10 --devices 2000 --pushes 4000 --waiters 500 "$@" || status=$?
else
  echo "bench.sh: SKIPPING scaleout: nothing listens on 127.0.0.1:5432 (set TIDINGS_TEST_POSTGRES_URL)" >&2
fi
if command -v valgrind >/dev/null && command -v callgrind_control >/dev/null; then
  "$bench" push-profile --relay-bin "$relay" --devices 200 --count 2000 --clients 16 --connections 4 "$@" || status=$?
else
  echo "bench.sh: SKIPPING push-profile: valgrind (callgrind_control, callgrind_annotate) not found" >&2
fi
exit "$status"
