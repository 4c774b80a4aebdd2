#!/usr/bin/env bash
# Measures the default model's quality through the real serving path: starts imagegen-server on
# a free loopback port with the bundle in models/, runs bench/quality/measure.py against it for
# each setting given (default: the model's defaults), then stops the server.
#
#   bench/quality.sh                                  # defaults (DDIM, 30 steps, guidance 3)
#   bench/quality.sh "--steps 10" "--steps 50" "--guidance 2"   # one run per quoted setting
#
# Needs a build (scripts/build.sh). Each run generates 50 images per class.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${IMAGEGEN_BUILD_DIR:-"$root/build"}
port=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
"$build_dir/server/imagegen-server" --listen="127.0.0.1:$port" --metrics_listen= \
    --model_dir="$root/models" >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 120); do  # ready once it answers ListModels (the port opens before the models load)
  "$build_dir/client/imagegen" models --server "127.0.0.1:$port" >/dev/null 2>&1 && break
  sleep 0.5
done
settings=("$@")
[ "${#settings[@]}" -gt 0 ] || settings=("")
for setting in "${settings[@]}"; do
  echo "== settings: ${setting:-model defaults}"
  # shellcheck disable=SC2086  # each setting is a list of flags
  /usr/bin/python3 "$root/bench/quality/measure.py" --server "127.0.0.1:$port" --per_class 50 \
      --connect_timeout 60 $setting
done
