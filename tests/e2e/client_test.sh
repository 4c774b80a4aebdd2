#!/usr/bin/env bash
# Tests the command-line client against tests/e2e/fake_server.py: output file names and formats
# (--out's extension, --quality, --preview_format, --animation from JPEG and WebP frames), the
# server's warnings, previews, exit codes, the cancel command, deadlines, and that Ctrl-C cancels
# the job on the server; then imagegen-loadgen's JSON line, and both tools with TLS and a bearer
# token against a second fake server. Needs no model and no LibTorch, only the client, Debian's
# python3-grpcio and python3-pil, and openssl (for the TLS part).
#
#   tests/e2e/client_test.sh BUILD_DIR REPO_ROOT
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 BUILD_DIR REPO_ROOT" >&2
  exit 2
fi
CLIENT=$(cd "$1" && pwd)/client/imagegen
LOADGEN=$(cd "$1" && pwd)/client/imagegen-loadgen
REPO_ROOT=$(cd "$2" && pwd)
PYTHON=/usr/bin/python3
for tool in "$CLIENT" "$LOADGEN"; do
  [[ -x $tool ]] || { echo "client_test: FAIL: $tool is not built" >&2; exit 1; }
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/imagegen-client.XXXXXX")
SERVER_PID=""
AUTH_SERVER_PID=""
cleanup() {
  local rc=$?
  for pid in $SERVER_PID $AUTH_SERVER_PID; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  for log in "$TMP/server.log" "$TMP/auth-server.log"; do
    if [[ $rc -ne 0 && -f $log ]]; then
      echo "client_test: last lines of $(basename "$log"):" >&2
      tail -n 20 "$log" >&2
    fi
  done
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

# Runs the load generator and checks its exit status: expect_loadgen_rc WANT ARGS...; the JSON
# line goes to $TMP/loadgen.json, stderr to $TMP/loadgen.err.
expect_loadgen_rc() {
  local want=$1 rc=0
  shift
  "$LOADGEN" "$@" >"$TMP/loadgen.json" 2>"$TMP/loadgen.err" || rc=$?
  [[ $rc == "$want" ]] ||
    fail "imagegen-loadgen $* exited with $rc, want $want; stderr: $(cat "$TMP/loadgen.err")"
}

# The file's first bytes say what it is: has_signature FILE png|jpeg|webp.
has_signature() {
  "$PYTHON" - "$1" "$2" <<'EOF'
import sys
data = open(sys.argv[1], "rb").read(12)
ok = {"png": data[:8] == b"\x89PNG\r\n\x1a\n", "jpeg": data[:3] == b"\xff\xd8\xff",
      "webp": data[:4] == b"RIFF" and data[8:12] == b"WEBP"}[sys.argv[2]]
sys.exit(0 if ok else 1)
EOF
}

# Evaluates a Python expression (which may span lines) on the JSON object in a file, bound to
# `d`: json_check FILE EXPR.
json_check() {
  "$PYTHON" -c '
import json, sys
d = json.load(open(sys.argv[1]))
sys.exit(0 if eval("(" + sys.argv[2] + ")") else 1)' "$1" "$2" ||
    fail "JSON check failed: $2 on $(cat "$1")"
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
grep -q -- "--quality" "$TMP/out" || fail "help generate does not describe --quality"
grep -q -- "--preview_format" "$TMP/out" || fail "help generate does not describe --preview_format"
expect_rc 3 generate --out "$TMP/x.png" --size 12y
expect_rc 3 frobnicate
# Local mistakes in the new flags: refused before any connection (no server runs yet).
expect_rc 3 generate --prompt x --out "$TMP/x.gif"
grep -q -- '--out.*x.gif.*"\.gif".*\.png, \.jpg or \.jpeg, \.webp' "$TMP/err" ||
  fail "unclear --out error: $(cat "$TMP/err")"
expect_rc 3 generate --prompt x --out "$TMP/x.jpg" --quality 101
grep -q -- "--quality 101" "$TMP/err" || fail "unclear --quality error: $(cat "$TMP/err")"
expect_rc 3 generate --prompt x --out "$TMP/x.png" --previews "$TMP/p" --preview_format gif
grep -q -- "--preview_format" "$TMP/err" || fail "unclear --preview_format error: $(cat "$TMP/err")"
expect_rc 3 generate --prompt x --out "$TMP/x.png" --preview_format webp

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

# --out's extension picks the format and --quality goes with it.
expect_rc 0 generate "${S[@]}" --prompt x --steps 2 --job_id jpeg-1 --quality 80 --out "$TMP/j.jpg"
has_signature "$TMP/j.jpg" jpeg || fail "j.jpg is not a JPEG"
grep -q "generate jpeg-1 output_format=IMAGE_FORMAT_JPEG quality=80 " "$TMP/events" ||
  fail "the request did not ask for JPEG at quality 80: $(grep jpeg-1 "$TMP/events")"
expect_rc 0 generate "${S[@]}" --prompt x --steps 2 --seed 5 --num_images 2 --out "$TMP/w.WEBP"
has_signature "$TMP/w-5.WEBP" webp && has_signature "$TMP/w-6.WEBP" webp ||
  fail "no w-5.WEBP and w-6.WEBP: $(ls "$TMP")"
# Without an extension: PNG, and the file gets .png.
expect_rc 0 generate "${S[@]}" --prompt x --steps 2 --out "$TMP/noext"
has_signature "$TMP/noext.png" png || fail "no noext.png: $(ls "$TMP")"
# A server that sends PNG for a .jpg: the file says what it holds, and a warning says why.
expect_rc 0 generate "${S[@]}" --prompt x --steps 2 --job_id pngonly-1 --out "$TMP/old.jpg"
has_signature "$TMP/old.png" png || fail "no old.png: $(ls "$TMP")"
[[ ! -e $TMP/old.jpg ]] || fail "PNG bytes were written to old.jpg"
grep -q "imagegen: warning: the server sent PNG images, not the JPEG" "$TMP/err" ||
  fail "no warning about the format: $(cat "$TMP/err")"

# Previews in JPEG, and an animation decoded from WebP previews and a JPEG result.
expect_rc 0 generate "${S[@]}" --prompt x --steps 2 --job_id prevjpeg-1 --out "$TMP/pj.png" \
  --previews "$TMP/pj" --preview_format jpeg
has_signature "$TMP/pj/step-0002-image-0.jpg" jpeg || fail "no JPEG previews: $(ls "$TMP/pj")"
grep -q "generate prevjpeg-1 .*preview_format=IMAGE_FORMAT_JPEG" "$TMP/events" ||
  fail "the request did not ask for JPEG previews"
expect_rc 0 generate "${S[@]}" --prompt x --steps 3 --out "$TMP/anim.jpg" \
  --animation "$TMP/anim.webp" --preview_format webp
grep -q "animation: 4 frames" "$TMP/out" || fail "not 3 previews and the result: $(cat "$TMP/out")"
has_signature "$TMP/anim.webp" webp && grep -q ANIM "$TMP/anim.webp" ||
  fail "anim.webp is not an animated WebP"

# The server's warnings: on stderr, and in --json's "warnings" (always there).
expect_rc 0 generate "${S[@]}" --prompt "a purple coat" --steps 2 --out "$TMP/warned.png"
grep -q 'imagegen: warning: prompt: "purple" is not in model .* vocabulary' "$TMP/err" ||
  fail "the warning is not on stderr: $(cat "$TMP/err")"
expect_rc 0 generate "${S[@]}" --prompt "a purple zebra" --steps 2 --out "$TMP/warned.png" --json
json_check "$TMP/out" 'len(d["warnings"]) == 2 and "\"zebra\"" in d["warnings"][1]'
grep -q "imagegen: warning: " "$TMP/err" || fail "--json hid the warnings from stderr"
expect_rc 0 generate "${S[@]}" --prompt "a coat" --steps 2 --out "$TMP/plain.png" --json
json_check "$TMP/out" 'd["warnings"] == [] and d["images"][0]["path"].endswith("plain.png")'

# The load generator's JSON line: the keys bench/serving.sh and bench/soak.sh read, in order.
expect_loadgen_rc 0 "${S[@]}" --mode=closed --concurrency=2 --requests=4 --steps=2
json_check "$TMP/loadgen.json" 'list(d) == ["mode", "concurrency", "warmup", "steps",
  "num_images", "sampler", "preview_every", "cancel_fraction", "cancel_job_fraction",
  "deadline_fraction", "short_timeout_s", "requests", "ok", "failed", "wall_s", "images_per_s",
  "latency_ms", "first_preview_ms", "first_progress_ms", "by_plan", "cancel_job_calls",
  "cancel_job_late", "expected", "unexpected", "unexpected_by_code"]
  and d["ok"] == 4 and d["by_plan"] == {"plain": {"OK": 4}} and d["unexpected"] == 0'

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

# TLS and a bearer token: a second fake server with the real server's --tls_cert, --tls_key and
# --auth_tokens_file; both tools with --tls_ca and --token_file or IMAGEGEN_TOKEN.
if ! command -v openssl >/dev/null; then
  echo "client_test: openssl is not installed; skipping TLS and tokens" >&2
  echo "client_test: PASS"
  exit 0
fi
"$REPO_ROOT/tests/e2e/make_certs.sh" "$TMP" imagegen-client-test-ca || fail "openssl could not make the certificates: $(cat "$TMP/openssl.log")"
TOKEN=client-test-$RANDOM$RANDOM
printf '# tokens\n%s\n' "$TOKEN" >"$TMP/tokens.txt"
printf '%s\n' "$TOKEN" >"$TMP/token.txt"
"$PYTHON" "$REPO_ROOT/tests/e2e/fake_server.py" --repo_root "$REPO_ROOT" --listen 127.0.0.1:0 \
  --port_file "$TMP/auth-port" --tls_cert "$TMP/server.pem" --tls_key "$TMP/server.key" \
  --auth_tokens_file "$TMP/tokens.txt" >"$TMP/auth-server.log" 2>&1 &
AUTH_SERVER_PID=$!
wait_for . "$TMP/auth-port"
A=(--server "127.0.0.1:$(cat "$TMP/auth-port")" --tls_ca "$TMP/ca.pem")

expect_rc 16 models "${A[@]}"
expect_rc 0 models "${A[@]}" --token_file "$TMP/token.txt"
IMAGEGEN_TOKEN=$TOKEN expect_rc 0 generate "${A[@]}" --prompt x --steps 2 --out "$TMP/tls.webp"
has_signature "$TMP/tls.webp" webp || fail "no tls.webp over TLS"
expect_rc 5 models "${A[@]}" --token_file "$TMP/no-such-token-file"
grep -q -- "--token_file" "$TMP/err" || fail "unclear token file error: $(cat "$TMP/err")"

# The load generator: refused without the token (at once, by its ListModels check), served
# with it, over TLS; its CancelJob calls carry the token too (else they would end unexpected).
expect_loadgen_rc 16 "${A[@]}" --mode=closed --requests=2 --steps=2
grep -q "UNAUTHENTICATED" "$TMP/loadgen.err" || fail "unclear: $(cat "$TMP/loadgen.err")"
expect_loadgen_rc 0 "${A[@]}" --token_file "$TMP/token.txt" --mode=closed --requests=2 --steps=2
json_check "$TMP/loadgen.json" 'd["ok"] == 2'
IMAGEGEN_TOKEN=$TOKEN expect_loadgen_rc 0 "${A[@]}" --mode=poisson --rate=30 --duration_s=1 \
  --steps=2 --cancel_job_fraction=0.3
json_check "$TMP/loadgen.json" 'd["unexpected"] == 0 and sum(d["cancel_job_calls"].values()) > 0'
expect_loadgen_rc 5 "${A[@]}" --tls_ca "$TMP/no-such-ca.pem" --mode=closed --requests=1
grep -q -- "--tls_ca" "$TMP/loadgen.err" || fail "unclear: $(cat "$TMP/loadgen.err")"

echo "client_test: PASS"
