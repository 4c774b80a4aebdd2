#!/usr/bin/env bash
# Installs the Debian packages imagegen needs to build, test and serve, and only those missing.
# Idempotent: a second run installs nothing. Used by the README's commands, .ci/run and the
# Dockerfile, so that all of them build against the same set.
#
#   scripts/setup.sh            build + test + training dependencies (the default)
#   scripts/setup.sh runtime    only what the server needs at run time (the Docker runtime stage)
#   scripts/setup.sh list-runtime   prints the runtime packages (tests/check_runtime_deps.sh)
set -euo pipefail

build_packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libtorch-dev libopenblas0-openmp
  libgrpc++-dev libgrpc-dev protobuf-compiler-grpc protobuf-compiler libprotobuf-dev
  libabsl-dev prometheus-cpp-dev libgtest-dev libgmock-dev libpng-dev libjpeg62-turbo-dev libwebp-dev nlohmann-json3-dev
  libutf8proc-dev libre2-dev
  # tests: Python peer client, the export script for the test bundle, promtool, openssl (the TLS
  # tests make their certificates)
  python3 python3-torch python3-numpy python3-pil python3-grpcio python3-protobuf python3-yaml prometheus
  openssl
  # the sanitizer builds of the tests and the libFuzzer target (scripts/sanitize.sh)
  clang-14 libclang-rt-14-dev
  # the default model's training data
  dataset-fashion-mnist
)
runtime_packages=(
  libtorch1.13 libopenblas0-openmp libgrpc++1.51 libgrpc29 libprotobuf32 libabsl20220623
  libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 libpng16-16 zlib1g libjpeg62-turbo libwebp7 libwebpmux3 libstdc++6
  libutf8proc2 libre2-9
)

case "${1:-build}" in
  build) wanted=("${build_packages[@]}") ;;
  runtime) wanted=("${runtime_packages[@]}") ;;
  list-runtime) printf '%s\n' "${runtime_packages[@]}"; exit 0 ;;
  *) echo "usage: $0 [build|runtime|list-runtime]" >&2; exit 2 ;;
esac

# The Node example client's test needs node and npm; take Debian's only where none is installed.
if [ "${1:-build}" = build ] && ! command -v npm >/dev/null 2>&1; then
  wanted+=(nodejs npm)
fi

missing=()
for p in "${wanted[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all ${#wanted[@]} packages present"
fi

# LibTorch must run on OpenBLAS's OpenMP build: the reference BLAS is ~40x slower and the pthread
# build fights torch's OpenMP threads (docs/MEASURED.md).
arch_triplet=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
openblas="/usr/lib/${arch_triplet}/openblas-openmp/libblas.so.3"
if [ -e "$openblas" ]; then
  current=$(update-alternatives --query "libblas.so.3-${arch_triplet}" 2>/dev/null | awk '/^Value:/ {print $2}')
  if [ "$current" != "$openblas" ]; then
    $SUDO update-alternatives --set "libblas.so.3-${arch_triplet}" "$openblas"
  fi
  openlapack="/usr/lib/${arch_triplet}/openblas-openmp/liblapack.so.3"
  if [ -e "$openlapack" ]; then
    current=$(update-alternatives --query "liblapack.so.3-${arch_triplet}" 2>/dev/null | awk '/^Value:/ {print $2}')
    if [ "$current" != "$openlapack" ]; then
      $SUDO update-alternatives --set "liblapack.so.3-${arch_triplet}" "$openlapack"
    fi
  fi
fi
