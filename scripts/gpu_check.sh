#!/usr/bin/env bash
# gpu_check.sh: build, test and benchmark imagegen on a CUDA host, in one bounded run (docs/GPU.md).
# From the repo root of a checkout that carries the kit's Debian packages (.gpu-deps, made by
# scripts/gpu/fetch-debs.sh .gpu-debs && scripts/gpu/pack-deps.sh .gpu-debs .gpu-deps; git-ignored):
#
#   bash scripts/gpu_check.sh
#
#   a. build with the tests through the kit (scripts/gpu/gpu-build.sh: the .debs unpacked into a
#      private prefix, the CUDA LibTorch of the host's pip torch, ninja -j$(nproc))
#   b. the test bundles (CTest's fixtures, with the host's python), then core_test and
#      server_test with the engine on IMAGEGEN_TEST_DEVICE=cuda:0, sharded, in parallel
#   c. the default model served on cuda:0: imagegen-loadgen closed loop at concurrency 1, 16, 64
#      (no previews), then Poisson arrivals at 70% of the measured capacity with step-level and
#      with request-level batching (p95); one image with the CLI
#   d. an SD-1.5-sized random-weight bundle (convert_sd.py --random-weights --preset sd15, made in
#      the background from the start): imagegen-bench-speed in float16 at 512x512, then served
#      (float16) with imagegen-loadgen at concurrency 1 and 8, 30 steps
#   e. the tables, under "## GPU: <card> (scripts/gpu_check.sh, <date>)", into bench/RESULTS.md
#      (replacing an earlier section for the same card) and into $OUT
#
# Every step runs under `timeout` with its own budget, and the whole run ends within
# IMAGEGEN_CHECK_TOTAL_S; a failed step is noted and the next one runs. The benchmarks run with
# whatever binaries the build made. $OUT (when set, else $IMAGEGEN_GPU_WORK/check-out) receives at
# most six files: summary.txt, RESULTS.md, build.log, tests.log, bench.log, image.png.
#
# Exit status: 0 all passed; 1 the build or a test failed; 3 build and tests passed but a
# benchmark step failed.
#
# Environment (defaults in brackets; docs/GPU.md has the table):
#   IMAGEGEN_CHECK_TOTAL_S [480]   the whole run        IMAGEGEN_CHECK_BUILD_S [120]  a. unpack+configure+build
#   IMAGEGEN_CHECK_TESTS_S [140]   b.                   IMAGEGEN_CHECK_SERVE_S [110]  c.
#   IMAGEGEN_CHECK_SD_S [110]      d. (after the conversion)
#   IMAGEGEN_CHECK_DEVICE [cuda:0]  IMAGEGEN_CHECK_TEST_SHARDS [4]  IMAGEGEN_CHECK_GTEST_FILTER []
#   IMAGEGEN_CHECK_TARGETS [imagegen-server imagegen imagegen-loadgen imagegen-bench-speed core_test server_test]
#   IMAGEGEN_CHECK_POISSON_S [15]  IMAGEGEN_CHECK_RAW_LOOP [1]  IMAGEGEN_CHECK_SD_MODEL_DIR [] (skip the conversion)
#   IMAGEGEN_CHECK_SD_SIZE [512]   IMAGEGEN_CHECK_SD_DTYPE [float16]
#   IMAGEGEN_CHECK_RESULTS_FILE [bench/RESULTS.md]
# and the kit's: IMAGEGEN_GPU_WORK [/tmp/imagegen-gpu], IMAGEGEN_GPU_DEBS, IMAGEGEN_GPU_JOBS,
# IMAGEGEN_GPU_PYTHON, IMAGEGEN_GPU_CXX, IMAGEGEN_GPU_CMAKE_ARGS, IMAGEGEN_GPU_TORCH_CMAKE_PREFIX.
set -uo pipefail

T0=$(date +%s)
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$SRC" || exit 2
WORK=$(realpath -m "${IMAGEGEN_GPU_WORK:-/tmp/imagegen-gpu}")
RES=$(realpath -m "${OUT:-$WORK/check-out}")
RUN=$WORK/check                       # this run's scratch files
TOTAL_S=${IMAGEGEN_CHECK_TOTAL_S:-480}
BUILD_S=${IMAGEGEN_CHECK_BUILD_S:-120}
TESTS_S=${IMAGEGEN_CHECK_TESTS_S:-140}
SERVE_S=${IMAGEGEN_CHECK_SERVE_S:-110}
SD_S=${IMAGEGEN_CHECK_SD_S:-110}
DEVICE=${IMAGEGEN_CHECK_DEVICE:-cuda:0}
SHARDS=${IMAGEGEN_CHECK_TEST_SHARDS:-4}
GTEST_FILTER_ARG=${IMAGEGEN_CHECK_GTEST_FILTER:-}
TARGETS=${IMAGEGEN_CHECK_TARGETS:-imagegen-server imagegen imagegen-loadgen imagegen-bench-speed core_test server_test}
POISSON_S=${IMAGEGEN_CHECK_POISSON_S:-15}
RAW_LOOP=${IMAGEGEN_CHECK_RAW_LOOP:-1}
SD_SIZE=${IMAGEGEN_CHECK_SD_SIZE:-512}
SD_DTYPE=${IMAGEGEN_CHECK_SD_DTYPE:-float16}
RESULTS_FILE=$(realpath -m "${IMAGEGEN_CHECK_RESULTS_FILE:-$SRC/bench/RESULTS.md}")
DEADLINE=$((T0 + TOTAL_S))
ORIG_LD=${LD_LIBRARY_PATH:-}

case "$WORK/" in
  //|/usr/*|/tmp/|/opt/|/home/|/root/|"$SRC"/|"$SRC"/*)
    echo "gpu_check.sh: refusing IMAGEGEN_GPU_WORK=$WORK (use a folder of its own)" >&2; exit 2 ;;
esac
mkdir -p "$RES" || { echo "gpu_check.sh: cannot create $RES" >&2; exit 2; }
rm -rf "$RUN" && mkdir -p "$RUN/tests" || { echo "gpu_check.sh: cannot create $RUN" >&2; exit 2; }
rm -f "$RES"/{summary.txt,RESULTS.md,build.log,tests.log,bench.log,image.png}
: >"$RUN/notes.txt"; : >"$RUN/section.md"; : >"$RES/bench.log"; : >"$RES/tests.log"

# ---------------------------------------------------------------- helpers
# now, left, budget
# shellcheck source=scripts/gpu/time_budget.sh
source "$SRC/scripts/gpu/time_budget.sh"
# until_stop CAP: CAP seconds, or fewer: up to the current step's end ($stop_at) and the deadline
until_stop() {
  local c=$1 l
  l=$((stop_at - $(now))); ((l < c)) && c=$l
  l=$(left); ((l < c)) && c=$l
  ((c < 0)) && c=0
  echo "$c"
}
note() { echo "[+$(($(now) - T0))s] $*" | tee -a "$RUN/notes.txt"; }
section() { cat >>"$RUN/section.md"; }
blog() { cat >>"$RES/bench.log"; }
# limited SECONDS CMD...: CMD under timeout (TERM, KILL 5 s later); rc 124 without running it when
# fewer than 5 seconds are left for it
limited() {
  local s=$1; shift
  if ((s < 5)); then echo "gpu_check.sh: no time left for: $(echo "$*" | cut -c1-160)" >&2; return 124; fi
  timeout -k 5 "$s" "$@"
}
last_words() { grep -v '^\s*$' "$1" 2>/dev/null | tail -"${2:-2}" | tr '\n' ' ' | cut -c1-300; }
# py: the host's python for small helpers (JSON), with the host's own library path
py() { env LD_LIBRARY_PATH="$ORIG_LD" "$HELPER_PY" "$@"; }
# jfield FILE EXPR: a value of a loadgen --json file ("-" when missing)
jfield() {
  py -c 'import json, sys
try:
    d = json.load(open(sys.argv[1])); v = eval(sys.argv[2], {}, d)
    print(round(v, 2) if isinstance(v, float) else v)
except Exception:
    print("-")' "$1" "$2" 2>/dev/null || echo -
}
# has_flag BINARY FLAG: the binary declares --FLAG (absl --helpfull; it exits 1, hence no pipe)
has_flag() {
  local help
  help=$(timeout 30 "$1" --helpfull 2>&1)
  grep -q -- "--$2 (" <<<"$help"
}

SUMMARY_STEPS=""
step_result() { SUMMARY_STEPS="$SUMMARY_STEPS$1"$'\n'; }
write_summary() {
  {
    echo "imagegen scripts/gpu_check.sh: started $(date -u -d "@$T0" +%FT%TZ); limit ${TOTAL_S}s; device $DEVICE"
    echo "host: ${CARD:-?}; $(nproc) cores; torch ${IMAGEGEN_TORCH_VERSION:-?} (CUDA ${IMAGEGEN_TORCH_CUDA_VERSION:-none}); ${CXX_LINE:-compiler ?}"
    echo
    echo "steps:"
    printf '%s' "$SUMMARY_STEPS"
    echo
    echo "notes:"
    cat "$RUN/notes.txt"
    if [ -f "$RUN/kit-summary.txt" ]; then echo; echo "kit (scripts/gpu/gpu-build.sh) notes:"; sed -n '4,$p' "$RUN/kit-summary.txt"; fi
    echo
    echo "results (as written to RESULTS.md):"
    cat "$RUN/section.md"
  } >"$RES/summary.txt.new" 2>/dev/null
  mv -f "$RES/summary.txt.new" "$RES/summary.txt"
}

SERVER_PID=""
# SERVER_PID is that of the `timeout` running the server: TERM passes on to the server, KILL follows
stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  kill -TERM "$SERVER_PID" 2>/dev/null
  local _
  for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$SERVER_PID" 2>/dev/null
  wait "$SERVER_PID" 2>/dev/null
  SERVER_PID=""
}
CONVERT_PID=""
TEST_PIDS=()

cut_log() {  # files come back at most 16 MiB each: keep head and tail of a larger log
  local f=$1
  [ -f "$f" ] && (($(stat -c %s "$f") > 15 * 1048576)) || return 0
  { head -c 5000000 "$f"; printf '\n[... cut ...]\n'; tail -c 9000000 "$f"; } >"$RUN/cut" && mv -f "$RUN/cut" "$f"
}

RC_BUILD_TESTS=0
RC_BENCH=0
finish() {
  stop_server
  [ -n "$CONVERT_PID" ] && kill -TERM "$CONVERT_PID" 2>/dev/null
  local p
  for p in "${TEST_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  write_results
  local rc=0
  ((RC_BENCH)) && rc=3
  ((RC_BUILD_TESTS)) && rc=1
  note "end: exit status $rc after $(($(now) - T0))s"
  write_summary
  local f
  for f in "$RES"/*.log "$RES"/*.txt; do cut_log "$f"; done
  echo
  echo "===== $RES/summary.txt"
  cat "$RES/summary.txt"
  echo "===== files in $RES: $(find "$RES" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort | tr '\n' ' ')"
  exit "$rc"
}
trap finish EXIT
trap 'note "signal: stopping"; RC_BUILD_TESTS=1; exit 1' INT TERM HUP

# ---------------------------------------------------------------- host facts, python
CARD=""
GPU_LINE=""
SMI=$(command -v nvidia-smi || ls /usr/local/nvidia/bin/nvidia-smi 2>/dev/null || true)
if [ -n "$SMI" ]; then
  CARD=$(timeout 20 "$SMI" --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
  GPU_LINE=$(timeout 20 "$SMI" --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)
fi
# the python with torch and numpy: IMAGEGEN_GPU_PYTHON, python3, the image's venv, Debian's
PY=""
for c in "${IMAGEGEN_GPU_PYTHON:-}" python3 /opt/torch/.venv/bin/python3 /usr/bin/python3; do
  [ -n "$c" ] && command -v "$c" >/dev/null || continue
  if timeout 90 env LD_LIBRARY_PATH="$ORIG_LD" "$c" -c 'import torch, numpy' >/dev/null 2>&1; then
    PY=$(command -v "$c"); break
  fi
done
HELPER_PY=${PY:-$(command -v python3 || echo /usr/bin/python3)}
[ -n "$CARD" ] || CARD=$(timeout 60 env LD_LIBRARY_PATH="$ORIG_LD" "$HELPER_PY" -c \
  'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' 2>/dev/null)
[ -n "$CARD" ] || CARD="no GPU seen"
note "gpu_check.sh in $SRC: $CARD; ${GPU_LINE:-}; python with torch: ${PY:-none}; work $WORK; results $RES; budgets: build $BUILD_S, tests $TESTS_S, serve $SERVE_S, SD $SD_S, total $TOTAL_S s"
write_summary

# ---------------------------------------------------------------- d (background). the SD bundle
# The conversion needs only python and torch: it runs from the start, beside the build, with few
# threads. A bundle left by an earlier call on the same host is reused.
SD_MODEL=${IMAGEGEN_CHECK_SD_MODEL_DIR:-}
SD_NOTE=""
if [ -z "$SD_MODEL" ]; then
  SD_MODEL=$WORK/sd/sd15-random
  if [ -f "$SD_MODEL/model.json" ]; then
    SD_NOTE="reused from an earlier call"
  elif [ -n "$PY" ]; then
    rm -rf "$SD_MODEL"; mkdir -p "$WORK/sd"
    # `timeout` itself is the background job: its PID stops it, `wait` gives its status
    timeout -k 5 "$((TOTAL_S - 60))" env LD_LIBRARY_PATH="$ORIG_LD" OMP_NUM_THREADS=4 PYTHONUNBUFFERED=1 \
      nice -n 5 "$PY" "$SRC/models/convert/convert_sd.py" --random-weights --preset sd15 "$SD_MODEL" --name sd15-random \
      >"$RUN/convert.log" 2>&1 &
    CONVERT_PID=$!
    note "sd: converting an SD-1.5-sized random-weight bundle in the background (pid $CONVERT_PID) into $SD_MODEL"
  else
    SD_NOTE="no python with torch and numpy: no SD bundle"
  fi
fi

# ---------------------------------------------------------------- a. build
a_build() {
  local s t0 rc
  s=$(budget "$BUILD_S" "$((TESTS_S + SERVE_S + SD_S))")
  t0=$(now)
  note "build: scripts/gpu/gpu-build.sh build (limit ${s}s; targets: $TARGETS)"
  env OUT="$RUN/kit" IMAGEGEN_GPU_WORK="$WORK" IMAGEGEN_GPU_TOTAL_S="$s" IMAGEGEN_GPU_TARGETS="$TARGETS" \
    IMAGEGEN_GPU_PYTHON="${PY:-${IMAGEGEN_GPU_PYTHON:-}}" \
    timeout -k 10 "$((s + 20))" bash "$SRC/scripts/gpu/gpu-build.sh" build >"$RUN/kit.out" 2>&1
  rc=$?
  cp -f "$RUN/kit/summary.txt" "$RUN/kit-summary.txt" 2>/dev/null
  {
    echo "===== scripts/gpu_check.sh: the kit's env.txt"
    cat "$RUN/kit/env.txt" 2>/dev/null
    echo
    cat "$RUN/kit/build.log" 2>/dev/null
  } >"$RES/build.log"
  if [ -f "$WORK/env.sh" ]; then
    # shellcheck disable=SC1091
    . "$WORK/env.sh"
  fi
  CXX_LINE=$("${IMAGEGEN_CXX:-/nonexistent}" --version 2>/dev/null | head -1)
  BUILD_DIR=${IMAGEGEN_BUILD:-$WORK/build}
  if ((rc == 0)); then
    note "build: ok in $(($(now) - t0))s"
    step_result "a. build: ok ($(($(now) - t0)) s)"
  else
    note "build: FAILED (kit rc $rc) after $(($(now) - t0))s; see the kit notes and build.log"
    step_result "a. build: FAILED (rc $rc; build.log)"
    RC_BUILD_TESTS=1
  fi
  # A CUDA LibTorch registers its CUDA kernels only when libtorch_cuda.so is loaded (through
  # libtorch.so, which torch's CMake links with --no-as-needed); without it cuda:0 fails at the
  # first model ("Could not run ... with arguments from the 'CUDA' backend")
  local srv=$BUILD_DIR/server/imagegen-server
  if [ -n "${IMAGEGEN_TORCH_CUDA_VERSION:-}" ] && [ -x "$srv" ]; then
    if ldd "$srv" 2>/dev/null | grep -q 'libtorch_cuda\.so'; then
      note "build: imagegen-server loads libtorch_cuda.so (ldd)"
    else
      note "build: WARNING: imagegen-server does not load libtorch_cuda.so (ldd): CUDA kernels may be missing at run time"
    fi
  fi
  BUILD_LINE="build $( ((rc == 0)) && echo ok || echo "FAILED (rc $rc)") in $(($(now) - t0)) s"
  write_summary
}

# ---------------------------------------------------------------- b. tests
b_tests() {
  local s t0 rc bin i f passed failed hung line
  s=$(budget "$TESTS_S" "$((SERVE_S + SD_S))")
  t0=$(now)
  if [ ! -f "$BUILD_DIR/CTestTestfile.cmake" ]; then
    note "tests: no configured build: no tests"
    step_result "b. tests: NOT RUN (no build)"; RC_BUILD_TESTS=1; TESTS_LINE="tests not run"; return
  fi
  # the test bundles: CTest's fixture setup tests, with the python of IMAGEGEN_PYTHON (the host's)
  local fs
  fs=$(budget 100 "$((s / 2 + SERVE_S + SD_S))")
  ((fs > s)) && fs=$s
  {
    echo "===== ctest -R '^(export_|convert_sd\$)' (the test bundles; limit ${fs}s)"
  } >>"$RES/tests.log"
  (cd "$BUILD_DIR" && limited "$fs" env LD_LIBRARY_PATH="$ORIG_LD" ctest --output-on-failure --no-tests=error \
    -R '^(export_|convert_sd$)' -j3) >>"$RES/tests.log" 2>&1
  rc=$?
  local fixtures_ok=1
  if ((rc == 0)); then
    note "tests: test bundles made in $(($(now) - t0))s"
  else
    fixtures_ok=0
    note "tests: test bundles FAILED (ctest rc $rc): $(grep -E 'tests failed|\*\*\*Failed|Timeout' "$RES/tests.log" | tail -3 | tr '\n' ' ' | cut -c1-300)"
    RC_BUILD_TESTS=1
  fi
  # the suites, sharded: every shard a process with the engine on $DEVICE
  s=$(budget "$((TESTS_S - ($(now) - t0)))" "$((SERVE_S + SD_S))")
  local bins=()
  for bin in core_test server_test; do
    if [ -x "$BUILD_DIR/tests/$bin" ]; then bins+=("$bin"); else note "tests: $bin not built"; RC_BUILD_TESTS=1; fi
  done
  note "tests: ${bins[*]:-nothing} on $DEVICE, $SHARDS shards each (limit ${s}s${GTEST_FILTER_ARG:+; filter $GTEST_FILTER_ARG})"
  # each shard's `timeout` is the background job (exec): its PID stops it, `wait` gives its status
  TEST_PIDS=()
  local shard_ids=() k
  ((s >= 5)) || s=5
  for bin in "${bins[@]}"; do
    for ((i = 0; i < SHARDS; i++)); do
      (cd "$BUILD_DIR/tests" && exec env IMAGEGEN_TEST_DEVICE="$DEVICE" GTEST_TOTAL_SHARDS="$SHARDS" GTEST_SHARD_INDEX="$i" \
        timeout -k 5 "$s" "./$bin" --gtest_color=no ${GTEST_FILTER_ARG:+"--gtest_filter=$GTEST_FILTER_ARG"}) \
        >"$RUN/tests/$bin.$i.log" 2>&1 &
      TEST_PIDS+=($!)
      shard_ids+=("$bin.$i")
    done
  done
  for k in "${!TEST_PIDS[@]}"; do
    wait "${TEST_PIDS[$k]}" 2>/dev/null
    echo $? >"$RUN/tests/${shard_ids[$k]}.rc"
  done
  TEST_PIDS=()
  TESTS_LINE=""
  local all_ok=$fixtures_ok
  for bin in "${bins[@]}"; do
    passed=0; failed=""; hung=""
    for ((i = 0; i < SHARDS; i++)); do
      f=$RUN/tests/$bin.$i.log
      rc=$(cat "$RUN/tests/$bin.$i.rc" 2>/dev/null || echo 1)
      { echo; echo "===== $bin shard $i of $SHARDS (IMAGEGEN_TEST_DEVICE=$DEVICE): rc $rc"; cat "$f"; } >>"$RES/tests.log"
      line=$(grep -E '^\[  PASSED  \] [0-9]+ test' "$f" | tail -1)
      [[ $line =~ ([0-9]+)\ test ]] && passed=$((passed + BASH_REMATCH[1]))
      failed="$failed $(grep -E '^\[  FAILED  \] [A-Za-z_0-9/]+\.[A-Za-z_0-9/]+' "$f" | awk '{print $4}' | sort -u | tr '\n' ' ')"
      if ((rc == 124 || rc == 137)); then
        # the test that was running when the time ran out: the last RUN without its OK/FAILED
        hung="$hung $(awk '/^\[ RUN      \]/ {t = $4} /^\[       OK \]|^\[  FAILED  \]/ {if ($4 == t) t = ""} END {print t ? t : "?"}' "$f")"
      elif ((rc != 0)) && ! grep -q '^\[  FAILED  \]' "$f"; then
        hung="$hung (shard $i exited $rc: $(last_words "$f" 1))"
      fi
      ((rc == 0)) || all_ok=0
    done
    failed=$(echo "$failed" | tr ' ' '\n' | grep -v '^$' | sort -u | tr '\n' ' ')
    note "tests: $bin: $passed passed${failed:+; FAILED: $failed}${hung:+; timed out or crashed in:$hung}"
    TESTS_LINE="$TESTS_LINE$bin $passed passed${failed:+, failed: $failed}${hung:+, timed out/crashed:$hung}; "
  done
  ((fixtures_ok)) || TESTS_LINE="${TESTS_LINE}test bundles FAILED; "
  if ((all_ok)) && ((${#bins[@]} == 2)); then
    step_result "b. tests: ok ($(($(now) - t0)) s): $TESTS_LINE"
  else
    step_result "b. tests: FAILED ($(($(now) - t0)) s): $TESTS_LINE"
    RC_BUILD_TESTS=1
  fi
  write_summary
}

# ---------------------------------------------------------------- servers
# start_server LIMIT LOG ARGS...: imagegen-server on a free port; waits up to LIMIT seconds for
# "serving gRPC on port N" and sets PORT. Under `timeout` itself, so it cannot outlive this run.
start_server() {
  local limit=$1 log=$2 t1 rc
  shift 2
  t1=$(now)
  PORT=""
  : >"$log"
  if ((limit < 5)); then note "bench: no time left to start imagegen-server $*"; return 1; fi
  timeout -k 5 "$(budget 100000 3)" "$BUILD_DIR/server/imagegen-server" --listen=127.0.0.1:0 --metrics_listen= \
    --request_log=false --drain_timeout_s=3 "$@" >"$log" 2>&1 &
  SERVER_PID=$!
  while (($(now) - t1 < limit)); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      wait "$SERVER_PID"; rc=$?; SERVER_PID=""
      note "bench: imagegen-server $* exited (rc $rc) before serving: $(last_words "$log")"
      return 1
    fi
    PORT=$(sed -n 's/.*serving gRPC on port \([0-9][0-9]*\).*/\1/p' "$log" 2>/dev/null | head -1)
    [ -n "$PORT" ] && break
    sleep 0.3
  done
  if [ -z "$PORT" ]; then
    note "bench: imagegen-server $* not serving after ${limit}s: $(last_words "$log")"
    stop_server
    return 1
  fi
  note "bench: imagegen-server $* serving after $(($(now) - t1))s"
}
# loadgen NAME LIMIT ARGS...: imagegen-loadgen against PORT, JSON to $RUN/NAME.json
loadgen() {
  local name=$1 s=$2 rc
  shift 2
  limited "$s" "$BUILD_DIR/client/imagegen-loadgen" --server="127.0.0.1:$PORT" --json="$RUN/$name.json" "$@" \
    >"$RUN/$name.out" 2>"$RUN/$name.err"
  rc=$?
  { echo "===== imagegen-loadgen $* (limit ${s}s): rc $rc"; cat "$RUN/$name.err"; } | blog
  return $rc
}
row_closed() {  # NAME CONCURRENCY RC: a markdown row of a closed-loop run
  local j=$RUN/$1.json
  if [ "$3" != 0 ] && [ ! -s "$j" ]; then
    echo "| $2 | failed: rc $3$( [ "$3" = 124 ] && echo ' (time limit)') | | | |"
    return
  fi
  echo "| $2 | $(jfield "$j" ok)/$(jfield "$j" requests) | $(jfield "$j" images_per_s) | $(jfield "$j" 'latency_ms["p50"]') | $(jfield "$j" 'latency_ms["p95"]') |"
}
server_log_tail() { { echo "===== server log (tail): $1"; tail -20 "$2"; echo; } | blog; }

# ---------------------------------------------------------------- c. default model served
c_serve() {
  local s t0 stop_at c req warm ok=1 best=0 ips rate b rc
  s=$(budget "$SERVE_S" "$SD_S")
  t0=$(now)
  stop_at=$((t0 + s))
  for b in server/imagegen-server client/imagegen-loadgen; do
    [ -x "$BUILD_DIR/$b" ] || { note "serve: $b not built: no served benchmark"; step_result "c. serve: NOT RUN ($b missing)"; RC_BENCH=1; return; }
  done
  note "serve: default model on $DEVICE (limit ${s}s)"
  {
    echo
    echo "### Default model (fashion-mnist-ldm) on $DEVICE"
    echo
  } | section

  # the raw UNet loop, when the tool takes --device
  local tool=$BUILD_DIR/bench/imagegen-bench-speed
  if [ "$RAW_LOOP" = 1 ] && [ -x "$tool" ] && has_flag "$tool" device; then
    # what the served runs need stays free: about 75 s on a GPU
    local rs=$(($(until_stop 100000) - 75)); ((rs > 25)) && rs=25
    limited "$rs" "$tool" --device="$DEVICE" --model_dir="$SRC/models/fashion-mnist-ldm" --batches=2,8,32,64 \
      --repeats=50 --images=0 --engine_concurrency=1,16,64 --engine_requests=48 --preview_formats= \
      >"$RUN/raw.out" 2>"$RUN/raw.err"
    local rrc=$?
    { echo "===== imagegen-bench-speed --device=$DEVICE (default model; limit ${rs}s): rc $rrc"; cat "$RUN/raw.out" "$RUN/raw.err"; } | blog
    if ((rrc == 0)); then
      { echo "The UNet alone and the engine in process (\`imagegen-bench-speed --device=$DEVICE --batches=2,8,32,64 --repeats=50 --images=0 --engine_concurrency=1,16,64 --engine_requests=48\`):"; echo; cat "$RUN/raw.out"; echo; } | section
    else
      note "serve: imagegen-bench-speed on the default model FAILED (rc $rrc$( ((rrc == 124)) && echo ', time limit')): $(last_words "$RUN/raw.err")"; ok=0
    fi
  fi

  if ! start_server "$(until_stop 40)" "$RUN/server-step.log" \
      --model_dir="$SRC/models" --devices="$DEVICE" --max_queue=2000 --batching=step; then
    server_log_tail step "$RUN/server-step.log"
    step_result "c. serve: FAILED (the server did not start; bench.log)"; RC_BENCH=1
    echo "The server did not start on $DEVICE: $(last_words "$RUN/server-step.log")" | section
    return
  fi
  {
    echo "Served over gRPC (\`imagegen-server --devices=$DEVICE\`, default flags; \`imagegen-loadgen --mode=closed --preview_every=0\`, after warm-up requests):"
    echo
    echo "| concurrency | ok/requests | images/s | latency p50 ms | p95 ms |"
    echo "| --- | --- | --- | --- | --- |"
  } | section
  for c in 1 16 64; do
    case $c in 1) req=24; warm=2 ;; 16) req=128; warm=16 ;; *) req=256; warm=64 ;; esac
    loadgen "closed-$c" "$(until_stop 40)" --mode=closed --concurrency="$c" \
      --requests="$req" --warmup="$warm" --preview_every=0 --timeout_s=60
    rc=$?
    ((rc == 0)) || ok=0
    row_closed "closed-$c" "$c" "$rc" | section
    ips=$(jfield "$RUN/closed-$c.json" images_per_s)
    [[ $ips =~ ^[0-9.]+$ ]] && best=$(py -c "print(max($best, $ips))")
  done
  # one image with the CLI
  if [ -x "$BUILD_DIR/client/imagegen" ]; then
    limited 30 "$BUILD_DIR/client/imagegen" generate --server "127.0.0.1:$PORT" --prompt "a pair of trousers" \
      --seed 42 --out "$RES/image.png" >"$RUN/cli.out" 2>&1
    local crc=$?
    { echo "===== imagegen generate --prompt \"a pair of trousers\" --seed 42: rc $crc"; cat "$RUN/cli.out"; } | blog
    ((crc == 0)) || { note "serve: imagegen generate FAILED (rc $crc): $(last_words "$RUN/cli.out")"; ok=0; }
  fi

  # step- against request-level batching under Poisson arrivals at 70% of the capacity
  local need=$((2 * (POISSON_S + 12) + 10))
  if (($(until_stop 100000) < need)); then
    stop_server; server_log_tail step "$RUN/server-step.log"
    echo "No time left for the Poisson comparison (needs ${need} s, $(until_stop 100000) s left)." | section; ok=0
  elif py -c "import sys; sys.exit(0 if $best > 0 else 1)"; then
    rate=$(py -c "print(round(0.7 * $best, 1))")
    {
      echo
      echo "Capacity (best closed-loop rate): $best images/s. Poisson arrivals at 70%, $rate requests/s, for ${POISSON_S} s after 2 s of warm-up, no previews:"
      echo
      echo "| batching | ok/requests | latency p50 ms | p95 ms | p99 ms |"
      echo "| --- | --- | --- | --- | --- |"
    } | section
    local mode j
    for mode in step request; do
      if [ "$mode" = request ]; then
        stop_server; server_log_tail step "$RUN/server-step.log"
        if ! start_server "$(until_stop 40)" "$RUN/server-request.log" --model_dir="$SRC/models" --devices="$DEVICE" \
            --max_queue=2000 --batching=request; then
          echo "| request | server did not start | | | |" | section; ok=0; continue
        fi
      fi
      loadgen "poisson-$mode" "$(until_stop $((POISSON_S + 40)))" --mode=poisson --rate="$rate" --duration_s="$POISSON_S" \
        --warmup_s=2 --preview_every=0 --timeout_s=60 || ok=0
      j=$RUN/poisson-$mode.json
      echo "| $mode | $(jfield "$j" ok)/$(jfield "$j" requests) | $(jfield "$j" 'latency_ms["p50"]') | $(jfield "$j" 'latency_ms["p95"]') | $(jfield "$j" 'latency_ms["p99"]') |" | section
    done
    stop_server; server_log_tail request "$RUN/server-request.log"
  else
    stop_server; server_log_tail step "$RUN/server-step.log"
    echo "No capacity measured: no Poisson runs." | section; ok=0
  fi
  if ((ok)); then
    step_result "c. serve (default model): ok ($(($(now) - t0)) s); capacity $best images/s"
  else
    step_result "c. serve (default model): with FAILURES ($(($(now) - t0)) s; bench.log)"; RC_BENCH=1
  fi
  write_summary
}

# ---------------------------------------------------------------- d. SD-sized UNet
d_sd() {
  local s t0 stop_at ok=1 rc=0 secs
  t0=$(now)
  s=$(budget "$SD_S" 5)
  stop_at=$((t0 + s))
  {
    echo
    if [ -n "${IMAGEGEN_CHECK_SD_MODEL_DIR:-}" ]; then
      echo "### SD model $(basename "$SD_MODEL") ($SD_MODEL) on $DEVICE"
    else
      echo "### SD 1.5-sized model (random weights, convert_sd.py --random-weights --preset sd15) on $DEVICE"
    fi
    echo
  } | section
  # the conversion: wait for the background job
  if [ -n "$CONVERT_PID" ]; then
    note "sd: waiting for the conversion (started at +0s)"
    while kill -0 "$CONVERT_PID" 2>/dev/null && (($(now) < stop_at - 30)); do sleep 1; done
    if kill -0 "$CONVERT_PID" 2>/dev/null; then
      kill -TERM "$CONVERT_PID" 2>/dev/null
      wait "$CONVERT_PID" 2>/dev/null
      SD_NOTE="conversion not done in time"
    else
      wait "$CONVERT_PID" 2>/dev/null
      rc=$?
      secs=$(sed -n "s/.*written to .* in \([0-9.]*\) s.*/\1/p" "$RUN/convert.log" | tail -1)
      if ((rc == 0)); then SD_NOTE="converted in ${secs:-?} s (beside the build)"; else SD_NOTE="conversion FAILED (rc $rc): $(last_words "$RUN/convert.log")"; fi
    fi
    CONVERT_PID=""
    { echo "===== convert_sd.py --random-weights --preset sd15 $SD_MODEL"; cat "$RUN/convert.log" 2>/dev/null; } | blog
  fi
  note "sd: bundle $SD_MODEL: ${SD_NOTE:-given}"
  if [ ! -f "$SD_MODEL/model.json" ]; then
    echo "No SD bundle: ${SD_NOTE:-$SD_MODEL has no model.json}." | section
    step_result "d. SD: NOT RUN (${SD_NOTE:-no bundle})"; RC_BENCH=1; write_summary; return
  fi

  # the UNet alone, float16, 512x512
  local tool=$BUILD_DIR/bench/imagegen-bench-speed args missing=""
  if [ -x "$tool" ] && has_flag "$tool" device; then
    # shellcheck disable=SC2054  # the commas are in flag values
    args=(--device="$DEVICE" --model_dir="$SD_MODEL" --batches=2,16 --repeats=20 --images=0 --engine_concurrency= --preview_formats=)
    if has_flag "$tool" dtype; then args+=(--dtype="$SD_DTYPE"); else missing="$missing --dtype"; fi
    if has_flag "$tool" width && has_flag "$tool" height; then args+=(--width="$SD_SIZE" --height="$SD_SIZE"); else missing="$missing --width/--height"; fi
    [ -n "$missing" ] && note "sd: imagegen-bench-speed lacks$missing: run without (the model's defaults)"
    local bs=$(($(until_stop 100000) - 50)); ((bs > 70)) && bs=70
    limited "$bs" "$tool" "${args[@]}" >"$RUN/sd-raw.out" 2>"$RUN/sd-raw.err"
    rc=$?
    { echo "===== imagegen-bench-speed ${args[*]} (limit ${bs}s): rc $rc"; cat "$RUN/sd-raw.out" "$RUN/sd-raw.err"; } | blog
    if ((rc == 0)); then
      { echo "The UNet alone (\`imagegen-bench-speed ${args[*]}\`):"; echo; cat "$RUN/sd-raw.out"; echo; } | section
    else
      note "sd: imagegen-bench-speed FAILED (rc $rc$( ((rc == 124)) && echo ', time limit')): $(last_words "$RUN/sd-raw.err")"; ok=0
      echo "imagegen-bench-speed on the SD bundle failed (rc $rc): $(last_words "$RUN/sd-raw.err")" | section
    fi
  else
    note "sd: imagegen-bench-speed missing or without --device: no raw SD loop"; ok=0
    echo "imagegen-bench-speed has no --device flag: no raw SD loop." | section
  fi

  # served, float16
  if [ -x "$BUILD_DIR/server/imagegen-server" ] && [ -x "$BUILD_DIR/client/imagegen-loadgen" ]; then
    local sargs=(--model_dir="$SD_MODEL" --devices="$DEVICE" --max_queue=100) largs=(--steps=30 --preview_every=0 --timeout_s=120)
    if has_flag "$BUILD_DIR/server/imagegen-server" dtype; then sargs+=(--dtype="$SD_DTYPE"); else note "sd: imagegen-server has no --dtype: served in the bundle's dtype"; fi
    if has_flag "$BUILD_DIR/client/imagegen-loadgen" width; then largs+=(--width="$SD_SIZE" --height="$SD_SIZE"); fi
    if start_server "$(until_stop 60)" "$RUN/server-sd.log" "${sargs[@]}"; then
      {
        echo "Served (\`imagegen-server ${sargs[*]}\`; \`imagegen-loadgen --mode=closed ${largs[*]}\`):"
        echo
        echo "| concurrency | ok/requests | images/s | latency p50 ms | p95 ms |"
        echo "| --- | --- | --- | --- | --- |"
      } | section
      local c req warm
      for c in 1 8; do
        case $c in 1) req=3; warm=1 ;; *) req=16; warm=8 ;; esac
        if (($(until_stop 100000) < 15)); then echo "| $c | no time left | | | |" | section; ok=0; continue; fi
        loadgen "sd-closed-$c" "$(until_stop 45)" --mode=closed --concurrency="$c" --requests="$req" --warmup="$warm" "${largs[@]}"
        rc=$?
        ((rc == 0)) || ok=0
        row_closed "sd-closed-$c" "$c" "$rc" | section
      done
      stop_server
    else
      echo "The SD server did not start: $(last_words "$RUN/server-sd.log")" | section; ok=0
    fi
    server_log_tail sd "$RUN/server-sd.log"
  fi
  if ((ok)); then step_result "d. SD: ok ($(($(now) - t0)) s; bundle ${SD_NOTE:-given})"
  else step_result "d. SD: with FAILURES ($(($(now) - t0)) s; bench.log)"; RC_BENCH=1; fi
  write_summary
}

# ---------------------------------------------------------------- e. RESULTS.md
write_results() {
  [ -n "${RESULTS_WRITTEN:-}" ] && return 0
  RESULTS_WRITTEN=1
  local heading_prefix="## GPU: $CARD (scripts/gpu_check.sh"
  {
    echo "$heading_prefix, $(date -u +%F))"
    echo
    echo "\`bash scripts/gpu_check.sh\` on ${GPU_LINE:-$CARD}, $(nproc) cores; torch ${IMAGEGEN_TORCH_VERSION:-?} (CUDA ${IMAGEGEN_TORCH_CUDA_VERSION:-none}) through the kit (scripts/gpu/, docs/GPU.md); ${CXX_LINE:-?}."
    echo "${BUILD_LINE:-build not run}; tests on $DEVICE: ${TESTS_LINE:-not run}"
    cat "$RUN/section.md"
  } >"$RUN/gpu-section.md"
  if [ -f "$RESULTS_FILE" ]; then
    # drop an earlier section for this card (up to the next "## " heading), append the new one
    py - "$RESULTS_FILE" "$heading_prefix" "$RUN/gpu-section.md" <<'PYEOF'
import sys
path, prefix, new = sys.argv[1], sys.argv[2], open(sys.argv[3]).read()
lines = open(path).read().splitlines(keepends=True)
out, skip = [], False
for line in lines:
    if line.startswith("## "):
        skip = line.startswith(prefix)
    if not skip:
        out.append(line)
text = "".join(out).rstrip("\n") + "\n\n" + new.rstrip("\n") + "\n"
open(path, "w").write(text)
PYEOF
    [ $? = 0 ] || note "results: could not update $RESULTS_FILE"
    cp -f "$RESULTS_FILE" "$RES/RESULTS.md"
  else
    cp -f "$RUN/gpu-section.md" "$RES/RESULTS.md"
  fi
}

# ---------------------------------------------------------------- main
a_build
b_tests
c_serve
d_sd
exit 0  # finish (the EXIT trap) writes the results and sets the status
