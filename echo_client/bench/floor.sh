#!/usr/bin/env bash
# Is the client's CPU per message above the server's because of echo_client, or because of
# loopback TCP? Against the example echo server (one epoll thread), 100 connections × 5,000
# messages of 64 bytes, alternating in every round:
#   echo_client (default: 2 threads), echo_client --threads 1,
#   examples/uring_floor (io_uring, one syscall per batch, no checks) with 1 and 2 threads.
# Prints, per run, the client's CPU (its own report) and the server's (/proc/PID/stat), and a
# summary of server CPU ÷ client CPU per client (> 1: the client took the smaller share).
# Stops the server (by PID) on exit.
set -euo pipefail
ROUNDS=${ROUNDS:-3}
T=${T:-$(dirname "$0")/../../target/release}
res=$(mktemp)
CLEANUP=("$res")
source "$(dirname "$0")/echo_server.sh"
start_echo_server
tick=$(getconf CLK_TCK)
bash "$(dirname "$0")/machine.sh"
clients=(
  "echo_client|$T/echo_client --addr $ADDR -c 100 -n 5000"
  "echo_client --threads 1|$T/echo_client --addr $ADDR -c 100 -n 5000 --threads 1"
  "uring_floor --threads 1|$T/examples/uring_floor --addr $ADDR -c 100 -n 5000 --threads 1"
  "uring_floor --threads 2|$T/examples/uring_floor --addr $ADDR -c 100 -n 5000 --threads 2"
)
for i in $(seq "$ROUNDS"); do
  # Odd rounds in list order, even rounds reversed, so drift falls on every client.
  order=$(seq 0 $((${#clients[@]} - 1)))
  [ $((i % 2)) -eq 0 ] && order=$(echo "$order" | tac)
  for k in $order; do
    name=${clients[$k]%%|*}
    cmd=${clients[$k]#*|}
    echo
    echo "=== round $i: $name"
    before=$(scpu)
    report=$($cmd)
    after=$(scpu)
    echo "$report" | grep -E '^(transfer|uring_floor|client CPU|errors)'
    client=$(echo "$report" | awk '/^client CPU/ {for (f = 1; f <= NF; f++) if ($f == "=") print $(f + 1)}')
    server=$(awk -v a="$after" -v b="$before" -v t="$tick" 'BEGIN { printf "%.2f", (a - b) / t }')
    echo "server CPU (examples/echo_server, 1 thread, /proc/PID/stat): $server s"
    echo "$name|$(awk -v s="$server" -v c="$client" 'BEGIN { printf "%.2f", s / c }')" >> "$res"
  done
done
echo
echo "=== summary (computed by this script from the outputs above): server CPU ÷ client CPU"
for c in "${clients[@]}"; do
  name=${c%%|*}
  printf '%-26s %s\n' "$name" "$(grep -F "$name|" "$res" | cut -d'|' -f2 | tr '\n' ' ')"
done
