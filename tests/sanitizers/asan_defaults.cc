// AddressSanitizer's and UndefinedBehaviorSanitizer's default runtime options for the test
// executables of the address build (tests/CMakeLists.txt adds this file when IMAGEGEN_SANITIZE is
// "address"), so that the binaries, ctest and scripts/sanitize.sh all run the same way.
// ASAN_OPTIONS and UBSAN_OPTIONS in the environment override them.
//
//   detect_leaks=1  LeakSanitizer at exit (the default on x86-64 Linux; said here on purpose):
//       every test binary ends with nothing of ours left allocated.
//   allocator_may_return_null=1  An allocation ASan cannot serve fails as malloc's does instead of
//       ending the process: tests/server/fault_test.cc's allocating fault asks for 1 PiB and
//       expects the failure LibTorch sees.
//   print_stacktrace=1  UBSan reports say where. The build makes every UBSan check fatal
//       (-fno-sanitize-recover=undefined), so a report also fails the test.
extern "C" const char* __asan_default_options() { return "detect_leaks=1 allocator_may_return_null=1"; }
extern "C" const char* __ubsan_default_options() { return "print_stacktrace=1"; }
