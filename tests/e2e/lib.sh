# Shared by the end-to-end scripts (source it): failure and step messages, a temporary folder
# removed on exit (with the server log's tail after a failure), free ports, a server started in
# the background and waited for, and a PNG check.
#
# Before sourcing, set E2E_NAME (the script's name in messages), SERVER and CLIENT (binaries) and
# PYTHON. KEEP_TMP=1 keeps the temporary folder for a look after a failure.

fail() {
  echo "$E2E_NAME: FAIL: $*" >&2
  exit 1
}
step() { echo "$E2E_NAME: $*"; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/imagegen-$E2E_NAME.XXXXXX")
SERVER_PID=""
e2e_cleanup() {
  local rc=$?
  if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [[ $rc -ne 0 && -f $TMP/server.log ]]; then
    echo "$E2E_NAME: last lines of the server log:" >&2
    tail -n 40 "$TMP/server.log" >&2
  fi
  if [[ ${KEEP_TMP:-0} == 1 ]]; then
    echo "$E2E_NAME: kept $TMP" >&2
  else
    rm -rf "$TMP"
  fi
}
trap e2e_cleanup EXIT

# Prints N distinct free ports, asked of the kernel together. Another process could take one
# before the server binds it; that shows as a server that exits at once, reported below.
free_ports() {
  "$PYTHON" -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
}

# Starts $SERVER with the given flags (--listen among them) in the background, logging to
# $TMP/server.log, and waits until ADDR answers ListModels (it answers UNAVAILABLE while the
# models load). The models go to $TMP/models.txt.
start_server() {
  local addr=$1
  shift
  "$SERVER" "$@" >"$TMP/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 120); do
    kill -0 "$SERVER_PID" 2>/dev/null || fail "the server exited during start-up"
    if "$CLIENT" models --server "$addr" --timeout 2 >"$TMP/models.txt" 2>/dev/null; then
      return 0
    fi
    sleep 0.5
  done
  fail "the server did not answer ListModels within 60 s"
}

is_png() { [[ $(head -c 8 "$1" | od -An -tx1 | tr -d ' \n') == 89504e470d0a1a0a ]]; }
