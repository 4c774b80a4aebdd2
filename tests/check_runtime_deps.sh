#!/usr/bin/env bash
# The Dockerfile's runtime stage installs `scripts/setup.sh runtime`. No Docker engine runs here,
# so this test checks the same thing offline: every shared library the binaries link directly
# comes from a package in that runtime list (or from libc6/libgcc-s1, which every Debian has).
# Usage: check_runtime_deps.sh BUILD_DIR REPO_ROOT
set -euo pipefail
build_dir=$1
root=$2
mapfile -t runtime < <("$root/scripts/setup.sh" list-runtime)
runtime+=(libc6 libgcc-s1)
status=0
for binary in "$build_dir/server/imagegen-server" "$build_dir/client/imagegen"; do
  for lib in $(readelf -d "$binary" | awk '/NEEDED/ {gsub(/[][]/, "", $5); print $5}'); do
    path=$(ldconfig -p | awk -v f="$lib" '$1 == f {print $NF; exit}' || true)
    if [ -z "$path" ]; then
      echo "FAIL: $binary needs $lib, which ldconfig does not know"
      status=1
      continue
    fi
    package=$(dpkg -S "$(readlink -f "$path")" 2>/dev/null | head -n1 | cut -d: -f1 || true)
    [ -n "$package" ] || package=$(dpkg -S "$path" 2>/dev/null | head -n1 | cut -d: -f1 || true)
    if [[ ! " ${runtime[*]} " == *" $package "* ]]; then
      echo "FAIL: $(basename "$binary") needs $lib from package '$package', missing from scripts/setup.sh's runtime list"
      status=1
    fi
  done
done
[ "$status" -eq 0 ] && echo "check_runtime_deps: every linked library comes from a runtime package"
exit "$status"
