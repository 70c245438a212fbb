#!/bin/bash
# The hand measurements quoted in tokio_server/README.md ("Measured by hand"), until the bench
# harness fills its table. Loopback only; bounded in time; every process it starts is stopped
# by its pid. Build first:
#
#   cargo build --release -p tokio_server -p epoll_et_server -p echo_client --bins --examples
#   tokio_server/scripts/measure_by_hand.sh echo|http|memory [rounds]
#
# echo:   echo_client -c 100 -n 5000, tokio_server and epoll_et_server alternating.
# http:   wrk -t2 -c100 -d10s keep-alive, the same two, alternating.
# memory: 10,000 idle connections (after one request each) held by each, VmRSS before/after.
# Each run prints the server's CPU (utime + stime from /proc/PID/stat) over the run and per
# message or request: steadier than the rates on a shared machine.
set -u
R=${R:-$(cd "$(dirname "$0")/../.." && pwd)/target/release}
WORK=${WORK:-$(mktemp -d /tmp/tokio-measure.XXXXXX)}
ROUNDS=${2:-3}
SERVERS="tokio_server epoll_et_server"
cd "$WORK"

# utime + stime of a process in clock ticks (fields 14 and 15 of /proc/PID/stat).
ticks() { awk '{ split($0, a, ") "); split(a[2], f, " "); print f[12] + f[13] }' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

# up NAME ARGS…: starts a server on a free loopback port; sets PID and PORT.
up() {
  "$R/$1" --addr 127.0.0.1:0 "${@:2}" > "$1.out" 2> "$1.err" &
  PID=$!
  for _ in $(seq 50); do grep -q listening "$1.out" 2>/dev/null && break; sleep 0.1; done
  PORT=$(head -1 "$1.out" | sed -E 's/.*:([0-9]+) .*/\1/')
  echo "started $(head -1 "$1.out")"
}
down() { kill "$1" 2>/dev/null; wait "$1" 2>/dev/null; }

# measured PID COUNT_REGEX COMMAND…: runs COMMAND, prints its output and the server's CPU.
measured() {
  local pid=$1 re=$2 t0 t1 out n; shift 2
  t0=$(ticks "$pid"); out=$("$@" 2>&1); t1=$(ticks "$pid")
  echo "$out"
  n=$(echo "$out" | sed -nE "s/$re/\1/p" | tr -d , | head -1)
  awk -v d=$((t1 - t0)) -v hz="$HZ" -v n="$n" 'BEGIN {
    printf "server CPU seconds over the run: %.2f, per message or request: %.2f µs\n", d / hz, d / hz * 1e6 / n }'
}

# ratios LOG: per round, epoll_et_server's rate and CPU per message over tokio_server's.
ratios() {
  echo; echo "\$ ratios (epoll_et_server / tokio_server, per round, computed from the log above)"
  awk '/^== / { who = $2; r = $4 + 0 }
       /messages\/s;/ { for (i = 1; i <= NF; i++) if ($i == "messages/s;") { v = $(i-1); gsub(/,/, "", v); rate[who, r] = v } }
       /^Requests\/sec:/ { rate[who, r] = $2 }
       /per message or request:/ { cpu[who, r] = $(NF-1) }
       END { for (k = 1; (("tokio_server", k) in rate); k++)
         printf "round %d: rate %.2f, CPU per message %.2f\n", k,
           rate["epoll_et_server", k] / rate["tokio_server", k], cpu["epoll_et_server", k] / cpu["tokio_server", k] }' "$1"
}

header() { echo "################ $*"; date -u; uptime; nproc; uname -r
  grep -m1 'model name' /proc/cpuinfo; "$R/tokio_server" --version; }

case "${1:-}" in
  echo)
    header "echo, echo_client -c 100 -n 5000 (64-byte messages), alternating"
    for s in $SERVERS; do up "$s" --proto echo --idle-timeout 600; eval "PID_$s=$PID PORT_$s=$PORT"; done
    for round in $(seq "$ROUNDS"); do
      for s in $SERVERS; do
        eval "pid=\$PID_$s port=\$PORT_$s"
        echo "== $s (round $round): echo_client --addr 127.0.0.1:$port --proto echo -c 100 -n 5000"
        measured "$pid" '^transfer +([0-9,]+) messages.*' "$R/echo_client" --addr "127.0.0.1:$port" --proto echo -c 100 -n 5000
      done
    done | tee rounds.log
    ratios rounds.log
    for s in $SERVERS; do eval "down \$PID_$s"; echo "-- $s summary:"; tail -n +2 "$s.out"; done ;;
  http)
    header "HTTP keep-alive, wrk -t2 -c100 -d10s, alternating"; wrk -v 2>&1 | head -1
    for s in $SERVERS; do up "$s" --idle-timeout 600; eval "PID_$s=$PID PORT_$s=$PORT"; done
    for round in $(seq "$ROUNDS"); do
      for s in $SERVERS; do
        eval "pid=\$PID_$s port=\$PORT_$s"
        echo "== $s (round $round): wrk -t2 -c100 -d10s http://127.0.0.1:$port/"
        measured "$pid" '^ *([0-9]+) requests in.*' wrk -t2 -c100 -d10s "http://127.0.0.1:$port/"
      done
    done | tee rounds.log
    ratios rounds.log
    for s in $SERVERS; do eval "down \$PID_$s"; done ;;
  memory)
    header "10,000 idle connections, one request each first (idle_clients --get)"
    for s in $SERVERS; do
      up "$s" --idle-timeout 600
      echo "\$ idle_clients 127.0.0.1:$PORT 10000 3 $PID --get   # $s"
      "$R/examples/idle_clients" "127.0.0.1:$PORT" 10000 3 "$PID" --get
      grep -E '^Threads' "/proc/$PID/status"
      down "$PID"
    done ;;
  *) echo "usage: $0 echo|http|memory [rounds]" >&2; exit 2 ;;
esac
