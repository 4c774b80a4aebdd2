#!/usr/bin/env bash
# SIGTERM drains: health turns NOT_SERVING, a job already running finishes OK, a new request
# is answered UNAVAILABLE, and the server exits 0 once idle.
# Usage: drain_test.sh BUILD_DIR BUNDLE_DIR
set -euo pipefail
BUILD_DIR=$(cd "$1" && pwd)
BUNDLE_DIR=$2
SERVER=$BUILD_DIR/server/imagegen-server
CLIENT=$BUILD_DIR/client/imagegen
PYTHON=/usr/bin/python3
E2E_NAME=drain_test
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ADDR=127.0.0.1:$(free_ports 1)
start_server "$ADDR" --listen="$ADDR" --metrics_listen= --model_dir="$BUNDLE_DIR" --drain_timeout_s=60

# A long job (200 steps of 8 images), then SIGTERM once it runs.
"$CLIENT" generate --server "$ADDR" --prompt "a bag" --steps 200 --num_images 8 \
    --size 64x64 --out "$TMP/long/" --job_id long-job >"$TMP/long.log" 2>&1 &
long=$!
for _ in $(seq 100); do grep -q "accepted" "$TMP/long.log" 2>/dev/null && break; sleep 0.1; done
sleep 0.3
kill -TERM "$SERVER_PID"
sleep 0.5
set +e
"$CLIENT" generate --server "$ADDR" --prompt "a bag" --steps 2 --out "$TMP/late.png" >"$TMP/late.log" 2>&1
late=$?
wait "$long"; long_status=$?
wait "$SERVER_PID"; server_status=$?
set -e
SERVER_PID=""
[[ $long_status -eq 0 ]] || fail "the running job ended with $long_status instead of finishing: $(cat "$TMP/long.log")"
[[ $late -eq 14 ]] || fail "a request during the drain got exit $late, expected 14 (UNAVAILABLE)"
[[ $server_status -eq 0 ]] || fail "the server exited $server_status"
grep -q '"job_id":"long-job","model":"[^"]*","outcome":"ok"' "$TMP/server.log" || fail "no request log line for long-job"
grep -q "drained" "$TMP/server.log" || fail "the server did not report the drain"
step "PASS"
