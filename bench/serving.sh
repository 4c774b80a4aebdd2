#!/usr/bin/env bash
# The serving benchmark (bench/RESULTS.md, "Serving"): the raw UNet limit and the engine in
# process (imagegen-bench-speed), then the real server over gRPC (imagegen-loadgen): closed-loop
# throughput at concurrency 1..16, and step- against request-level batching under Poisson
# arrivals at 70% of the measured saturation throughput. Default model, default settings
# (DDIM, 30 steps, guidance 3, a preview every step). Prints markdown; takes about 5 minutes.
#
#   bench/serving.sh [POISSON_SECONDS]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${IMAGEGEN_BUILD_DIR:-"$root/build"}
poisson_s=${1:-30}
out=$(mktemp -d)
server_pid=""
trap '[ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$out"' EXIT

free_port() { /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
start_server() {  # $1: batching mode
  port=$(free_port)
  "$build/server/imagegen-server" --listen="127.0.0.1:$port" --metrics_listen= --model_dir="$root/models" \
      --batching="$1" --max_queue=1000 >"$out/server-$1.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 120); do  # ready once it answers ListModels
    "$build/client/imagegen" models --server "127.0.0.1:$port" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "the server did not start: $(tail -3 "$out/server-$1.log")" >&2
  exit 1
}
stop_server() { kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""; }
field() { /usr/bin/python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, d))" "$@"; }

echo "Machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'); $(date -u +%Y-%m-%d)"
echo
echo "## Raw UNet limit and the engine in process"
echo
"$build/bench/imagegen-bench-speed" --model_dir="$root/models/fashion-mnist-ldm" --batches=2,4,8,16,32 \
    --repeats=100 --images=10 --engine_concurrency=1,2,4,8,16
echo
echo "## Served over gRPC, closed loop (48 requests after 4 warm-up, no previews, as in process)"
echo
start_server step
echo "| concurrency | images/s | latency p50 ms | p95 ms |"
echo "|---|---|---|---|"
best=0
for c in 1 2 4 8 16; do
  "$build/client/imagegen-loadgen" --server="127.0.0.1:$port" --mode=closed --concurrency="$c" \
      --requests=48 --warmup=4 --preview_every=0 --json="$out/closed-$c.json" >/dev/null 2>&1
  ips=$(field "$out/closed-$c.json" 'images_per_s')
  echo "| $c | $ips | $(field "$out/closed-$c.json" 'latency_ms["p50"]') | $(field "$out/closed-$c.json" 'latency_ms["p95"]') |"
  best=$(/usr/bin/python3 -c "print(max($best, $ips))")
done
stop_server
rate=$(/usr/bin/python3 -c "print(round(0.7 * $best, 2))")
echo
echo "Saturation: $best images/s; Poisson rate 70%: $rate requests/s for ${poisson_s} s (3 s warm-up)."
echo
echo "## Step-level against request-level batching, Poisson arrivals (a preview every step)"
echo
echo "| batching | requests ok | latency p50 ms | p95 ms | p99 ms | first preview p50 ms | p95 ms |"
echo "|---|---|---|---|---|---|---|"
for mode in step request; do
  start_server "$mode"
  "$build/client/imagegen-loadgen" --server="127.0.0.1:$port" --mode=poisson --rate="$rate" \
      --duration_s="$poisson_s" --warmup_s=3 --json="$out/poisson-$mode.json" >/dev/null 2>&1
  stop_server
  f="$out/poisson-$mode.json"
  echo "| $mode | $(field "$f" 'ok') | $(field "$f" 'latency_ms["p50"]') | $(field "$f" 'latency_ms["p95"]') | $(field "$f" 'latency_ms["p99"]') | $(field "$f" 'first_preview_ms["p50"]') | $(field "$f" 'first_preview_ms["p95"]') |"
done
