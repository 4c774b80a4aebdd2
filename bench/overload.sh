#!/usr/bin/env bash
# Overload (bench/RESULTS.md, "Overload"; issue 8): bursts of ten times what the queue holds
# against the real server, and its resident memory after each. Not run in CI.
#
#   bench/overload.sh [--bursts N] [--max_queue Q] [--steps S]
#
# Starts build/server/imagegen-server ($IMAGEGEN_BUILD_DIR overrides build/) on the default model
# (models/fashion-mnist-ldm) with --max_queue Q (default 4), then fires N bursts (default 20) of
# 10 x Q calls at once, half GenerateImages and half Generate streams with previews, each burst
# after the last has ended (bench/overload_burst.py, Debian's python3-grpcio). Per burst: calls
# accepted and completed, refused RESOURCE_EXHAUSTED (and how long the slowest refusal took),
# any other outcome (none is expected), and the server's VmRSS and VmHWM from /proc. Prints
# markdown; exits 1 when a call ended otherwise, or the server does not drain and exit 0 on
# SIGTERM. Takes about a second per burst at 30 steps.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${IMAGEGEN_BUILD_DIR:-"$root/build"}
bursts=20 max_queue=4 steps=30
while [ $# -gt 0 ]; do
  case "$1" in
    --bursts) bursts=$2; shift 2 ;;
    --max_queue) max_queue=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    *) echo "usage: bench/overload.sh [--bursts N] [--max_queue Q] [--steps S]" >&2; exit 2 ;;
  esac
done
out=$(mktemp -d)
server_pid=""
trap '[ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$out"' EXIT

free_port() { /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

port=$(free_port)
"$build/server/imagegen-server" --listen="127.0.0.1:$port" --metrics_listen= \
    --model_dir="$root/models/fashion-mnist-ldm" --max_queue="$max_queue" --request_log=false \
    >"$out/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 120); do  # ready once it answers ListModels
  "$build/client/imagegen" models --server "127.0.0.1:$port" >/dev/null 2>&1 && break
  kill -0 "$server_pid" 2>/dev/null || { echo "the server exited: $(tail -3 "$out/server.log")" >&2; exit 1; }
  sleep 0.5
done

echo "Machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'); $(date -u +%Y-%m-%d)"
echo "Server: default model, --max_queue=$max_queue, --max_batch_rows=32; requests: DDIM $steps steps, guidance 3, one 32x32 image."
echo
status=0
/usr/bin/python3 "$root/bench/overload_burst.py" --repo_root "$root" --server "127.0.0.1:$port" \
    --pid "$server_pid" --bursts "$bursts" --calls "$((10 * max_queue))" --steps "$steps" || status=1

kill -TERM "$server_pid"
if wait "$server_pid"; then
  echo
  echo "The server drained and exited 0 on SIGTERM."
else
  echo "the server exited $? on SIGTERM: $(tail -3 "$out/server.log")" >&2
  status=1
fi
server_pid=""
exit "$status"
