#!/bin/bash
# The hand measurements quoted in the READMEs of lessons 7–10 ("Measured by hand"), until the
# bench harness (issue 6) takes over. Loopback only; each part is bounded in time and stops
# every process it started, by pid.
#
#   cargo build --release -p epoll_et_server -p poll_server -p select_server \
#       -p nonblocking_busy_server --examples --bins
#   epoll_et_server/scripts/measure_by_hand.sh nginx|scan|busy|memory|select
#
# Needs wrk, bc, python3 (to pick a free port for nginx) and, for `nginx`, nginx itself
# (`apt-get install nginx-light`; it is run from a config file in $WORK, never as a service).
set -u
R=${R:-$(cd "$(dirname "$0")/../.." && pwd)/target/release}
WORK=${WORK:-$(mktemp -d /tmp/measure.XXXXXX)}
cd "$WORK"

section() { echo; echo "################ $*"; date -u; uptime; }
stop() { kill "$1" 2>/dev/null; wait "$1" 2>/dev/null; }

# utime + stime of a process, in seconds (fields 14 and 15 of /proc/PID/stat).
cpu() {
  awk -v hz="$(getconf CLK_TCK)" '{ split($0, a, ") "); split(a[2], f, " ");
    printf "%.2f\n", (f[12] + f[13]) / hz }' "/proc/$1/stat"
}

# start BIN ARGS…: runs a server on a free loopback port; sets PID and PORT.
start() {
  local out=$WORK/$(basename "$1").out
  "$@" --addr 127.0.0.1:0 > "$out" 2> "$out.err" &
  PID=$!
  for _ in $(seq 50); do grep -q listening "$out" 2>/dev/null && break; sleep 0.1; done
  PORT=$(head -1 "$out" | sed -E 's/.*:([0-9]+) .*/\1/')
  echo "started $(head -1 "$out")"
}

# wrk_vs NAME PORT PID WRK_ARGS…: one wrk run, with the CPU the process PID spent during it.
wrk_vs() {
  local name=$1 port=$2 pid=$3; shift 3
  local c0 c1 out reqs
  c0=$(cpu "$pid"); out=$(wrk "$@" "http://127.0.0.1:$port/" 2>&1); c1=$(cpu "$pid")
  echo "== $name: wrk $* http://127.0.0.1:$port/"
  echo "$out"
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  echo "server CPU seconds over the run: $(echo "$c1 - $c0" | bc -l | xargs printf '%.2f'), per request: $(echo "($c1 - $c0) * 1000000 / $reqs" | bc -l | xargs printf '%.2f') µs"
}

nginx_vs_epoll() {
  section "A. HTTP keep-alive, wrk -t2 -c100 -d10s: nginx 1 worker vs epoll_et_server, alternating"
  nginx -v 2>&1; wrk -v 2>&1 | head -1
  local nport ngx ngxw ep eport
  nport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat > nginx.conf <<CONF
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 4096; }
http {
    access_log off;
    server {
        listen 127.0.0.1:$nport;
        location / { return 200 "ok"; }
    }
}
CONF
  nginx -c "$WORK/nginx.conf" & ngx=$!
  for _ in $(seq 50); do [ -s nginx.pid ] && break; sleep 0.1; done; sleep 0.3
  ngxw=$(pgrep -P "$(cat nginx.pid)") || { echo "nginx did not start"; return 1; }
  echo "nginx on 127.0.0.1:$nport, master $(cat nginx.pid), worker $ngxw"
  start "$R/epoll_et_server" --idle-timeout 600; ep=$PID; eport=$PORT
  for round in 1 2 3; do
    wrk_vs "nginx (round $round)" "$nport" "$ngxw" -t2 -c100 -d10s
    wrk_vs "epoll_et_server (round $round)" "$eport" "$ep" -t2 -c100 -d10s
  done | tee rounds.log
  stop "$ep"; kill "$(cat nginx.pid)"; wait "$ngx" 2>/dev/null
  echo; echo "\$ awk -f ratio.awk rounds.log"
  awk '/^== nginx \(round/ { who = "nginx"; r = $4 + 0 }
       /^== epoll_et_server \(round/ { who = "epoll"; r = $4 + 0 }
       /^Requests\/sec:/ { rps[who, r] = $2 }
       /per request:/ { cpu[who, r] = $(NF-1) }
       END { for (r = 1; r <= 3; r++)
         printf "round %d: epoll_et_server/nginx requests per second %.2f, CPU per request %.2f\n",
           r, rps["epoll", r] / rps["nginx", r], cpu["epoll", r] / cpu["nginx", r] }' rounds.log
}

scan() {
  section "B. 100 busy keep-alive clients beside N idle ones: poll_server vs epoll_et_server"
  local srv idle held
  for srv in poll_server epoll_et_server; do
    for idle in 0 5000 15000; do
      start "$R/$srv" --idle-timeout 600
      if [ "$idle" -gt 0 ]; then
        "$R/examples/idle_clients" "127.0.0.1:$PORT" "$idle" 60 > idle.out 2>&1 & held=$!
        for _ in $(seq 600); do grep -q connections: idle.out && break; sleep 0.1; done
        cat idle.out
      fi
      wrk_vs "$srv with $idle idle connections" "$PORT" "$PID" -t2 -c100 -d10s
      [ "$idle" -gt 0 ] && stop "$held"
      stop "$PID"
    done
  done
}

busy() {
  section "C. nonblocking_busy_server vs poll_server: CPU idle, and per 10,000 requests"
  local srv c0 c1 c t out
  for srv in nonblocking_busy_server poll_server; do
    start "$R/$srv"
    c0=$(cpu "$PID"); sleep 10; c1=$(cpu "$PID")
    echo "== $srv, no client at all for 10 s: CPU seconds $(echo "$c1 - $c0" | bc -l | xargs printf '%.2f')"
    for c in 1 100; do
      t=$([ $c = 1 ] && echo 1 || echo 2)
      out=$(wrk_vs "$srv" "$PORT" "$PID" -t$t -c$c -d10s); echo "$out"
      echo "$out" | awk -v s="$srv" -v c=$c '/per request/ { gsub(/,/,"");
        print "   => " s ", wrk -c" c ": CPU seconds per 10,000 requests: " $(NF-1) * 10000 / 1000000 }'
    done
    stop "$PID"; cat "$srv.out"
  done
}

memory() {
  echo "\$ date -u; uptime"; date -u; uptime
  start "$R/epoll_et_server" --idle-timeout 600 > /dev/null
  echo "\$ epoll_et_server --addr 127.0.0.1:0 --idle-timeout 600   # $(head -1 epoll_et_server.out)"
  echo "\$ cargo run --release -p epoll_et_server --example idle_clients -- 127.0.0.1:$PORT 19000 3 $PID --get"
  "$R/examples/idle_clients" "127.0.0.1:$PORT" 19000 3 "$PID" --get
  stop "$PID"; echo "\$ # the server's summary (SIGTERM):"; tail -n +2 epoll_et_server.out
}

select10k() {
  echo "\$ date -u; uptime"; date -u; uptime
  start "$R/select_server" --idle-timeout 600 > /dev/null
  echo "\$ select_server --addr 127.0.0.1:0 --idle-timeout 600   # $(head -1 select_server.out)"
  echo "\$ cargo run --release -p epoll_et_server --example idle_clients -- 127.0.0.1:$PORT 10000 3"
  "$R/examples/idle_clients" "127.0.0.1:$PORT" 10000 3
  stop "$PID"; echo "\$ # the server's stderr, then its summary (SIGTERM):"
  cat select_server.out.err; tail -n +2 select_server.out
}

case "${1:-}" in
  nginx) nginx_vs_epoll ;;
  scan) scan ;;
  busy) busy ;;
  memory) memory ;;
  select) select10k ;;
  *) echo "usage: $0 nginx|scan|busy|memory|select" >&2; exit 2 ;;
esac
