#!/usr/bin/env bash
# Runs the client examples (client/examples/python and client/examples/node) against the real
# server on a model bundle: each checks health, streams a Generate with previews and cancels a
# second one, and must exit 0 and leave its PNGs behind.
#
#   tests/e2e/examples_test.sh BUILD_DIR REPO_ROOT BUNDLE_DIR
#
# The Node example's packages are installed with `npm ci` into client/examples/node/node_modules
# (ignored by git) when that folder is missing or older than package-lock.json; this needs the
# npm registry or a warm npm cache. KEEP_TMP=1 keeps the temporary folder for a look afterwards.
set -euo pipefail

if [[ $# -ne 3 ]]; then
  echo "usage: $0 BUILD_DIR REPO_ROOT BUNDLE_DIR" >&2
  exit 2
fi
BUILD_DIR=$(cd "$1" && pwd)
REPO_ROOT=$(cd "$2" && pwd)
BUNDLE_DIR=$(cd "$3" && pwd)
SERVER=$BUILD_DIR/server/imagegen-server
CLIENT=$BUILD_DIR/client/imagegen
PYTHON=/usr/bin/python3  # Debian's: it has grpcio and protobuf (a pyenv python may not)
NODE_DIR=$REPO_ROOT/client/examples/node

E2E_NAME=examples_test
# shellcheck source=tests/e2e/lib.sh
source "$REPO_ROOT/tests/e2e/lib.sh"

for tool in "$SERVER" "$CLIENT" "$PYTHON"; do
  [[ -x $tool ]] || fail "$tool is missing or not executable (build it first)"
done
for tool in node npm protoc; do
  command -v "$tool" >/dev/null || fail "$tool is not installed"
done
[[ -f $BUNDLE_DIR/model.json ]] || fail "no model bundle in $BUNDLE_DIR (run e2e_serve first)"

PORT=$(free_ports 1)
ADDR=127.0.0.1:$PORT

step "starting the server on $ADDR"
start_server "$ADDR" --listen="$ADDR" --metrics_listen= --model_dir="$BUNDLE_DIR" --request_log=false

# Checks an example's output folder: the result and at least one preview, all PNGs.
check_outputs() {
  local name=$1 dir=$2 f
  shopt -s nullglob
  local results=("$dir"/result-*.png) previews=("$dir"/preview-step*.png)
  shopt -u nullglob
  [[ ${#results[@]} -ge 1 ]] || fail "$name example wrote no result PNG in $dir"
  [[ ${#previews[@]} -ge 1 ]] || fail "$name example wrote no preview PNG in $dir"
  for f in "${results[@]}" "${previews[@]}"; do
    is_png "$f" || fail "$f is not a PNG"
  done
  step "  $name: ${#results[@]} result(s), ${#previews[@]} preview(s)"
}

step "Python example"
"$PYTHON" -B "$REPO_ROOT/client/examples/python/generate.py" --server "$ADDR" \
  --prompt "a pair of trousers" --out_dir "$TMP/python" >"$TMP/python.log" 2>&1 ||
  { cat "$TMP/python.log" >&2; fail "the Python example exited with an error"; }
grep -q "ended CANCELLED" "$TMP/python.log" ||
  { cat "$TMP/python.log" >&2; fail "the Python example did not show CANCELLED"; }
check_outputs Python "$TMP/python"

# npm records what it installed in node_modules/.package-lock.json; reinstall when it is missing
# or older than the committed lock file.
if [[ ! -f $NODE_DIR/node_modules/.package-lock.json ||
      $NODE_DIR/package-lock.json -nt $NODE_DIR/node_modules/.package-lock.json ]]; then
  step "npm ci in $NODE_DIR"
  (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error >"$TMP/npm.log" 2>&1) ||
    { cat "$TMP/npm.log" >&2; fail "npm ci failed in $NODE_DIR (is the npm registry reachable?)"; }
fi

step "Node example"
node "$NODE_DIR/generate.js" --server "$ADDR" --prompt "a pair of trousers" \
  --out_dir "$TMP/node" >"$TMP/node.log" 2>&1 ||
  { cat "$TMP/node.log" >&2; fail "the Node example exited with an error"; }
grep -q "ended CANCELLED" "$TMP/node.log" ||
  { cat "$TMP/node.log" >&2; fail "the Node example did not show CANCELLED"; }
check_outputs Node "$TMP/node"

kill -0 "$SERVER_PID" 2>/dev/null || fail "the server died during the examples"
echo "examples_test: PASS"
