// ThreadSanitizer's default runtime options for the TSan test executables (tests/CMakeLists.txt
// adds this file when IMAGEGEN_SANITIZE is "thread"), so that the binaries, ctest and
// scripts/sanitize.sh all run the same way. TSAN_OPTIONS in the environment overrides them.
//
//   ignore_noninstrumented_modules=1  The interceptors (memcpy, free, sendmsg...) that Debian's
//       uninstrumented libraries (libgrpc, libprotobuf, libtorch, libgomp) call record nothing and
//       report nothing. Their own loads and stores are invisible to TSan anyway, and so is most of
//       their synchronisation (atomics, lock-free queues), so what such a call touches would only
//       be reported against the wrong, partial history: e.g. gRPC's memcpy of a received frame on
//       one thread and the inline protobuf parser reading it on another. Accesses made by our
//       code, inline gRPC and protobuf code included, are all still checked, except the memcpy
//       inside libstdc++'s out-of-line members (std::string's assign, append...): a race on a
//       string's characters shows only where our code touches them inline.
//   second_deadlock_stack=1  Lock-order reports show where both locks were taken. absl::Mutex
//       takes part in deadlock detection through tsan_absl_sync.cc.
//   allocator_may_return_null=1  An allocation TSan cannot serve fails as malloc's does instead of
//       ending the process: tests/server/fault_test.cc's allocating fault asks for 1 PiB and
//       expects the failure LibTorch sees.
//
// Not set: halt_on_error (every report of a run is printed; the exit status is still 66 when
// there was one) and OMP_NUM_THREADS (LibTorch's OpenMP threads run only uninstrumented code).
//
// There are no suppressions. One would go in a __tsan_default_suppressions() here, narrowed to a
// frame that only gRPC, protobuf or LibTorch code has (a `race:` pattern matches any frame of
// either stack, and every reaction runs below gRPC frames), with the reason it is not our race.
extern "C" const char* __tsan_default_options() {
  return "ignore_noninstrumented_modules=1 second_deadlock_stack=1 allocator_may_return_null=1";
}
