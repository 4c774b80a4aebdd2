#!/usr/bin/env bash
# Access control end to end: the real server with TLS (--tls_cert, --tls_key) and bearer tokens
# (--auth_tokens_file) on a model bundle, the real client with --tls_ca and --token_file (or
# IMAGEGEN_TOKEN). Certificates are made here with the openssl command line.
#
#   tests/e2e/auth_test.sh BUILD_DIR REPO_ROOT BUNDLE_DIR
set -euo pipefail

if [[ $# -ne 3 ]]; then
  echo "usage: $0 BUILD_DIR REPO_ROOT BUNDLE_DIR" >&2
  exit 2
fi
BUILD_DIR=$(cd "$1" && pwd)
REPO_ROOT=$(cd "$2" && pwd)
BUNDLE_DIR=$3
SERVER=$BUILD_DIR/server/imagegen-server
CLIENT=$BUILD_DIR/client/imagegen
PYTHON=/usr/bin/python3

E2E_NAME=auth_test
# shellcheck source=tests/e2e/lib.sh
source "$REPO_ROOT/tests/e2e/lib.sh"

for tool in "$SERVER" "$CLIENT"; do
  [[ -x $tool ]] || fail "$tool is missing or not executable (build it first)"
done
command -v openssl >/dev/null || fail "openssl is not installed (Debian package openssl; scripts/setup.sh)"
[[ -f $BUNDLE_DIR/model.json ]] || fail "no model bundle in $BUNDLE_DIR (ctest runs export_test_bundle first)"

step "certificates: a CA and a server certificate for localhost and 127.0.0.1"
"$REPO_ROOT/tests/e2e/make_certs.sh" "$TMP" imagegen-e2e-ca || { cat "$TMP/openssl.log" >&2; fail "openssl could not make the certificates"; }

TOKEN=e2e-$RANDOM$RANDOM-token-for-the-web-front-end
printf '# imagegen e2e tokens\n\n%s\nsecond-token-of-another-service\n' "$TOKEN" >"$TMP/tokens.txt"
printf '%s\n' "$TOKEN" >"$TMP/token.txt"

# start_server waits with `$CLIENT models`: give it the CA and the token.
REAL_CLIENT=$CLIENT
cat >"$TMP/imagegen-authorized" <<EOF
#!/usr/bin/env bash
exec "$REAL_CLIENT" "\$@" --tls_ca="$TMP/ca.pem" --token_file="$TMP/token.txt"
EOF
chmod +x "$TMP/imagegen-authorized"
CLIENT=$TMP/imagegen-authorized

ADDR=127.0.0.1:$(free_ports 1)
step "starting the server on $ADDR with TLS and bearer tokens"
start_server "$ADDR" --listen="$ADDR" --metrics_listen= --model_dir="$BUNDLE_DIR" \
  --tls_cert="$TMP/server.pem" --tls_key="$TMP/server.key" --auth_tokens_file="$TMP/tokens.txt"
CLIENT=$REAL_CLIENT
grep -q "access: TLS, bearer tokens required" "$TMP/server.log" ||
  fail "the start-up line does not say TLS and tokens are on: $(head -n 5 "$TMP/server.log")"

# Runs the client and checks its exit status: expect_rc WANT NAME ARGS...; output in $TMP/NAME.*.
expect_rc() {
  local want=$1 name=$2 rc=0
  shift 2
  "$CLIENT" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" || rc=$?
  [[ $rc == "$want" ]] || fail "imagegen $* exited with $rc, want $want: $(cat "$TMP/$name.err")"
}

step "generate over TLS with --token_file"
expect_rc 0 ok generate --server "$ADDR" --tls_ca "$TMP/ca.pem" --token_file "$TMP/token.txt" \
  --prompt "a pair of trousers" --steps 3 --seed 7 --out "$TMP/ok.png" --timeout 120
is_png "$TMP/ok.png" || fail "$TMP/ok.png is not a PNG"

step "generate with the token in IMAGEGEN_TOKEN"
IMAGEGEN_TOKEN=$TOKEN expect_rc 0 env generate --server "$ADDR" --tls_ca "$TMP/ca.pem" \
  --prompt "an ankle boot" --steps 3 --out "$TMP/env.png" --timeout 120
is_png "$TMP/env.png" || fail "$TMP/env.png is not a PNG"

step "no token: UNAUTHENTICATED (16)"
expect_rc 16 missing generate --server "$ADDR" --tls_ca "$TMP/ca.pem" --prompt "a bag" --out "$TMP/no.png" \
  --timeout 60
grep -q "UNAUTHENTICATED" "$TMP/missing.err" || fail "no code name: $(cat "$TMP/missing.err")"
grep -q "missing bearer token" "$TMP/missing.err" || fail "no 'missing bearer token': $(cat "$TMP/missing.err")"
[[ ! -e $TMP/no.png ]] || fail "an unauthenticated call wrote an image"

step "a wrong token: UNAUTHENTICATED (16)"
printf '%s\n' "${TOKEN}x" >"$TMP/wrong.txt"
expect_rc 16 wrong models --server "$ADDR" --tls_ca "$TMP/ca.pem" --token_file "$TMP/wrong.txt" --timeout 60
grep -q "not valid" "$TMP/wrong.err" || fail "no 'not valid': $(cat "$TMP/wrong.err")"

step "a plaintext client: UNAVAILABLE (14)"
expect_rc 14 plaintext models --server "$ADDR" --token_file "$TMP/token.txt" --timeout 10

step "the server's log never holds the token"
! grep -q -- "$TOKEN" "$TMP/server.log" || fail "the token appears in the server log"
grep -q '"outcome":"refused","code":"UNAUTHENTICATED"' "$TMP/server.log" ||
  fail "no refused UNAUTHENTICATED line in the server log"

step "PASS"
