#!/usr/bin/env bash
# End-to-end test of the real server: starts BUILD_DIR/server/imagegen-server on a model bundle,
# then checks it with the C++ client, the Python peer client and Prometheus's own linter.
#
#   tests/e2e/serve_test.sh BUILD_DIR REPO_ROOT BUNDLE_DIR
#
# BUNDLE_DIR is a model bundle; when it holds no model.json, a tiny random one is exported there
# first (models/train/export_random.py, a few seconds). IMAGEGEN_SERVER overrides the server
# binary (for example with tests/e2e/fake_server.py, to test this script). KEEP_TMP=1 keeps the
# temporary folder (server log, images) for a look after a failure.
set -euo pipefail

if [[ $# -ne 3 ]]; then
  echo "usage: $0 BUILD_DIR REPO_ROOT BUNDLE_DIR" >&2
  exit 2
fi
BUILD_DIR=$(cd "$1" && pwd)
REPO_ROOT=$(cd "$2" && pwd)
BUNDLE_DIR=$3
SERVER=${IMAGEGEN_SERVER:-$BUILD_DIR/server/imagegen-server}
CLIENT=$BUILD_DIR/client/imagegen
PYTHON=/usr/bin/python3  # Debian's: it has grpcio, protobuf and PIL (a pyenv python may not)

E2E_NAME=serve_test
# shellcheck source=tests/e2e/lib.sh
source "$REPO_ROOT/tests/e2e/lib.sh"

for tool in "$SERVER" "$CLIENT" "$PYTHON"; do
  [[ -x $tool ]] || fail "$tool is missing or not executable (build it first)"
done
for tool in curl promtool; do
  command -v "$tool" >/dev/null || fail "$tool is not installed (Debian packages: curl, prometheus)"
done

# The bundle: exported once, into a temporary name first so that an interrupted export never
# leaves a half-written bundle that the next run would take for a whole one.
if [[ ! -f $BUNDLE_DIR/model.json ]]; then
  step "exporting a tiny random bundle to $BUNDLE_DIR"
  mkdir -p "$(dirname "$BUNDLE_DIR")"
  rm -rf "$BUNDLE_DIR.partial"
  "$PYTHON" "$REPO_ROOT/models/train/export_random.py" --out "$BUNDLE_DIR.partial" \
    >"$TMP/export.log" 2>&1 || { cat "$TMP/export.log" >&2; fail "export_random.py failed"; }
  rm -rf "$BUNDLE_DIR"
  mv "$BUNDLE_DIR.partial" "$BUNDLE_DIR"
fi

read -r PORT METRICS_PORT < <(free_ports 2)
ADDR=127.0.0.1:$PORT

step "starting $SERVER on $ADDR (metrics on $METRICS_PORT)"
start_server "$ADDR" --listen="$ADDR" --metrics_listen="127.0.0.1:$METRICS_PORT" --model_dir="$BUNDLE_DIR"
step "server ready; models:"
cat "$TMP/models.txt"

step "C++ client: generate with previews"
"$CLIENT" generate --server "$ADDR" --prompt "a pair of trousers" --steps 4 --seed 7 \
  --out "$TMP/out.png" --previews "$TMP/prev" --timeout 120 >"$TMP/generate.txt" ||
  fail "imagegen generate exited with $? (see above)"
cat "$TMP/generate.txt"
[[ -s $TMP/out.png ]] || fail "imagegen generate wrote no $TMP/out.png"
is_png "$TMP/out.png" || fail "$TMP/out.png is not a PNG"
grep -q "seed 7" "$TMP/generate.txt" || fail "the client did not report seed 7"
shopt -s nullglob
previews=("$TMP"/prev/step-*-image-0.png)
shopt -u nullglob
[[ ${#previews[@]} -ge 1 ]] || fail "no preview frames in $TMP/prev"
step "  $(basename "$TMP/out.png") and ${#previews[@]} preview frame(s) written"

step "C++ client: an invalid request exits with INVALID_ARGUMENT (3)"
set +e
"$CLIENT" generate --server "$ADDR" --prompt "a pair of trousers" --steps 100000 \
  --out "$TMP/invalid.png" 2>"$TMP/invalid.txt"
rc=$?
set -e
[[ $rc == 3 ]] || fail "imagegen generate --steps 100000 exited with $rc, want 3: $(cat "$TMP/invalid.txt")"
grep -q INVALID_ARGUMENT "$TMP/invalid.txt" ||
  fail "the client did not print the code name: $(cat "$TMP/invalid.txt")"

step "Python peer client"
"$PYTHON" "$REPO_ROOT/tests/e2e/python_client.py" --repo_root "$REPO_ROOT" --server "$ADDR" ||
  fail "python_client.py failed"

step "metrics: promtool check metrics"
curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" >"$TMP/metrics.txt" ||
  fail "cannot scrape http://127.0.0.1:$METRICS_PORT/metrics"
promtool check metrics <"$TMP/metrics.txt" >"$TMP/promtool.txt" 2>&1 || {
  cat "$TMP/promtool.txt" >&2
  fail "promtool check metrics found problems"
}
grep -q '^imagegen_requests_total' "$TMP/metrics.txt" ||
  fail "no imagegen_requests_total sample in the metrics (after several requests)"

# A server that ignores SIGTERM cannot be rolled out; give it time to drain and exit.
step "SIGTERM stops the server"
kill -TERM "$SERVER_PID"
for _ in $(seq 60); do
  kill -0 "$SERVER_PID" 2>/dev/null || break
  sleep 0.5
done
kill -0 "$SERVER_PID" 2>/dev/null && fail "the server still runs 30 s after SIGTERM"
wait "$SERVER_PID" 2>/dev/null || true
SERVER_PID=""

step "PASS"
