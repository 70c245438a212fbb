#!/bin/bash
# The hand measurements quoted in multi_epoll_server/README.md ("Measured by hand"), until the
# bench harness fills its table. Loopback only, bounded in time; every process it starts is
# stopped by its pid. Build first:
#
#   cargo build --release -p multi_epoll_server -p epoll_et_server -p tokio_server -p echo_client
#   multi_epoll_server/scripts/measure_by_hand.sh http|echo|work [rounds]
#
# http: wrk -t2 -c100 -d10s keep-alive against nginx (2 workers), multi_epoll_server (2 loops,
#       threads), multi_epoll_server --processes (2 loops) and epoll_et_server, in turn.
# echo: echo_client -c 100 -n 5000 against multi_epoll_server, tokio_server, epoll_et_server.
# work: wrk -t2 -c100 -d10s with --work 100 (about 0.3 ms of CPU per request): 2 loops vs 1.
# Every run also prints the CPU the server spent over it — utime + stime from /proc/PID/stat,
# summed over the server's processes (nginx's master and workers; the supervisor and its
# loops) — in total and per request or message: steadier than the rates on a shared machine.
set -u
R=${R:-$(cd "$(dirname "$0")/../.." && pwd)/target/release}
WORK=${WORK:-$(mktemp -d /tmp/multi-epoll-measure.XXXXXX)}
ROUNDS=${2:-3}
cd "$WORK"

# Clock ticks of CPU used by a process and its children (fields 14, 15 of /proc/PID/stat).
ticks_tree() {
  local t=0 p
  for p in "$1" $(pgrep -P "$1"); do
    t=$((t + $(awk '{ split($0, a, ") "); split(a[2], f, " "); print f[12] + f[13] }' "/proc/$p/stat")))
  done
  echo "$t"
}
HZ=$(getconf CLK_TCK)

declare -A PIDS PORTS
# serve NAME BIN ARGS…: a server on a free loopback port, remembered as NAME.
serve() {
  local name=$1 bin=$2; shift 2
  "$R/$bin" --addr 127.0.0.1:0 --idle-timeout 600 "$@" > "$name.out" 2> "$name.err" &
  PIDS[$name]=$!
  for _ in $(seq 50); do grep -q listening "$name.out" 2>/dev/null && break; sleep 0.1; done
  PORTS[$name]=$(head -1 "$name.out" | sed -E 's/.*:([0-9]+) .*/\1/')
  echo "$name: $(head -1 "$name.out")${*:+ (flags: $*)}"
}

# nginx with 2 workers, `return 200`, from a config written here; remembered as "nginx".
nginx_up() {
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat > nginx.conf <<CONF
worker_processes 2;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 4096; }
http {
    access_log off;
    server {
        listen 127.0.0.1:$port;
        location / { return 200 "ok\n"; }
    }
}
CONF
  /usr/sbin/nginx -c "$WORK/nginx.conf" &
  PIDS[nginx]=$!
  PORTS[nginx]=$port
  for _ in $(seq 50); do [ "$(pgrep -c -P "${PIDS[nginx]}")" = 2 ] && break; sleep 0.1; done
  echo "nginx: $(/usr/sbin/nginx -v 2>&1), master ${PIDS[nginx]}, workers $(pgrep -P "${PIDS[nginx]}" | xargs), on 127.0.0.1:$port"
}

# run NAME UNIT COMMAND…: the command's output, verbatim, then the server's CPU over it.
# The count of requests or messages is the first number of wrk's "requests in" line, or of
# echo_client's "transfer" line.
run() {
  local name=$1 unit=$2 t0 t1 out n rate; shift 2
  echo "== $name: $*"
  t0=$(ticks_tree "${PIDS[$name]}"); out=$("$@" 2>&1); t1=$(ticks_tree "${PIDS[$name]}")
  echo "$out"
  n=$(echo "$out" | awk '/requests in/ { print $1; exit } /^transfer / { print $2; exit }' | tr -d ,)
  rate=$(echo "$out" | awk '/^Requests\/sec:/ { print $2 } /^transfer / { print $7 }' | tr -d ,)
  awk -v t=$((t1 - t0)) -v hz="$HZ" -v n="${n:-0}" -v u="$unit" 'BEGIN {
    printf "server CPU seconds over the run: %.2f, per %s: %.2f µs\n", t / hz, u, n ? t / hz * 1e6 / n : 0 }'
  awk -v t=$((t1 - t0)) -v hz="$HZ" -v n="${n:-0}" -v r="${rate:-0}" -v name="$name" -v round="$ROUND" \
    'BEGIN { printf "%s\t%s\t%s\t%.2f\n", round, name, r, n ? t / hz * 1e6 / n : 0 }' >> rates.tsv
}

# ratios REF: each round's rate and CPU per request or message, as multiples of REF's.
ratios() {
  echo; echo "\$ # per round: rate, and CPU per ${2:-request}, relative to $1 (from rates.tsv)"
  awk -F'\t' -v ref="$1" '$2 == ref { r[$1] = $3; c[$1] = $4 } { row[NR] = $0 }
    END { for (i = 1; i <= NR; i++) { split(row[i], f, "\t"); if (f[2] == ref) continue;
      printf "round %s: %s %.0f/s (%.2f x %s), CPU %.2f µs (%.2f x)\n",
        f[1], f[2], f[3], f[3] / r[f[1]], ref, f[4], f[4] / c[f[1]] } }' rates.tsv
}

# Stops every server (SIGTERM), then prints our servers' summaries: per-loop accepts and all.
stop_all() {
  local name
  for name in "${!PIDS[@]}"; do kill "${PIDS[$name]}" 2>/dev/null; wait "${PIDS[$name]}" 2>/dev/null; done
  for name in "${!PIDS[@]}"; do
    [ -f "$name.out" ] && { echo; echo "\$ # $name's summary (SIGTERM):"; tail -n +2 "$name.out"; }
  done
}
trap 'stop_all > /dev/null' EXIT # also on an error or Ctrl-C

echo "date: $(date -u)"; echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r)"
echo "uptime: $(uptime)"
case "${1:-}" in
  http)
    wrk -v 2>&1 | head -1
    nginx_up
    serve multi_epoll_server multi_epoll_server --loops 2
    serve "multi_epoll_server --processes" multi_epoll_server --loops 2 --processes
    serve epoll_et_server epoll_et_server
    for ROUND in $(seq "$ROUNDS"); do
      echo; echo "######## round $ROUND, $(uptime)"
      for name in nginx multi_epoll_server "multi_epoll_server --processes" epoll_et_server; do
        run "$name" request wrk -t2 -c100 -d10s "http://127.0.0.1:${PORTS[$name]}/"
      done
    done
    ratios nginx ;;
  echo)
    serve multi_epoll_server multi_epoll_server --loops 2 --proto echo
    serve tokio_server tokio_server --proto echo
    serve epoll_et_server epoll_et_server --proto echo
    for ROUND in $(seq "$ROUNDS"); do
      echo; echo "######## round $ROUND, $(uptime)"
      for name in multi_epoll_server tokio_server epoll_et_server; do
        run "$name" message "$R/echo_client" --addr "127.0.0.1:${PORTS[$name]}" --proto echo -c 100 -n 5000
      done
    done
    ratios tokio_server message ;;
  work)
    serve "2 loops" multi_epoll_server --loops 2 --work 100
    serve "1 loop" multi_epoll_server --loops 1 --work 100
    for ROUND in $(seq "$ROUNDS"); do
      echo; echo "######## round $ROUND, $(uptime)"
      for name in "2 loops" "1 loop"; do
        run "$name" request wrk -t2 -c100 -d10s "http://127.0.0.1:${PORTS[$name]}/"
      done
    done
    ratios "1 loop" ;;
  *) echo "usage: $0 http|echo|work [rounds]" >&2; exit 2 ;;
esac
echo; echo "uptime at the end: $(uptime)"
trap - EXIT
stop_all
