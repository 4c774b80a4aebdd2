#!/usr/bin/env bash
# Configures and builds imagegen (Release) into build/ (or $IMAGEGEN_BUILD_DIR).
# Extra arguments go to the CMake configure step, e.g. -DCMAKE_INSTALL_PREFIX=/opt/imagegen.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${IMAGEGEN_BUILD_DIR:-"$root/build"}
cmake -S "$root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
# Two parallel jobs on two cores; each LibTorch translation unit needs about 1 GiB.
cmake --build "$build_dir" --parallel "${IMAGEGEN_BUILD_JOBS:-$(nproc)}"
