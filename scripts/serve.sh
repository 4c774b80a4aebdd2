#!/usr/bin/env bash
# The README's first command: installs what is missing, builds, and serves the embedded default
# model (models/) on gRPC port 50051 with Prometheus metrics on port 9090. Extra arguments are
# server flags, e.g. scripts/serve.sh --listen=127.0.0.1:50051.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
exec "${IMAGEGEN_BUILD_DIR:-$root/build}/server/imagegen-server" --model_dir="$root/models" "$@"
