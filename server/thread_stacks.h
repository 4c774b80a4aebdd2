// Makes room for LibTorch's thread-local storage in threads that libraries start with a fixed,
// small stack.
//
// civetweb (behind prometheus-cpp's Exposer) starts its threads with a 100 KiB stack. glibc
// carves the static TLS of every loaded library out of each thread's stack, and LibTorch with
// OpenBLAS and glog brings more than 100 KiB of it, so pthread_create fails with EINVAL and the
// Exposer throws "null context when constructing CivetServer". thread_stacks.cc interposes
// pthread_attr_setstacksize to raise any requested stack below kMinThreadStackBytes to that size.
// The executable must export the symbol (the server target links with
// -Wl,--export-dynamic-symbol=pthread_attr_setstacksize).
#ifndef IMAGEGEN_SERVER_THREAD_STACKS_H_
#define IMAGEGEN_SERVER_THREAD_STACKS_H_

#include <cstddef>

namespace imagegen {

inline constexpr size_t kMinThreadStackBytes = 1 << 20;

// True when the interposer is active (a stack of 1 byte is raised rather than refused).
// Calling it also makes the linker keep thread_stacks.cc in the executable.
bool ThreadStackFloorActive();

}  // namespace imagegen

#endif  // IMAGEGEN_SERVER_THREAD_STACKS_H_
