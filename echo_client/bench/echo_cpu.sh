#!/usr/bin/env bash
# Client CPU per message in echo mode: echo_client -c 100 -n 5000 against the example echo
# server (one thread, loopback), ROUNDS times. The client reports its own CPU; the server's is
# read from /proc/PID/stat around each run. Stops the server (by PID) on exit.
set -euo pipefail
ROUNDS=${ROUNDS:-3}
T=${T:-$(dirname "$0")/../../target/release}
CLEANUP=()
source "$(dirname "$0")/echo_server.sh"
start_echo_server
tick=$(getconf CLK_TCK)
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
