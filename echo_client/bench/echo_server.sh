# Sourced by echo_cpu.sh and floor.sh: starts examples/echo_server (one epoll thread) on a free
# loopback port and stops it, by PID, when the script exits. Sets SERVER (its PID) and ADDR;
# scpu prints the CPU ticks it has used so far (utime + stime, /proc/PID/stat). Files named in
# CLEANUP are removed on exit too.
start_echo_server() {
  local out
  out=$(mktemp)
  CLEANUP+=("$out")
  "$T/examples/echo_server" --addr 127.0.0.1:0 --threads 1 > "$out" &
  SERVER=$!
  trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true; rm -f "${CLEANUP[@]}"' EXIT
  for _ in $(seq 50); do grep -q listening "$out" && break; sleep 0.1; done
  ADDR=$(grep -o '127.0.0.1:[0-9]*' "$out")
}
scpu() { awk '{print $14+$15}' "/proc/$SERVER/stat"; }
