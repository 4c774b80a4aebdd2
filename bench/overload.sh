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
#
#   bench/overload.sh --two_clients [--requests N]
#
# Two clients (issue 14; bench/RESULTS.md, "Two clients"): a server with two bearer tokens,
# alice and bob. Bob's default requests (DDIM 30 steps, one 32x32 image, closed loop, one at a
# time, N of them, default 40) are timed alone, then while alice floods the server with 16
# concurrent requests of 4 images of 128x128. Prints bob's latency percentiles both ways.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${IMAGEGEN_BUILD_DIR:-"$root/build"}
bursts=20 max_queue=4 steps=30 two_clients=0 requests=40
while [ $# -gt 0 ]; do
  case "$1" in
    --bursts) bursts=$2; shift 2 ;;
    --max_queue) max_queue=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --two_clients) two_clients=1; shift ;;
    --requests) requests=$2; shift 2 ;;
    *) echo "usage: bench/overload.sh [--bursts N] [--max_queue Q] [--steps S] | --two_clients [--requests N]" >&2
       exit 2 ;;
  esac
done
out=$(mktemp -d)
server_pid=""
trap '[ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$out"' EXIT

free_port() { /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

port=$(free_port)
server_args=(--listen="127.0.0.1:$port" --metrics_listen= --model_dir="$root/models/fashion-mnist-ldm"
             --request_log=false)
if ((two_clients)); then
  printf 'alice:alice-token-0123456789\nbob:bob-token-0123456789\n' >"$out/tokens.txt"
  echo alice-token-0123456789 >"$out/alice"
  echo bob-token-0123456789 >"$out/bob"
  server_args+=(--auth_tokens_file="$out/tokens.txt")
  client_auth=(--token_file "$out/bob")
else
  server_args+=(--max_queue="$max_queue")
  client_auth=()
fi
"$build/server/imagegen-server" "${server_args[@]}" >"$out/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 120); do  # ready once it answers ListModels
  "$build/client/imagegen" models --server "127.0.0.1:$port" "${client_auth[@]}" >/dev/null 2>&1 && break
  kill -0 "$server_pid" 2>/dev/null || { echo "the server exited: $(tail -3 "$out/server.log")" >&2; exit 1; }
  sleep 0.5
done

echo "Machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'); $(date -u +%Y-%m-%d)"
if ((two_clients)); then
  loadgen() { "$build/client/imagegen-loadgen" --server="127.0.0.1:$port" --mode=closed --preview_every=0 "$@"; }
  bob() { loadgen --token_file="$out/bob" --concurrency=1 --requests="$requests" --warmup=3 --json="$out/$1.json" \
            >/dev/null 2>"$out/$1.err"; }
  bob alone
  loadgen --token_file="$out/alice" --concurrency=16 --requests=1000000 --num_images=4 --width=128 --height=128 \
      --timeout_s=3600 >/dev/null 2>"$out/flood.err" &
  flood_pid=$!
  sleep 3  # her queue share fills and her jobs run
  bob flooded
  kill "$flood_pid" 2>/dev/null || true
  wait "$flood_pid" 2>/dev/null || true
  echo "Server: default model, bearer tokens alice and bob (--max_queue_per_client=16); bob: DDIM 30 steps, one"
  echo "32x32 image, one request at a time, $requests requests; alice: 16 concurrent requests of 4 images of 128x128."
  echo
  echo "| bob's requests | p50 ms | p95 ms | p99 ms | images/s |"
  echo "| --- | ---: | ---: | ---: | ---: |"
  for run in alone flooded; do
    /usr/bin/python3 - "$out/$run.json" "$run" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
label = {"alone": "alone", "flooded": "while alice floods"}[sys.argv[2]]
lat = s["latency_ms"]
print(f"| {label} | {lat['p50']:.0f} | {lat['p95']:.0f} | {lat['p99']:.0f} | {s['images_per_s']:.1f} |")
PY
  done
  kill -TERM "$server_pid"
  wait "$server_pid" || true
  server_pid=""
  exit 0
fi
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
