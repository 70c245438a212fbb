#!/usr/bin/env bash
# The holding test at scale, against the example echo server:
#   1. one client process holds 19,000 connections (one server process), from one source
#      address and then from ten;
#   2. six client processes hold 100,000 connections from 39 source addresses, against seven
#      server processes sharing one port with SO_REUSEPORT (RLIMIT_NOFILE is 20,000 per process).
# Each hold lasts HOLD (10s); every connection is then checked with one echo. Stops every server
# it started (by PID) on exit.
set -euo pipefail
HOLD=${HOLD:-10s}
T=${T:-$(dirname "$0")/../../target/release}
dir=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$dir"' EXIT
start() { # starts $1 servers on one port; sets ADDR (not in a subshell: pids must stick)
  "$T/examples/echo_server" --addr 127.0.0.1:0 > "$dir/s0" & pids+=($!)
  for _ in $(seq 50); do grep -q listening "$dir/s0" && break; sleep 0.1; done
  ADDR=$(grep -o '127.0.0.1:[0-9]*' "$dir/s0")
  for k in $(seq 2 "$1"); do "$T/examples/echo_server" --addr "$ADDR" > "$dir/s$k" & pids+=($!); done
  sleep 0.5
}
bash "$(dirname "$0")/machine.sh"
start 1
for args in "-c 19000 --hold $HOLD" "-c 19000 --hold $HOLD --source-ips 127.0.0.2-127.0.0.11"; do
  echo; echo "\$ echo_client --addr $ADDR $args"
  # shellcheck disable=SC2086
  /usr/bin/time -f "max RSS %M KiB, wall %e s" "$T/echo_client" --addr "$ADDR" $args
done
for p in "${pids[@]}"; do kill "$p"; done; wait 2>/dev/null || true; pids=()
start 7
args="-c 100000 --processes 6 --source-ips 127.0.0.2-127.0.0.40 --hold $HOLD"
echo; echo "\$ echo_client --addr $ADDR $args    # against 7 echo_server processes on one port"
# shellcheck disable=SC2086
/usr/bin/time -f "max RSS of one process %M KiB, wall %e s" "$T/echo_client" --addr "$ADDR" $args
