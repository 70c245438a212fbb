#!/bin/bash
# The hand measurements quoted in io_uring_server/README.md ("Measured by hand"), until the bench
# harness runs lesson 13: io_uring_server against epoll_et_server on the same loads. Loopback
# only; every part is bounded in time and stops the processes it started, by pid.
#
#   cargo build --release -p io_uring_server -p epoll_et_server -p echo_client --examples --bins
#   io_uring_server/scripts/measure_by_hand.sh http|echo|syscalls|perf|memory
#
# Needs wrk, strace, perf (software events only on this machine) and bc.
set -u
R=${R:-$(cd "$(dirname "$0")/../.." && pwd)/target/release}
WORK=${WORK:-$(mktemp -d /tmp/measure-uring.XXXXXX)}
SERVERS="epoll_et_server io_uring_server"
cd "$WORK"

section() { echo; echo "################ $*"; date -u; uptime; }

# utime + stime of a process in seconds (fields 14 and 15 of /proc/PID/stat).
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ split($0, a, ") "); split(a[2], f, " ");
  printf "%.2f\n", (f[12] + f[13]) / hz }' "/proc/$1/stat"; }

# serve NAME ARGS…: starts target/release/NAME on a free loopback port; sets PID and PORT.
serve() {
  local name=$1; shift
  "$R/$name" --addr 127.0.0.1:0 --idle-timeout 600 "$@" > "$name.out" 2> "$name.err" &
  PID=$!
  for _ in $(seq 50); do grep -q listening "$name.out" 2>/dev/null && break; sleep 0.1; done
  PORT=$(head -1 "$name.out" | sed -E 's/.*:([0-9]+) .*/\1/')
  echo "started $(head -1 "$name.out")"
}
# finish NAME: SIGTERM to the server started last, then its summary.
finish() {
  kill "$PID"; wait "$PID" 2>/dev/null
  for _ in $(seq 20); do grep -q '^context switches' "$1.out" && break; sleep 0.1; done
  tail -n +2 "$1.out"
}

# measured NAME UNIT CMD…: runs a load command, then the server's CPU seconds over it and per UNIT
# (the count of UNITs is the load's own: wrk's "requests in", echo_client's "completed").
measured() {
  local name=$1 unit=$2 c0 c1 out n; shift 2
  echo "== $name: $*"
  c0=$(cpu "$PID"); out=$("$@" 2>&1); c1=$(cpu "$PID")
  echo "$out" | grep -vE '^(connect|fairness|connections|client CPU) ' # (echo_client's other lines)
  n=$(echo "$out" | awk '/requests in/ { print $1 } /^transfer/ { for (i = 1; i < NF; i++)
        if ($(i+1) ~ /^(messages|requests)/) { gsub(/,/, "", $i); print $i; exit } }' | head -1)
  echo "server CPU seconds over the run: $(echo "$c1 - $c0" | bc -l | xargs printf '%.2f'), per $unit: $(echo "($c1 - $c0) * 1000000 / $n" | bc -l | xargs printf '%.2f') µs"
}

http() {
  section "A. HTTP keep-alive, wrk -t2 -c100 -d10s, alternating, 3 rounds"
  wrk -v 2>&1 | head -1
  for name in $SERVERS; do serve "$name" > /dev/null; eval "pid_$name=$PID port_$name=$PORT"; done
  for round in 1 2 3; do
    for name in $SERVERS; do
      PID=$(eval echo "\$pid_$name"); PORT=$(eval echo "\$port_$name")
      measured "$name (round $round)" request wrk -t2 -c100 -d10s "http://127.0.0.1:$PORT/"
    done
  done | tee http.rounds
  ratios http.rounds request
  for name in $SERVERS; do kill "$(eval echo "\$pid_$name")"; done; wait
}

# ratios LOG UNIT: io_uring_server over epoll_et_server, round by round, from a part's log.
ratios() {
  echo; echo "\$ awk … (io_uring_server / epoll_et_server, round by round)"
  awk -v unit="$2" '/^== / { who = $2; r = $4 + 0 }
    /^Requests\/sec:/ { rate[who, r] = $2 }
    /^transfer/ { for (i = 2; i < NF; i++) if ($(i+1) ~ /\/s;$/) { x = $i; gsub(/,/, "", x); rate[who, r] = x } }
    /per (request|message):/ { cpu[who, r] = $(NF-1) }
    END { for (r = 1; r <= 3; r++) printf "round %d: %ss per second %.2f, CPU per %s %.2f\n", r,
      unit, rate["io_uring_server", r] / rate["epoll_et_server", r], unit,
      cpu["io_uring_server", r] / cpu["epoll_et_server", r] }' "$1"
}

echo_load() {
  section "B. echo, echo_client -c $1 -n $2 (64-byte messages), alternating, 3 rounds"
  for round in 1 2 3; do
    for name in $SERVERS; do
      serve "$name" --proto echo > /dev/null
      measured "$name (round $round)" message "$R/echo_client" --addr "127.0.0.1:$PORT" \
        --proto echo -c "$1" -n "$2"
      kill "$PID"; wait "$PID" 2>/dev/null
    done
  done | tee "echo-$1.rounds"
  ratios "echo-$1.rounds" message
}

syscalls() {
  section "C. syscalls per request: strace -c -f during echo_client --proto http -c 10 -n 2000"
  strace -V | head -1
  for name in $SERVERS; do
    serve "$name"
    strace -c -f -p "$PID" -o "$name.strace" & local st=$!
    sleep 1
    "$R/echo_client" --addr "127.0.0.1:$PORT" --proto http -c 10 -n 2000 | grep -E '^(transfer|errors)'
    kill -INT "$st"; wait "$st" 2>/dev/null
    echo "\$ cat $name.strace"; cat "$name.strace"
    finish "$name" | grep -E '^(requests served|context switches)'
    # The total line: % time, seconds, usecs/call, calls, [errors], "total".
    awk -v n=20000 '$NF == "total" { printf "=> %s syscalls / %d requests = %.3f per request\n",
      $4, n, $4 / n }' "$name.strace"
  done
}

perf_stat() {
  section "D. perf stat -e task-clock,context-switches -p PID, over wrk -t2 -c100 -d10s"
  perf version
  for name in $SERVERS; do
    serve "$name"
    perf stat -e task-clock,context-switches -p "$PID" -o "$name.perf" -- sleep 10 & local pf=$!
    wrk -t2 -c100 -d10s "http://127.0.0.1:$PORT/" | grep -E 'requests in|Requests/sec'
    wait "$pf"; echo "\$ cat $name.perf"; cat "$name.perf"
    finish "$name" | grep -E '^(requests served|CPU seconds|context switches)'
  done
}

memory() {
  section "E. 19,000 idle connections, each served one request first"
  serve io_uring_server > /dev/null
  echo "\$ io_uring_server --addr 127.0.0.1:0 --idle-timeout 600   # $(head -1 io_uring_server.out)"
  echo "\$ grep io_kiocb /proc/slabinfo   # the kernel's request objects, before"
  grep io_kiocb /proc/slabinfo
  echo "\$ cargo run --release -p epoll_et_server --example idle_clients -- 127.0.0.1:$PORT 19000 5 $PID --get"
  "$R/examples/idle_clients" "127.0.0.1:$PORT" 19000 5 "$PID" --get > idle.out 2>&1 & local held=$!
  for _ in $(seq 600); do grep -q 'server VmRSS' idle.out && break; sleep 0.1; done
  cat idle.out
  echo "\$ grep io_kiocb /proc/slabinfo   # while they are held: one parked recv each"
  grep io_kiocb /proc/slabinfo
  wait "$held"
  echo "\$ # the server's summary (SIGTERM):"; finish io_uring_server
}

case "${1:-}" in
  http) http ;;
  echo) echo_load 100 5000; echo_load 1000 100; echo_load 1 20000 ;;
  syscalls) syscalls ;;
  perf) perf_stat ;;
  memory) memory ;;
  *) echo "usage: $0 http|echo|syscalls|perf|memory" >&2; exit 2 ;;
esac
