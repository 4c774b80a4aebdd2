#!/usr/bin/env bash
# SIGTERM drains: health turns NOT_SERVING, a job already running finishes OK, a new request
# is answered UNAVAILABLE, and the server exits 0 once idle.
# Usage: drain_test.sh BUILD_DIR BUNDLE_DIR
set -euo pipefail
build=$1
bundle=$2
tmp=$(mktemp -d)
port=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$build/server/imagegen-server" --listen="127.0.0.1:$port" --metrics_listen= --model_dir="$bundle" \
    --drain_timeout_s=60 >"$tmp/server.log" 2>&1 &
server=$!
trap 'kill -9 $server 2>/dev/null || true; rm -rf "$tmp"' EXIT
for _ in $(seq 120); do
  "$build/client/imagegen" models --server "127.0.0.1:$port" >/dev/null 2>&1 && break
  sleep 0.5
done

# A long job (200 steps of 8 images), then SIGTERM once it runs.
"$build/client/imagegen" generate --server "127.0.0.1:$port" --prompt "a bag" --steps 200 --num_images 8 \
    --size 64x64 --out "$tmp/long/" --job_id long-job >"$tmp/long.log" 2>&1 &
long=$!
for _ in $(seq 100); do grep -q '"event":"request"' "$tmp/server.log" 2>/dev/null && break; grep -q "accepted" "$tmp/long.log" 2>/dev/null && break; sleep 0.1; done
sleep 0.3
kill -TERM "$server"
sleep 0.5
set +e
"$build/client/imagegen" generate --server "127.0.0.1:$port" --prompt "a bag" --steps 2 --out "$tmp/late.png" >"$tmp/late.log" 2>&1
late=$?
wait "$long"; long_status=$?
wait "$server"; server_status=$?
set -e
fail() { echo "drain_test: FAIL: $*"; echo "--- server log"; cat "$tmp/server.log"; echo "--- long job"; cat "$tmp/long.log"; exit 1; }
[ "$long_status" -eq 0 ] || fail "the running job ended with $long_status instead of finishing"
[ "$late" -eq 14 ] || fail "a request during the drain got exit $late, expected 14 (UNAVAILABLE)"
[ "$server_status" -eq 0 ] || fail "the server exited $server_status"
grep -q '"job_id":"long-job","model":"[^"]*","outcome":"ok"' "$tmp/server.log" || fail "no request log line for long-job"
grep -q "drained" "$tmp/server.log" || fail "the server did not report the drain"
echo "drain_test: PASS"
