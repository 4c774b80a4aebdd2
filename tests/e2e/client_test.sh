#!/usr/bin/env bash
# Tests the command-line client against tests/e2e/fake_server.py: output file names, previews,
# exit codes, the cancel command, deadlines, and that Ctrl-C cancels the job on the server. Needs
# no model and no LibTorch, only the client and Debian's python3-grpcio.
#
#   tests/e2e/client_test.sh BUILD_DIR REPO_ROOT
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 BUILD_DIR REPO_ROOT" >&2
  exit 2
fi
CLIENT=$(cd "$1" && pwd)/client/imagegen
REPO_ROOT=$(cd "$2" && pwd)
PYTHON=/usr/bin/python3
[[ -x $CLIENT ]] || { echo "client_test: FAIL: $CLIENT is not built" >&2; exit 1; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/imagegen-client.XXXXXX")
SERVER_PID=""
cleanup() {
  local rc=$?
  if [[ -n $SERVER_PID ]]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [[ $rc -ne 0 && -f $TMP/server.log ]]; then
    echo "client_test: last lines of the fake server's log:" >&2
    tail -n 20 "$TMP/server.log" >&2
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
  echo "client_test: FAIL: $*" >&2
  exit 1
}

# Runs the client and checks its exit status: expect_rc WANT ARGS...; stderr goes to $TMP/err.
expect_rc() {
  local want=$1 rc=0
  shift
  "$CLIENT" "$@" >"$TMP/out" 2>"$TMP/err" || rc=$?
  [[ $rc == "$want" ]] ||
    fail "imagegen $* exited with $rc, want $want; stderr: $(cat "$TMP/err")"
}

# Waits up to 10 s for a file to contain a pattern.
wait_for() {
  local pattern=$1 file=$2
  for _ in $(seq 100); do
    grep -q -- "$pattern" "$file" 2>/dev/null && return 0
    sleep 0.1
  done
  fail "\"$pattern\" did not appear in $file: $(cat "$file" 2>/dev/null)"
}

# No server yet: a clean UNAVAILABLE, exit status 14, before any file is written.
read -r FREE_PORT < <("$PYTHON" -c '
import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
expect_rc 14 generate --server "127.0.0.1:$FREE_PORT" --prompt x --out "$TMP/none.png"
grep -q "UNAVAILABLE" "$TMP/err" || fail "no UNAVAILABLE in: $(cat "$TMP/err")"
[[ ! -e $TMP/none.png ]] || fail "an image was written without a server"

expect_rc 0 --help
grep -q "Usage" "$TMP/out" || fail "--help printed no usage"
expect_rc 0 help generate
grep -q -- "--previews" "$TMP/out" || fail "help generate does not describe --previews"
expect_rc 3 generate --out "$TMP/x.png" --size 12y
expect_rc 3 frobnicate

"$PYTHON" "$REPO_ROOT/tests/e2e/fake_server.py" --repo_root "$REPO_ROOT" --listen 127.0.0.1:0 \
  --port_file "$TMP/port" --events "$TMP/events" >"$TMP/server.log" 2>&1 &
SERVER_PID=$!
wait_for . "$TMP/port"
S=(--server "127.0.0.1:$(cat "$TMP/port")")

expect_rc 0 models "${S[@]}"
grep -q '^\*' "$TMP/out" || fail "the default model is not marked: $(cat "$TMP/out")"

expect_rc 0 generate "${S[@]}" --prompt "a pair of trousers" --steps 4 --seed 7 \
  --out "$TMP/out.png" --previews "$TMP/prev"
[[ -s $TMP/out.png ]] || fail "no out.png"
for s in 1 2 3 4; do
  [[ -s $TMP/prev/step-000$s-image-0.png ]] || fail "no preview of step $s: $(ls "$TMP/prev")"
done
grep -q "seed 7" "$TMP/out" || fail "seed not reported: $(cat "$TMP/out")"

expect_rc 0 generate "${S[@]}" --prompt x --steps 2 --seed 10 --num_images 2 --out "$TMP/many.png"
[[ -s $TMP/many-10.png && -s $TMP/many-11.png ]] || fail "no many-10.png and many-11.png"
expect_rc 0 generate "${S[@]}" --prompt x --steps 2 --seed 3 --out "$TMP/dir/"
[[ -s $TMP/dir/3.png ]] || fail "no dir/3.png"

expect_rc 3 generate "${S[@]}" --prompt x --steps 100000 --out "$TMP/x.png"
grep -q "INVALID_ARGUMENT: .*steps" "$TMP/err" || fail "unclear error: $(cat "$TMP/err")"
expect_rc 5 generate "${S[@]}" --prompt x --model no-such-model --out "$TMP/x.png"
expect_rc 5 cancel no-such-job "${S[@]}"
# A job with an id starting with "hold" waits until cancelled.
expect_rc 4 generate "${S[@]}" --prompt x --job_id hold-deadline --timeout 0.5 --out "$TMP/x.png"

# The cancel command ends another client's call with CANCELLED (1).
"$CLIENT" generate "${S[@]}" --prompt x --job_id hold-cancel --out "$TMP/x.png" \
  2>"$TMP/held.err" &
held=$!
wait_for "accepted" "$TMP/held.err"
expect_rc 0 cancel hold-cancel "${S[@]}"
rc=0
wait "$held" || rc=$?
[[ $rc == 1 ]] || fail "the cancelled call exited with $rc, want 1: $(cat "$TMP/held.err")"

# Ctrl-C: the client cancels the call, so the server sees the job cancelled, and exits 1. Job
# control gives the background client its own process group with SIGINT not ignored, as in a
# terminal.
set -m
"$CLIENT" generate "${S[@]}" --prompt x --job_id hold-sigint --out "$TMP/x.png" \
  2>"$TMP/sigint.err" &
interrupted=$!
set +m
wait_for "accepted" "$TMP/sigint.err"
kill -INT "$interrupted"
rc=0
wait "$interrupted" || rc=$?
[[ $rc == 1 ]] || fail "after SIGINT the client exited with $rc, want 1: $(cat "$TMP/sigint.err")"
wait_for "cancelled hold-sigint" "$TMP/events"

echo "client_test: PASS"
