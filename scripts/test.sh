#!/usr/bin/env bash
# The README's second command, and all that CI runs: installs what is missing, builds once, and
# runs every test (unit, loopback gRPC, end to end).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${IMAGEGEN_BUILD_DIR:-"$root/build"}
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
cd "$build_dir"
ctest --output-on-failure --parallel "$(nproc)" --timeout 600
