#!/usr/bin/env bash
# The README's second command, and all that CI runs: installs what is missing, builds once, runs
# every test (unit, loopback gRPC, end to end, fuzz replay), then builds the core and server
# tests under AddressSanitizer + UBSan (with the fuzz target's one-minute run) and under
# ThreadSanitizer and runs them (scripts/sanitize.sh, docs/TESTING.md).
# IMAGEGEN_SANITIZERS=0 skips the sanitizer builds, for a quick local run; CI never sets it.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${IMAGEGEN_BUILD_DIR:-"$root/build"}
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
cd "$build_dir"
ctest --output-on-failure --parallel "$(nproc)" --timeout 600
if [ "${IMAGEGEN_SANITIZERS:-1}" != 0 ]; then
  "$root/scripts/sanitize.sh" address
  "$root/scripts/sanitize.sh" thread
fi
