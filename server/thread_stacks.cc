#include "server/thread_stacks.h"

#include <dlfcn.h>
#include <pthread.h>

#include <algorithm>

extern "C" int pthread_attr_setstacksize(pthread_attr_t* attr, size_t size) {
  using Fn = int (*)(pthread_attr_t*, size_t);
  static const Fn real = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "pthread_attr_setstacksize"));
  return real(attr, std::max(size, imagegen::kMinThreadStackBytes));
}

namespace imagegen {

bool ThreadStackFloorActive() {
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  size_t size = 0;
  const bool active = pthread_attr_setstacksize(&attr, 1) == 0 && pthread_attr_getstacksize(&attr, &size) == 0 &&
                      size >= kMinThreadStackBytes;
  pthread_attr_destroy(&attr);
  return active;
}

}  // namespace imagegen
