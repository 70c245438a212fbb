#!/usr/bin/env bash
# Client CPU per message in echo mode: echo_client -c 100 -n 5000 against the example echo
# server (one thread, loopback), ROUNDS times. The client reports its own CPU; the server's is
# read from /proc/PID/stat around each run. Stops the server (by PID) on exit.
set -euo pipefail
ROUNDS=${ROUNDS:-3}
T=${T:-$(dirname "$0")/../../target/release}
out=$(mktemp)
"$T/examples/echo_server" --addr 127.0.0.1:0 --threads 1 > "$out" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 50); do grep -q listening "$out" && break; sleep 0.1; done
ADDR=$(grep -o '127.0.0.1:[0-9]*' "$out")
tick=$(getconf CLK_TCK)
scpu() { awk '{print $14+$15}' /proc/$SERVER/stat; }
bash "$(dirname "$0")/machine.sh"
for i in $(seq "$ROUNDS"); do
  echo
  echo "=== round $i: \$ echo_client --addr $ADDR -c 100 -n 5000"
  before=$(scpu)
  "$T/echo_client" --addr "$ADDR" -c 100 -n 5000
  after=$(scpu)
  awk -v a="$after" -v b="$before" -v t="$tick" 'BEGIN {
    printf "server CPU (examples/echo_server, 1 thread, /proc/PID/stat): %.2f s = %.2f µs per message\n", (a - b) / t, (a - b) / t * 1e6 / 500000
  }' 
done
