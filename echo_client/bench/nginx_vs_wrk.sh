#!/usr/bin/env bash
# echo_client against wrk on the same nginx (1 worker, `return 200 "ok"`, loopback), run back
# to back, alternating, ROUNDS times. Prints each tool's full output, its CPU time
# (/usr/bin/time), and nginx's CPU time per request (/proc/PID/stat) for each run.
# Needs: nginx, wrk, /usr/bin/time; a release build of echo_client. Stops nginx (by PID) on exit.
set -euo pipefail
ROUNDS=${ROUNDS:-3}
PORT=${PORT:-18080}
EC=${EC:-$(dirname "$0")/../../target/release/echo_client}
dir=$(mktemp -d /tmp/echo_client_nginx.XXXXXX)
cat > "$dir/nginx.conf" <<CONF
worker_processes 1;
daemon off;
master_process off;
error_log $dir/error.log warn;
pid $dir/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    server {
        listen 127.0.0.1:$PORT;
        location / { return 200 "ok"; }
    }
}
CONF
nginx -p "$dir" -c "$dir/nginx.conf" &
NGINX=$!
trap 'kill $NGINX 2>/dev/null; wait $NGINX 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 50); do
  (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break
  sleep 0.1
done
tick=$(getconf CLK_TCK)
ncpu() { awk '{print $14+$15}' /proc/$NGINX/stat; }
bash "$(dirname "$0")/machine.sh"
echo "nginx: $(nginx -v 2>&1), worker_processes 1, location / { return 200 \"ok\"; }, 127.0.0.1:$PORT"
for i in $(seq "$ROUNDS"); do
  for tool in wrk echo_client; do
    if [ $tool = wrk ]; then
      cmd=(wrk -t2 -c100 -d10s "http://127.0.0.1:$PORT/")
      show="${cmd[*]}"
    else
      cmd=("$EC" --addr "127.0.0.1:$PORT" --proto http -c 100 -d 10s)
      show="echo_client ${cmd[*]:1}"
    fi
    echo
    echo "=== round $i: \$ $show"
    before=$(ncpu)
    /usr/bin/time -o "$dir/time" -f "%U %S" "${cmd[@]}" | tee "$dir/out"
    after=$(ncpu)
    # Requests completed, from each tool's own report.
    if [ $tool = wrk ]; then
      n=$(awk '/requests in/ {print $1}' "$dir/out")
    else
      n=$(awk '/^transfer/ {gsub(",", "", $2); print $2}' "$dir/out")
    fi
    read -r u s < "$dir/time"
    if [ $tool = wrk ]; then
      awk '/^Requests\/sec:/ {print $2}' "$dir/out" >> "$dir/rps.wrk"
    else
      awk '/^transfer/ {gsub(",", "", $7); print $7}' "$dir/out" >> "$dir/rps.echo_client"
    fi
    awk -v u="$u" -v s="$s" -v n="$n" 'BEGIN {print (u + s) * 1e6 / n}' >> "$dir/cpu.$tool"
    awk -v u="$u" -v s="$s" -v n="$n" -v a="$after" -v b="$before" -v t="$tick" 'BEGIN {
      printf "client CPU (/usr/bin/time): user %.2f s + system %.2f s = %.2f µs per request\n", u, s, (u + s) * 1e6 / n
      printf "nginx CPU (/proc/PID/stat): %.2f s = %.2f µs per request\n", (a - b) / t, (a - b) / t * 1e6 / n
    }' 
  done
done
echo
echo "=== summary (computed by this script from the outputs above)"
for tool in wrk echo_client; do
  awk -v tool=$tool '{r[NR] = $1; sum += $1} END {
    printf "%-12s requests/s per round:", tool; for (i = 1; i <= NR; i++) printf " %.0f", r[i]
    printf "; mean %.0f\n", sum / NR }' "$dir/rps.$tool"
  awk -v tool=$tool '{c[NR] = $1; sum += $1} END {
    printf "%-12s client CPU µs per request:", tool; for (i = 1; i <= NR; i++) printf " %.2f", c[i]
    printf "; mean %.2f\n", sum / NR }' "$dir/cpu.$tool"
done
paste "$dir/rps.wrk" "$dir/rps.echo_client" | awk '$2 >= $1 {w++} END {printf "echo_client >= wrk in %d of %d rounds\n", w, NR}'
