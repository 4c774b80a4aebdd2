#!/usr/bin/env bash
# gpu-build.sh: build imagegen on a CUDA host that has PyTorch (a pip torch whose package holds a
# CUDA LibTorch) but none of Debian's gRPC, protobuf, abseil or prometheus-cpp development
# packages. Run it from the repo root of an imagegen checkout, with the folder of .deb files that
# fetch-debs.sh filled (default .gpu-debs/) next to the sources (docs/GPU.md; scripts/gpu_check.sh
# runs this, then the tests and the benchmarks):
#
#   OUT=DIR bash scripts/gpu/gpu-build.sh [unpack|configure|build] [cmd -- COMMAND [ARG...]]
#
#   unpack     only unpack the .debs into a private prefix ($IMAGEGEN_GPU_WORK/deps, never /)
#   configure  ... then configure with CMake (tests on; IMAGEGEN_GPU_TESTS=OFF turns them off),
#              and write $IMAGEGEN_GPU_WORK/env.sh: the build's run-time environment, to source
#   build      ... then build with ninja (the default when no stage is named)
#   cmd -- ... after the stages above (the build by default), COMMAND ARG... in the repo root with
#              the library path of the build; output in $OUT/cmd.log
#
# Environment (docs/GPU.md has the table): OUT, IMAGEGEN_GPU_DEBS, IMAGEGEN_GPU_WORK,
# IMAGEGEN_GPU_TOTAL_S, IMAGEGEN_GPU_JOBS, IMAGEGEN_GPU_TARGETS, IMAGEGEN_GPU_TESTS,
# IMAGEGEN_GPU_CMAKE_ARGS, IMAGEGEN_GPU_PYTHON, IMAGEGEN_GPU_TORCH_CMAKE_PREFIX, IMAGEGEN_GPU_CXX.
#
# Every step runs under `timeout`, and the whole run ends within IMAGEGEN_GPU_TOTAL_S seconds
# (default 480). $OUT/summary.txt is rewritten after every stage, so it exists even when the run
# is cut short. Exit status 0 when every stage asked for succeeded.
set -uo pipefail

T0=$(date +%s)
SRC=$(pwd)
WORK=$(realpath -m "${IMAGEGEN_GPU_WORK:-/tmp/imagegen-gpu}")
OUT=$(realpath -m "${OUT:-$WORK/out}")
DEBS=${IMAGEGEN_GPU_DEBS:-}          # default: .gpu-deps (pack-deps.sh) if there, else .gpu-debs
TOTAL_S=${IMAGEGEN_GPU_TOTAL_S:-480}
JOBS=${IMAGEGEN_GPU_JOBS:-$(nproc)}
DEADLINE=$((T0 + TOTAL_S))
PREFIX=$WORK/deps              # the Debian packages, unpacked
FB=$WORK/deps-fb               # the manifest's "fallback" run-time packages, unpacked apart
FBLIB=$PREFIX/fallback-lib     # links to those fallback libraries the host lacks
DEPLIB=$PREFIX/usr/lib/x86_64-linux-gnu
BUILD=$WORK/build
RUN=$WORK/run                  # this run's scratch files (notes, server log, ...)
ORIG_LD=${LD_LIBRARY_PATH:-}
UNPACK_FORMAT=1                # part of the prefix's stamp: bump when the unpacking changes

usage() {
  [ -n "${1:-}" ] && echo "gpu-build.sh: $1" >&2
  sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

# ---------------------------------------------------------------- arguments
LEVEL=0            # 1 unpack, 2 configure, 3 build
CMD=()
while (($#)); do
  case $1 in
    unpack) ((LEVEL < 1)) && LEVEL=1 ;;
    configure) ((LEVEL < 2)) && LEVEL=2 ;;
    build) ((LEVEL < 3)) && LEVEL=3 ;;
    cmd)
      shift
      [ "${1:-}" = -- ] && shift
      (($#)) || usage "cmd needs a command: cmd -- COMMAND [ARG...]"
      CMD=("$@")
      break ;;
    -h|--help) usage ;;
    *) usage "unknown argument '$1'" ;;
  esac
  shift
done
((LEVEL == 0)) && LEVEL=3
STAGES=$(echo unpack configure build | cut -d' ' -f1-"$LEVEL")
((${#CMD[@]})) && STAGES="$STAGES cmd"

# ---------------------------------------------------------------- helpers
# now, left, budget
# shellcheck source=scripts/gpu/time_budget.sh
source "$(dirname "${BASH_SOURCE[0]}")/time_budget.sh"
note() { echo "[+$(($(now) - T0))s] $*" | tee -a "$RUN/notes.txt"; }
result() { cat >>"$RUN/results.txt"; }
fail() { note "FAILED: $*"; RC=1; return 1; }  # a stage's failure: noted; the caller returns 1
# limited SECONDS CMD...: CMD under timeout; skipped (rc 124) when under 5 seconds are left for it
limited() {
  local s=$1; shift
  if ((s < 5)); then echo "gpu-build.sh: no time left for: $(echo "$*" | cut -c1-120)" >&2; return 124; fi
  timeout -k 5 "$s" "$@"
}
run_ld() { echo "$DEPLIB:$FBLIB${LINKDIRS:+:$LINKDIRS}${ORIG_LD:+:$ORIG_LD}"; }
first_errors() {  # LOG N: the first N compiler/linker/CMake errors of a log (CMake's with 2 more lines), indented
  awk -v n="$2" '
    c > 0 { if (NF) { print; c-- } next }
    k >= n { exit }
    /CMake Error/ { print; c = 2; k++; next }
    /error:|error [A-Z]|undefined reference|FAILED:|No such file|ninja: error/ { print; k++ }
  ' "$1" | cut -c1-400 | sed 's/^/    /'
}

update_summary() {
  [ -d "$RUN" ] && [ -d "$OUT" ] || return 0
  {
    echo "imagegen gpu-build.sh: stages: $STAGES; started $(date -u -d "@$T0" +%FT%TZ); limit ${TOTAL_S}s"
    echo "host: ${GPU_NAME:-no GPU seen by torch}; torch ${TORCH_VERSION:-not found} (CUDA ${TORCH_CUDA_VERSION:-none}); ${CXX_VERSION:-no C++ compiler}"
    echo
    cat "$RUN/notes.txt" 2>/dev/null
    if [ -s "$RUN/results.txt" ]; then echo; cat "$RUN/results.txt"; fi
  } >"$OUT/summary.txt.new"
  mv -f "$OUT/summary.txt.new" "$OUT/summary.txt"
}

RC=0
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  note "end (exit status $RC)"
  update_summary
  local f
  for f in "$OUT"/*.log "$OUT"/*.txt; do  # files come back at most 16 MiB each: keep head and tail of a larger log
    if [ ! -f "$f" ] || (($(stat -c %s "$f") <= 15 * 1048576)); then continue; fi
    { head -c 5000000 "$f"; printf '\n[... cut ...]\n'; tail -c 9000000 "$f"; } >"$RUN/cut" && mv -f "$RUN/cut" "$f"
  done
  echo
  echo "===== $OUT/summary.txt"
  cat "$OUT/summary.txt"
  echo "===== files in OUT: $(find "$OUT" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort | tr '\n' ' ')"
}

# ---------------------------------------------------------------- start
grep -qs 'project(imagegen' CMakeLists.txt || { echo "gpu-build.sh: run me from the repo root of imagegen (no CMakeLists.txt with project(imagegen) in $SRC)" >&2; exit 2; }
case "$WORK/" in
  //|/usr/*|/opt/|/tmp/|/home/|/root/|/bin/|/sbin/|/lib/|/lib64/|/etc/*|/var/|"$SRC"/|"$SRC"/*)
    echo "gpu-build.sh: refusing IMAGEGEN_GPU_WORK=$WORK (use a folder of its own, e.g. /tmp/imagegen-gpu)" >&2; exit 2 ;;
esac
case "$SRC/" in "$WORK"/*) echo "gpu-build.sh: IMAGEGEN_GPU_WORK=$WORK holds the checkout; refusing" >&2; exit 2 ;; esac
mkdir -p "$WORK" "$OUT" || { echo "gpu-build.sh: cannot create $WORK or $OUT" >&2; exit 2; }
rm -rf "$RUN"; mkdir -p "$RUN"
: >"$RUN/notes.txt"; : >"$RUN/results.txt"
rm -f "$OUT/summary.txt" "$OUT/env.txt" "$OUT/build.log" "$OUT/cmd.log"
trap cleanup EXIT
trap 'note "signal: stopping"; RC=1; exit 1' INT TERM HUP
note "gpu-build.sh in $SRC: stages $STAGES; all done within ${TOTAL_S}s; work folder $WORK"

# ---------------------------------------------------------------- env: host and torch facts
stage_env() {
  # the C++ compiler: IMAGEGEN_GPU_CXX, else the system's /usr/bin/g++, else g++ on PATH; never
  # $CXX from the environment, which a host may point at /opt/gcc/bin/g++: that wrapper links
  # libstdc++ statically into the executable while the torch wheel uses the system's
  # libstdc++.so.6, and two C++ runtimes in one process abort at start-up with "free(): invalid
  # pointer" (std::locale freed by the other copy; seen on an H200). The project's CMake refuses
  # such a compiler (cmake/ImagegenCxxRuntime.cmake).
  CXX=${IMAGEGEN_GPU_CXX:-}
  if [ -z "$CXX" ]; then
    if [ -x /usr/bin/g++ ]; then CXX=/usr/bin/g++; else CXX=$(command -v g++ || true); fi
  fi
  [ -n "$CXX" ] && CXX_VERSION=$("$CXX" --version 2>/dev/null | head -1)

  # the python that imports torch: IMAGEGEN_GPU_PYTHON, python3, or the image's venv
  local c cands=("${IMAGEGEN_GPU_PYTHON:-}" python3 /opt/torch/.venv/bin/python3)
  PY=""
  for c in "${cands[@]}"; do
    if [ -z "$c" ] || ! command -v "$c" >/dev/null; then continue; fi
    timeout 90 env LD_LIBRARY_PATH="$ORIG_LD" "$c" - >"$RUN/torch.env" 2>"$RUN/torch.err" <<'PYEOF'
import os, shlex
def out(k, v):
    print(f"{k}={shlex.quote(str(v))}")
import torch
out("TORCH_VERSION", torch.__version__)
out("TORCH_DIR", os.path.dirname(torch.__file__))
out("TORCH_CMAKE_PREFIX", torch.utils.cmake_prefix_path)
out("TORCH_CUDA_VERSION", torch.version.cuda or "")
out("TORCH_CXX11_ABI", int(torch._C._GLIBCXX_USE_CXX11_ABI))
try:
    import numpy
    out("NUMPY_VERSION", numpy.__version__)
except ImportError:
    out("NUMPY_VERSION", "missing (the test fixtures need it)")
ok = torch.cuda.is_available()
out("TORCH_CUDA_AVAILABLE", int(ok))
if ok:
    out("GPU_NAME", torch.cuda.get_device_name(0))
PYEOF
    if grep -q '^TORCH_CMAKE_PREFIX=' "$RUN/torch.env"; then PY=$(command -v "$c"); break; fi
  done
  # shellcheck disable=SC1091
  [ -n "$PY" ] && . "$RUN/torch.env"
  # for dry runs without the wheel (e.g. Debian's CPU libtorch: /usr/lib/x86_64-linux-gnu/cmake)
  [ -n "${IMAGEGEN_GPU_TORCH_CMAKE_PREFIX:-}" ] && TORCH_CMAKE_PREFIX=$IMAGEGEN_GPU_TORCH_CMAKE_PREFIX

  local t smi
  {
    echo "date: $(date -u +%FT%TZ); $(uname -srm); $(sed -n 's/^PRETTY_NAME=//p' /etc/os-release | tr -d '"')"
    echo "cores: $(nproc); memory: $(free -g | awk '/^Mem:/ {print $2 " GiB"}'); disk free in $WORK: $(df -h "$WORK" | awk 'NR == 2 {print $4}')"
    echo "CXX: ${CXX:-none} (${CXX_VERSION:-?})"
    for t in cmake ninja nvcc dpkg-deb pkg-config gdb nm readelf; do
      printf '%-10s %s\n' "$t:" "$(command -v "$t" || echo MISSING)"
    done
    command -v cmake >/dev/null && cmake --version | head -1
    command -v ninja >/dev/null && echo "ninja $(ninja --version)"
    command -v nvcc >/dev/null && nvcc --version | tail -2 | head -1
    smi=$(command -v nvidia-smi || ls /usr/local/nvidia/bin/nvidia-smi 2>/dev/null || true)
    [ -n "$smi" ] && timeout 30 "$smi" --query-gpu=name,memory.total,driver_version --format=csv,noheader
    echo "python with torch: ${PY:-none found (set IMAGEGEN_GPU_PYTHON)}"
    cat "$RUN/torch.env"
    [ -z "$PY" ] && tail -3 "$RUN/torch.err"
    env | grep -E '^(LD_LIBRARY_PATH|CUDA_HOME|CUDA_VERSION|TORCH_CUDA_ARCH_LIST|CC|CXX|CUDAHOSTCXX|LIBRARY_PATH)='
    if [ -n "${TORCH_DIR:-}" ] && [ -f "$TORCH_DIR/lib/libtorch_cpu.so" ] && command -v nm >/dev/null; then
      echo "google::protobuf symbols defined by the wheel's libtorch_cpu.so: $(timeout 60 nm -D --defined-only "$TORCH_DIR/lib/libtorch_cpu.so" | grep -c ' _ZN6google8protobuf')"
    fi
  } >"$OUT/env.txt" 2>&1
  note "env: torch ${TORCH_VERSION:-not found} (CUDA ${TORCH_CUDA_VERSION:-none}, GPU ${GPU_NAME:-none}); python ${PY:-none} (numpy ${NUMPY_VERSION:-?}); CXX ${CXX:-none}"
  update_summary
}

# ---------------------------------------------------------------- unpack: the .debs into $PREFIX
extract_deb() {  # DEB DEST
  if command -v dpkg-deb >/dev/null; then dpkg-deb -x "$1" "$2"; return; fi
  local tmp rc
  tmp=$(mktemp -d "$RUN/ar.XXXXXX")
  (cd "$tmp" && ar x "$1" && tar -xf data.tar.* -C "$2"); rc=$?
  rm -rf "$tmp"
  return $rc
}

# find_lib NAME DIR...: the first DIR/NAME' (or, with LDCACHE set, the loader cache's NAME'),
# NAME' being NAME, then NAME with its last version number dropped, ... down to libX.so.N
# (libz.so.1.2.13 -> libz.so.1.2 -> libz.so.1)
find_lib() {
  local cand=$1 d f; shift
  while :; do
    for d in "$@"; do [ -e "$d/$cand" ] && { echo "$d/$cand"; return 0; }; done
    if [ -n "${LDCACHE:-}" ]; then
      f=$(awk -v n="$cand" '$1 == n && /x86-64/ {print $NF; exit}' <<<"$LDCACHE")
      [ -n "$f" ] && { echo "$f"; return 0; }
    fi
    [[ ${cand%.*} == *.so.* ]] || return 1
    cand=${cand%.*}
  done
}

# Symlinks of the packages: an absolute one (/usr/lib/...) to its copy in the prefix when there;
# a dangling one (libssl.so -> libssl.so.3, libz.so -> /lib/x86_64-linux-gnu/libz.so.1.2.13) to
# the host's library of that soname, else to the Debian copy in $FB, which then also gets a link
# in $FBLIB (on the run-time library path) under each of its sonames.
# IMAGEGEN_GPU_SYSLIBDIRS (tests only) replaces the host's library folders and ldconfig.
fix_links() {
  local l tgt base found f n sys links LDCACHE=""
  read -ra sys <<<"${IMAGEGEN_GPU_SYSLIBDIRS:-/usr/lib/x86_64-linux-gnu /lib/x86_64-linux-gnu /usr/lib64 /lib64}"
  [ -z "${IMAGEGEN_GPU_SYSLIBDIRS:-}" ] && LDCACHE=$(ldconfig -p 2>/dev/null)
  mapfile -t links < <(find "$PREFIX" -type l)
  for l in "${links[@]}"; do
    tgt=$(readlink "$l")
    if [[ $tgt == /* && -e "$PREFIX$tgt" ]]; then ln -sfn "$PREFIX$tgt" "$l"; continue; fi
    [ -e "$l" ] && continue
    base=$(basename "$tgt")
    if found=$(find_lib "$base" "${sys[@]}"); then
      ln -sfn "$found" "$l"; echo "  link $l -> $found (host)"
    elif found=$(LDCACHE="" find_lib "$base" "$FB/usr/lib/x86_64-linux-gnu" "$FB/lib/x86_64-linux-gnu"); then
      f=$(readlink -f "$found")
      ln -sfn "$f" "$l"; echo "  link $l -> $f (Debian fallback, also on the run-time path)"
      n=$(basename "$f")
      while [[ $n == *.so.* ]]; do ln -sfn "$f" "$FBLIB/$n"; n=${n%.*}; done
    else
      echo "  DANGLING $l -> $tgt (no $base on this host nor in the fallback packages)"
    fi
  done
}

# The packages come as .deb files (fetch-debs.sh; DIR/*.deb and DIR/fallback/*.deb) or packed by
# pack-deps.sh (DIR/imagegen-deps*.tar.xz: deps/ and deps-fb/ as unpacked here, slimmer, which is
# what travels to a GPU host); a folder with an archive uses the archive.
stage_unpack() {
  local dir stamp debs fbdebs packs f bad=0 log=$RUN/unpack.log what
  if [ -z "$DEBS" ]; then
    DEBS=.gpu-debs
    [ -d "$SRC/.gpu-deps" ] && DEBS=.gpu-deps
  fi
  if ! dir=$(cd "$SRC" && cd "$DEBS" 2>/dev/null && pwd); then
    fail "unpack: no folder $DEBS (IMAGEGEN_GPU_DEBS) in the checkout: fill it with fetch-debs.sh (and pack-deps.sh) and carry it"
    return 1
  fi
  shopt -s nullglob
  packs=("$dir"/imagegen-deps*.tar.xz)
  debs=(); fbdebs=()
  ((${#packs[@]})) || { debs=("$dir"/*.deb); fbdebs=("$dir"/fallback/*.deb); }
  shopt -u nullglob
  ((${#packs[@]} + ${#debs[@]})) || { fail "unpack: no .deb files and no imagegen-deps*.tar.xz in $dir"; return 1; }
  if ((${#packs[@]})); then what="${#packs[@]} packed archive(s) ($(cd "$dir" && ls imagegen-deps*.tar.xz | tr '\n' ' '))"
  else what="${#debs[@]}+${#fbdebs[@]} packages"; fi
  stamp=$( { echo "format $UNPACK_FORMAT"; cd "$dir" && find . \( -name '*.deb' -o -name 'imagegen-deps*.tar.xz' \) -printf '%P %s\n' | sort; } | sha256sum | cut -c1-16)
  if [ "$(cat "$PREFIX/.gpu-build-prefix" 2>/dev/null)" = "$stamp" ]; then
    note "unpack: $PREFIX already holds these $what (stamp $stamp); kept"
    echo "===== unpack: $PREFIX kept (same files as when it was unpacked)" >>"$OUT/build.log"
    return 0
  fi
  # never remove a folder that this script did not create
  for f in "$PREFIX" "$FB"; do
    if [ -d "$f" ] && [ -n "$(ls -A "$f")" ] && [ ! -e "$PREFIX/.gpu-build-prefix" ]; then
      fail "unpack: $f exists and was not made by gpu-build.sh; remove it or set IMAGEGEN_GPU_WORK"
      return 1
    fi
  done
  rm -rf "$PREFIX" "$FB"
  mkdir -p "$PREFIX" "$FB" "$FBLIB"
  echo incomplete >"$PREFIX/.gpu-build-prefix"
  {
    echo "===== unpack: $what from $dir into $PREFIX (fallback packages into $FB)"
    for f in "${packs[@]}"; do  # deps/ and deps-fb/ of the archive are $PREFIX and $FB
      tar --no-same-owner -xJf "$f" -C "$WORK" || { bad=$((bad + 1)); echo "FAILED to unpack $f"; }
    done
    for f in "${debs[@]}"; do extract_deb "$f" "$PREFIX" || { bad=$((bad + 1)); echo "FAILED to unpack $f"; }; done
    for f in "${fbdebs[@]}"; do extract_deb "$f" "$FB" || { bad=$((bad + 1)); echo "FAILED to unpack $f"; }; done
    # pkg-config files name /usr: point them at the prefix
    find "$PREFIX" -name '*.pc' -exec sed -i "s|/usr|$PREFIX/usr|g" {} +
    fix_links
    echo "-- dangling links left:"; find "$PREFIX" -xtype l | sed 's/^/  /'
    echo "-- libraries the unpacked libraries and programs need but do not find:"
    for f in "$DEPLIB"/*.so.* "$PREFIX"/usr/bin/*; do
      { [ -f "$f" ] && [ ! -L "$f" ]; } || continue
      LD_LIBRARY_PATH=$DEPLIB:$FBLIB${ORIG_LD:+:$ORIG_LD} ldd "$f" 2>/dev/null | grep "not found" | sed "s|^|  $(basename "$f"): |"
    done | sort -u
  } >"$log" 2>&1
  cat "$log" >>"$OUT/build.log"
  local protoc dangling missing
  protoc=$(LD_LIBRARY_PATH=$DEPLIB:$FBLIB${ORIG_LD:+:$ORIG_LD} timeout 10 "$PREFIX/usr/bin/protoc" --version 2>&1 | head -1)
  dangling=$(find "$PREFIX" -xtype l | wc -l)
  missing=$(grep -c '^  .*not found' "$log")
  note "unpack: $what ($bad failed) into $PREFIX ($(du -sh "$PREFIX" | cut -f1)); protoc: ${protoc:-none}; dangling links: $dangling; unresolved sonames: $missing"
  local fbl
  fbl=$(find "$FBLIB" -mindepth 1 -printf '%f\n' | sort | tr '\n' ' ')
  [ -n "$fbl" ] && note "unpack: the host lacks ${fbl}-> Debian's copies, linked in $FBLIB"
  if ((bad > 0)) || [[ $protoc != libprotoc* ]]; then
    fail "unpack: see build.log"
    update_summary
    return 1
  fi
  echo "$stamp" >"$PREFIX/.gpu-build-prefix"
  update_summary
}

# ---------------------------------------------------------------- configure
stage_configure() {
  if [ -z "${TORCH_CMAKE_PREFIX:-}" ]; then
    fail "configure: no torch found (IMAGEGEN_GPU_PYTHON: a python that imports torch)"; return 1
  fi
  if [ -z "$CXX" ]; then fail "configure: no C++ compiler (set IMAGEGEN_GPU_CXX)"; return 1; fi
  if ! command -v cmake >/dev/null || ! command -v ninja >/dev/null; then fail "configure: cmake or ninja missing"; return 1; fi
  # The wheel's torch/include/google (an older protobuf) stays where it is: the project's CMake
  # puts Debian's protobuf headers before Torch's (cmake/ImagegenTorch.cmake).
  if [ -n "${TORCH_DIR:-}" ] && [ -d "$TORCH_DIR/include/google" ]; then
    note "configure: torch bundles include/google (left in place; cmake/ImagegenTorch.cmake orders the include path)"
  fi

  # nvcc: the wheel's TorchConfig.cmake wants the CUDA toolkit when torch is a CUDA build
  NVCC=""
  if [ -n "${TORCH_CUDA_VERSION:-}" ]; then
    NVCC=$(command -v nvcc || { [ -x /usr/local/cuda/bin/nvcc ] && echo /usr/local/cuda/bin/nvcc; } || true)
    [ -n "$NVCC" ] || { fail "configure: torch is a CUDA build but nvcc is not found (PATH, /usr/local/cuda/bin)"; return 1; }
  fi
  local cuda_home="" d site
  [ -n "$NVCC" ] && cuda_home=$(cd "$(dirname "$(readlink -f "$NVCC")")/.." && pwd)
  # every folder of shared libraries that the wheel's libtorch_cuda.so needs when linking (-rpath-link)
  LINKDIRS=""
  if [ -n "${TORCH_DIR:-}" ]; then
    site=$(dirname "$TORCH_DIR")
    LINKDIRS=$TORCH_DIR/lib
    while IFS= read -r d; do LINKDIRS=$LINKDIRS:$d; done < <(find "$site/nvidia" -maxdepth 4 -name 'lib*.so*' -printf '%h\n' 2>/dev/null | sort -u)
  fi
  [ -n "$cuda_home" ] && [ -d "$cuda_home/lib64" ] && LINKDIRS=${LINKDIRS:+$LINKDIRS:}$cuda_home/lib64

  local pkgconfig=$PREFIX/usr/bin/pkg-config   # Debian's pkgconf from the debs, unless the host's works
  command -v pkg-config >/dev/null && pkg-config --version >/dev/null 2>&1 && pkgconfig=$(command -v pkg-config)
  export PKG_CONFIG_LIBDIR="$DEPLIB/pkgconfig:$PREFIX/usr/share/pkgconfig" PKG_CONFIG_PATH=""
  export CCACHE_DISABLE=1
  # protoc and grpc_cpp_plugin from the prefix run during configure and build
  LD_LIBRARY_PATH=$(run_ld); export LD_LIBRARY_PATH
  if [ -n "$NVCC" ]; then
    export CUDA_HOME=$cuda_home CUDACXX=$NVCC TORCH_CUDA_ARCH_LIST=9.0 PATH="$cuda_home/bin:$PATH"
  fi

  rm -f "$WORK/env.sh"
  local args=(
    -S "$SRC" -B "$BUILD" -G Ninja
    -DCMAKE_BUILD_TYPE=Release
    -DIMAGEGEN_BUILD_TESTS="${IMAGEGEN_GPU_TESTS:-ON}"
    -DCMAKE_CXX_COMPILER="$CXX"
    # -include cstdint: Debian 12's abseil 20220623 headers use uint8_t without <cstdint>, which
    # gcc 13's libstdc++ no longer includes on its own. -isystem: the multiarch headers of the
    # debs (jconfig.h, openssl/configuration.h, curl) before any the host has.
    "-DCMAKE_CXX_FLAGS=-include cstdint -isystem $PREFIX/usr/include/x86_64-linux-gnu"
    # --allow-shlib-undefined: the wheel's libraries may name libraries found only at run time
    # (the driver's libcuda.so.1); -rpath-link: where the wheel's own dependencies lie.
    "-DCMAKE_EXE_LINKER_FLAGS=-Wl,--allow-shlib-undefined${LINKDIRS:+ -Wl,-rpath-link,$LINKDIRS}"
    "-DCMAKE_SHARED_LINKER_FLAGS=${LINKDIRS:+-Wl,-rpath-link,$LINKDIRS}"
    -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
    -DCMAKE_POLICY_VERSION_MINIMUM=3.5              # CMake 4 and the older config files of the debs
    "-DCMAKE_PREFIX_PATH=$TORCH_CMAKE_PREFIX;$PREFIX/usr"
    -Dabsl_DIR="$DEPLIB/cmake/absl"
    -DgRPC_DIR="$DEPLIB/cmake/grpc"
    -Dprometheus-cpp_DIR="$DEPLIB/cmake/prometheus-cpp"
    -Dcivetweb_DIR="$DEPLIB/cmake/civetweb"
    -Dnlohmann_json_DIR="$PREFIX/usr/share/cmake/nlohmann_json"
    -DGTest_DIR="$DEPLIB/cmake/GTest"
    -DProtobuf_INCLUDE_DIR="$PREFIX/usr/include"
    -DProtobuf_LIBRARY="$DEPLIB/libprotobuf.so" -DProtobuf_LIBRARY_RELEASE="$DEPLIB/libprotobuf.so"
    -DProtobuf_LITE_LIBRARY="$DEPLIB/libprotobuf-lite.so" -DProtobuf_LITE_LIBRARY_RELEASE="$DEPLIB/libprotobuf-lite.so"
    -DProtobuf_PROTOC_LIBRARY="$DEPLIB/libprotoc.so" -DProtobuf_PROTOC_LIBRARY_RELEASE="$DEPLIB/libprotoc.so"
    -DProtobuf_PROTOC_EXECUTABLE="$PREFIX/usr/bin/protoc"
    -DGRPC_CPP_PLUGIN="$PREFIX/usr/bin/grpc_cpp_plugin"
    -DPNG_PNG_INCLUDE_DIR="$PREFIX/usr/include" -DPNG_LIBRARY="$DEPLIB/libpng16.so" -DPNG_LIBRARY_RELEASE="$DEPLIB/libpng16.so"
    -DJPEG_INCLUDE_DIR="$PREFIX/usr/include" -DJPEG_LIBRARY="$DEPLIB/libjpeg.so" -DJPEG_LIBRARY_RELEASE="$DEPLIB/libjpeg.so"
    -DZLIB_INCLUDE_DIR="$PREFIX/usr/include" -DZLIB_LIBRARY="$DEPLIB/libz.so" -DZLIB_LIBRARY_RELEASE="$DEPLIB/libz.so"
    -DOPENSSL_ROOT_DIR="$PREFIX/usr" -DOPENSSL_INCLUDE_DIR="$PREFIX/usr/include"
    -DOPENSSL_SSL_LIBRARY="$DEPLIB/libssl.so" -DOPENSSL_CRYPTO_LIBRARY="$DEPLIB/libcrypto.so"
    -DCURL_INCLUDE_DIR="$PREFIX/usr/include/x86_64-linux-gnu" -DCURL_LIBRARY="$DEPLIB/libcurl.so" -DCURL_LIBRARY_RELEASE="$DEPLIB/libcurl.so"
    -DPKG_CONFIG_EXECUTABLE="$pkgconfig"
  )
  # the python of the test fixtures (tests/CMakeLists.txt: export_random.py, convert_test.py)
  [ -n "${PY:-}" ] && args+=(-DIMAGEGEN_PYTHON="$PY")
  if [ -n "$NVCC" ]; then  # imagegen has no CUDA sources: this only satisfies the wheel's CUDA checks (H100/H200: sm_90)
    args+=(-DCMAKE_CUDA_COMPILER="$NVCC" -DCMAKE_CUDA_HOST_COMPILER="$CXX" -DCMAKE_CUDA_ARCHITECTURES=90
           -DCUDAToolkit_ROOT="$cuda_home" -DCUDA_TOOLKIT_ROOT_DIR="$cuda_home" -DTORCH_CUDA_ARCH_LIST=9.0)
  fi
  local extra
  read -ra extra <<<"${IMAGEGEN_GPU_CMAKE_ARGS:-}"
  args+=("${extra[@]}")
  # An earlier build folder is reused (ninja rebuilds only what changed), but configured afresh: no
  # cache entries from an earlier call's IMAGEGEN_GPU_CMAKE_ARGS. One from another checkout goes.
  if [ -f "$BUILD/CMakeCache.txt" ] && ! grep -qxF "CMAKE_HOME_DIRECTORY:INTERNAL=$SRC" "$BUILD/CMakeCache.txt"; then
    rm -rf "$BUILD"
  fi
  rm -f "$BUILD/CMakeCache.txt"
  mkdir -p "$BUILD"
  local s rc t0 log=$RUN/configure.log
  s=$(budget 150 "$RESERVE_AFTER_BUILD")
  t0=$(now)
  { echo; echo "===== configure (limit ${s}s; LD_LIBRARY_PATH=$LD_LIBRARY_PATH)"; printf '%q ' cmake "${args[@]}"; echo; } >>"$OUT/build.log"
  limited "$s" cmake "${args[@]}" >"$log" 2>&1
  rc=$?
  cat "$log" >>"$OUT/build.log"
  if ((rc != 0)); then
    fail "configure: rc $rc; first errors:"
    { first_errors "$log" 12; [ "$rc" = 124 ] && echo "    (timed out, or no time left)"; } | tee -a "$RUN/notes.txt"
    update_summary
    return 1
  fi
  {
    echo "-- where CMake found things (CMakeCache.txt):"
    grep -E "^(Torch_DIR|Caffe2_DIR|absl_DIR|gRPC_DIR|prometheus-cpp_DIR|nlohmann_json_DIR|GTest_DIR|IMAGEGEN_PYTHON|IMAGEGEN_BUILD_TESTS|Protobuf_(INCLUDE_DIR|LIBRARY|PROTOC_EXECUTABLE)|GRPC_CPP_PLUGIN|PNG_LIBRARY|JPEG_LIBRARY|ZLIB_LIBRARY|OPENSSL_SSL_LIBRARY|CMAKE_CUDA_COMPILER|CMAKE_CXX_COMPILER|TORCH_LIBRARY)(:[A-Z]+)?=" "$BUILD/CMakeCache.txt"
    echo "-- host paths of dependencies in build.ninja (expect none):"
    grep -ohE "(^|[^A-Za-z0-9_./-])/usr/(include|lib/x86_64-linux-gnu)/[^ ;\"]*(grpc|absl|protobuf|prometheus|civetweb|re2|cares|png|jpeg|webp|nlohmann)[^ ;\"]*" "$BUILD/build.ninja" \
      | grep -v '/cmake/' | sort -u | head -20
  } >>"$OUT/build.log" 2>&1
  note "configure: ok in $(($(now) - t0))s; Torch from $(sed -n 's/^Torch_DIR:PATH=//p' "$BUILD/CMakeCache.txt"); nvcc ${NVCC:-none}"
  # the project's own findings: compiler check, protobuf include order, CUDA (IMAGEGEN_WITH_CUDA)
  grep -E '^-- imagegen: ' "$log" | cut -c1-400 | sed 's/^-- /configure: /' | while IFS= read -r l; do note "$l"; done
  write_env
  update_summary
}

# $WORK/env.sh: the build's run-time environment, for scripts that run the binaries after this
# script (scripts/gpu_check.sh sources it). Python must run with IMAGEGEN_ORIG_LD_LIBRARY_PATH:
# Debian's libraries on LD_LIBRARY_PATH are not meant for it.
write_env() {
  {
    echo "# written by scripts/gpu/gpu-build.sh on $(date -u +%FT%TZ); source it"
    printf 'export LD_LIBRARY_PATH=%q\n' "$(run_ld)"
    printf 'export IMAGEGEN_BUILD=%q IMAGEGEN_DEPS=%q IMAGEGEN_TORCH_DIR=%q\n' "$BUILD" "$PREFIX" "${TORCH_DIR:-}"
    printf 'export IMAGEGEN_PYTHON=%q IMAGEGEN_ORIG_LD_LIBRARY_PATH=%q\n' "${PY:-}" "$ORIG_LD"
    printf 'IMAGEGEN_GPU_NAME=%q IMAGEGEN_TORCH_VERSION=%q IMAGEGEN_TORCH_CUDA_VERSION=%q IMAGEGEN_CXX=%q\n' \
      "${GPU_NAME:-}" "${TORCH_VERSION:-}" "${TORCH_CUDA_VERSION:-}" "$CXX"
  } >"$WORK/env.sh"
}

# ---------------------------------------------------------------- build
BINARIES="server/imagegen-server client/imagegen client/imagegen-loadgen bench/imagegen-bench-speed core/imagegen-samplers tests/core_test tests/server_test"
stage_build() {
  local targets s rc t0 have="" b log=$RUN/ninja.log
  read -ra targets <<<"${IMAGEGEN_GPU_TARGETS:-}"
  s=$(budget 100000 "$RESERVE_AFTER_BUILD")
  ((s >= 30)) || { fail "build: only ${s}s left"; return 1; }
  { echo; echo "===== ninja -j$JOBS -k 0 ${targets[*]} (limit ${s}s)"; } >>"$OUT/build.log"
  t0=$(now)
  limited "$s" ninja -C "$BUILD" -j"$JOBS" -k 0 "${targets[@]}" >"$log" 2>&1
  rc=$?
  cat "$log" >>"$OUT/build.log"
  for b in $BINARIES; do [ -x "$BUILD/$b" ] && have="$have $(basename "$b")"; done
  if ((rc == 0)); then
    note "build: ninja rc 0 in $(($(now) - t0))s; built:${have:- nothing}"
  else
    note "build: ninja rc $rc in $(($(now) - t0))s; binaries present (some may be stale):${have:- none}"
  fi
  if ((rc != 0)); then
    fail "build: first errors:"
    { first_errors "$log" 12; [ "$rc" = 124 ] && echo "    (timed out, or no time left)"; } | tee -a "$RUN/notes.txt"
  fi
  if [ -x "$BUILD/server/imagegen-server" ]; then
    {
      echo "-- imagegen-server: NEEDED and RUNPATH (readelf -d)"
      readelf -d "$BUILD/server/imagegen-server" | grep -E "NEEDED|RUNPATH|RPATH" | cut -c1-600
      echo "-- imagegen-server: libraries as the loader resolves them (LD_LIBRARY_PATH=$(run_ld))"
      LD_LIBRARY_PATH=$(run_ld) ldd "$BUILD/server/imagegen-server"
    } >>"$OUT/build.log" 2>&1
    local nf
    nf=$(LD_LIBRARY_PATH=$(run_ld) ldd "$BUILD/server/imagegen-server" 2>&1 | grep -c "not found")
    ((nf == 0)) || note "build: imagegen-server has $nf libraries not found (build.log)"
  fi
  update_summary
  ((rc == 0))
}

# ---------------------------------------------------------------- cmd
stage_cmd() {
  local s rc t0 shown
  s=$(budget 100000 10)
  shown=$(printf '%s ' "${CMD[@]}" | tr -s '\n\t ' ' ' | cut -c1-200)
  note "cmd: $shown(limit ${s}s)"
  t0=$(now)
  (
    cd "$SRC" || exit 1
    LD_LIBRARY_PATH=$(run_ld)
    export LD_LIBRARY_PATH PATH="$BUILD/server:$BUILD/client:$BUILD/bench:$BUILD/core:$PATH" OUT \
      IMAGEGEN_BUILD="$BUILD" IMAGEGEN_DEPS="$PREFIX" IMAGEGEN_TORCH_DIR="${TORCH_DIR:-}" \
      IMAGEGEN_PYTHON="${PY:-}" IMAGEGEN_ORIG_LD_LIBRARY_PATH="$ORIG_LD"
    limited "$s" "${CMD[@]}"
  ) >"$OUT/cmd.log" 2>&1
  rc=$?
  note "cmd: rc $rc in $(($(now) - t0))s (output in cmd.log)"
  { echo "== cmd: ${shown}: rc $rc; last lines of cmd.log:"; tail -30 "$OUT/cmd.log" | cut -c1-400 | sed 's/^/  /'; echo; } | result
  ((rc == 0)) || RC=1
  update_summary
}

# ---------------------------------------------------------------- main
# seconds kept free for the cmd stage when the configure and build limits are set
RESERVE_AFTER_BUILD=0
((${#CMD[@]})) && RESERVE_AFTER_BUILD=60
LINKDIRS=""
PY=""

ok=1
stage_env
stage_unpack || ok=0
if ((ok && LEVEL >= 2)); then stage_configure || ok=0; fi
if ((ok && LEVEL >= 3)); then stage_build; fi
if ((${#CMD[@]})); then stage_cmd; fi            # also after a failure: it may be its diagnosis
exit "$RC"
