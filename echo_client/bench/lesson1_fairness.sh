#!/usr/bin/env bash
# Lesson 1's punchline, as wrk and echo_client each see it: simple_server (iterative) with 10
# keep-alive connections for 5 s. wrk reports a healthy-looking total; echo_client's fairness
# line shows one connection served and nine starved. Stops the server (by PID) on exit.
# Needs: a release build of simple_server and echo_client; wrk.
set -euo pipefail
T=${T:-$(dirname "$0")/../../target/release}
out=$(mktemp)
"$T/simple_server" --addr 127.0.0.1:0 > "$out" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 50); do grep -q listening "$out" && break; sleep 0.1; done
ADDR=$(grep -o '127.0.0.1:[0-9]*' "$out")
bash "$(dirname "$0")/machine.sh"
echo; echo "\$ wrk -t2 -c10 -d5s http://$ADDR/"
wrk -t2 -c10 -d5s "http://$ADDR/"
echo; echo "\$ echo_client --addr $ADDR --proto http -c 10 -d 5s"
"$T/echo_client" --addr "$ADDR" --proto http -c 10 -d 5s
