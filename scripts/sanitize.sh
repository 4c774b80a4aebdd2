#!/usr/bin/env bash
# Builds core_test and server_test with a sanitizer (clang-14, RelWithDebInfo) and runs them once
# (docs/TESTING.md):
#
#   scripts/sanitize.sh thread    ThreadSanitizer, into build-thread/
#   scripts/sanitize.sh address   AddressSanitizer + UndefinedBehaviorSanitizer + LeakSanitizer,
#                                 into build-address/
#
# $IMAGEGEN_SANITIZE_BUILD_DIR overrides the build folder, $IMAGEGEN_BUILD_JOBS the parallel compile jobs;
# extra arguments go to the CMake configure step. The test binaries run directly, not one process
# per test through CTest (each start loads LibTorch under the sanitizer). Exits non-zero when a
# test fails or the sanitizer reports anything (TSan exits 66 after a report; its options are
# compiled into the binaries, tests/sanitizers/tsan_defaults.cc, and $TSAN_OPTIONS adds to them).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
kind=${1:-}
case "$kind" in
  thread | address) shift ;;
  *)
    echo "usage: scripts/sanitize.sh thread|address [cmake configure arguments...]" >&2
    exit 2
    ;;
esac
build_dir=${IMAGEGEN_SANITIZE_BUILD_DIR:-"$root/build-$kind"}
tests=(core_test server_test)

# Per-kind additions: targets to build besides the tests, and what to run after them.
extra_targets=()
run_extra() { :; }
case "$kind" in
  thread) ;;  # what TSan needs is compiled into the test binaries (tests/sanitizers/)
  address)
    # The fuzz target: its seeds and regressions replayed, then libFuzzer for
    # IMAGEGEN_FUZZ_SECONDS (a CMake cache variable, default 60) from the seeds (tests/fuzz/).
    extra_targets=(generate_request_replay generate_request_fuzzer)
    run_extra() {
      step "fuzz (fuzz_replay, fuzz_generate_request)"
      if ctest --test-dir "$build_dir" --output-on-failure --no-tests=error -R '^fuzz_'; then
        step_done fuzz
      else
        step_done "fuzz (failed)"
        failed+=(fuzz)
      fi
    }
    ;;
esac

step_start=0
step() {
  step_start=$(date +%s)
  echo "[sanitize.sh $kind] $*"
}
step_done() { echo "[sanitize.sh $kind] $1: $(($(date +%s) - step_start)) s"; }

step "configure $build_dir"
cmake -S "$root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIMAGEGEN_SANITIZE="$kind" \
  -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 "$@"

step "build ${tests[*]}${extra_targets[*]:+ ${extra_targets[*]}}"
# Each LibTorch translation unit needs about 1 GiB, more with a sanitizer.
cmake --build "$build_dir" --parallel "${IMAGEGEN_BUILD_JOBS:-$(nproc)}" --target "${tests[@]}" "${extra_targets[@]}"
step_done build

# The model bundles the tests load: CTest's fixture setup tests (export_test_bundle, ..., and
# convert_sd for the Stable Diffusion reference bundles).
step "export and convert the test bundles"
ctest --test-dir "$build_dir" --output-on-failure --no-tests=error -R '^(export_|convert_sd$)'
step_done "export and convert the test bundles"

failed=()
for test in "${tests[@]}"; do
  step "run $test"
  if "$build_dir/tests/$test"; then
    step_done "$test"
  else
    status=$?
    step_done "$test (exit status $status)"
    failed+=("$test")
  fi
done
run_extra

if ((${#failed[@]} > 0)); then
  echo "[sanitize.sh $kind] FAILED: ${failed[*]} (a test failed or the sanitizer reported; see above)" >&2
  exit 1
fi
echo "[sanitize.sh $kind] passed"
