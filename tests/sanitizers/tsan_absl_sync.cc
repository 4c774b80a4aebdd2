// ThreadSanitizer annotations for Debian's uninstrumented Abseil synchronization (TSan builds of
// the tests only: tests/CMakeLists.txt adds this file when IMAGEGEN_SANITIZE is "thread").
//
// Why: Debian's libabsl_synchronization is not built with -fsanitize=thread, so TSan cannot see
// that absl::Mutex, absl::CondVar and absl::Notification order memory. Every access that they
// protect, in our code and in gRPC (which uses absl::Mutex for gpr_mu and grpc_core::Mutex), is
// then reported as a data race.
//
// How: this file defines the public entry points of those classes under their mangled names, so
// that calls from our code (bound at link time) and from libgrpc, libgpr and libabsl themselves
// (bound through the PLT to the executable, which exports exactly these symbols:
// tsan_interposers.dynlist) arrive here. Each one forwards to the real function, found with
// dlsym(RTLD_NEXT), and tells TSan what it did with the same __tsan_mutex_* annotations that
// Abseil's own mutex.cc makes when it is built with TSan. TSan then treats an absl::Mutex like a
// pthread mutex: happens-before through lock and unlock, reader locks, "mutex M held" in reports
// and lock-order (deadlock) checking. Condition predicates, which Abseil evaluates inside its lock
// and unlock calls (sometimes on the thread that unlocks), run between the pre and post
// annotations, where TSan ignores memory accesses, as it does in an instrumented Abseil.
//
// Only the outermost interposed call on a thread annotates: Abseil's own functions call each other
// through the PLT (Notification::Notify locks its mutex, CondVar::WaitWithTimeout calls
// WaitWithDeadline), and annotating those again would count one lock twice.
//
// The mangled names and the two layout facts used below (absl::Mutex is one word whose bit
// kMuWriter marks a writer; absl::Notification's atomic flag follows its mutex) are those of
// Abseil 20220623 in Debian 12 (inline namespace debian3); the static_asserts and the start-up
// check in CheckInterposersBound fail loudly if they stop matching.
#include <dlfcn.h>
#include <sanitizer/tsan_interface.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <type_traits>

#include "absl/base/options.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

#define IMAGEGEN_STRINGIFY_INNER(x) #x
#define IMAGEGEN_STRINGIFY(x) IMAGEGEN_STRINGIFY_INNER(x)
static_assert(ABSL_OPTION_USE_INLINE_NAMESPACE == 1 &&
                  std::string_view(IMAGEGEN_STRINGIFY(ABSL_OPTION_INLINE_NAMESPACE_NAME)) == "debian3",
              "the mangled names below are those of Debian's Abseil (inline namespace debian3)");
static_assert(sizeof(absl::Mutex) == sizeof(intptr_t), "absl::Mutex is one word (mu_)");
static_assert(sizeof(absl::Notification) == 2 * sizeof(intptr_t),
              "absl::Notification is {Mutex mutex_; std::atomic<bool> notified_yet_;}");

namespace imagegen::tsan_absl_sync {
namespace {

// The bit of absl::Mutex's word that a writer holds (kMuWriter in absl/synchronization/mutex.cc).
constexpr intptr_t kMuWriter = 0x0008;

thread_local int interposer_depth = 0;

// Marks one interposed call; only the outermost on a thread annotates.
class InterposedCall {
 public:
  InterposedCall() : outermost_(interposer_depth++ == 0) {}
  ~InterposedCall() { --interposer_depth; }
  InterposedCall(const InterposedCall&) = delete;
  InterposedCall& operator=(const InterposedCall&) = delete;
  bool outermost() const { return outermost_; }

 private:
  const bool outermost_;
};

template <typename Fn>
Fn Real(const char* mangled) {
  void* fn = dlsym(RTLD_NEXT, mangled);
  if (fn == nullptr) {
    std::fprintf(stderr, "tsan_absl_sync: %s not found in the libraries after the executable\n", mangled);
    std::abort();
  }
  return reinterpret_cast<Fn>(fn);
}

// Whether the calling thread, which holds `mu`, holds it as a writer (as CondVar::WaitCommon and
// Mutex::AwaitCommon decide). The writer bit cannot change while the caller holds the mutex, so
// the plain, uninstrumented read of the word is exact; the other bits may change under it.
__attribute__((no_sanitize("thread"))) bool HeldAsWriter(const absl::Mutex* mu) {
  return (*reinterpret_cast<const volatile intptr_t*>(mu) & kMuWriter) != 0;
}

// The std::atomic<bool> that Notification::HasBeenNotified (inline, so instrumented in our code)
// loads with memory_order_acquire. Releasing on its address makes that load, and the waits below,
// synchronise with Notify.
void* NotifiedFlag(const absl::Notification* n) {
  return const_cast<char*>(reinterpret_cast<const char*>(n) + sizeof(absl::Mutex));
}

// Runs `real_call` (a lambda calling the real function) between `before` and `after`, or only
// `real_call` when nested in another interposed call.
template <typename RealCall, typename Before, typename After>
auto Annotated(RealCall real_call, Before before, After after) {
  InterposedCall call;
  if (!call.outermost()) return real_call();
  before();
  if constexpr (std::is_void_v<decltype(real_call())>) {
    real_call();
    after();
  } else {
    auto result = real_call();
    after();
    return result;
  }
}

// A lock operation (`flags`: 0 or __tsan_mutex_read_lock) that returns holding `mu`.
template <typename RealCall>
auto Locking(absl::Mutex* mu, unsigned flags, RealCall real_call) {
  return Annotated(
      real_call, [&] { __tsan_mutex_pre_lock(mu, flags); }, [&] { __tsan_mutex_post_lock(mu, flags, 0); });
}

template <typename RealCall>
void Unlocking(absl::Mutex* mu, unsigned flags, RealCall real_call) {
  Annotated(
      real_call, [&] { __tsan_mutex_pre_unlock(mu, flags); }, [&] { __tsan_mutex_post_unlock(mu, flags); });
}

template <typename RealCall>
bool TryLocking(absl::Mutex* mu, unsigned flags, RealCall real_call) {
  InterposedCall call;
  if (!call.outermost()) return real_call();
  flags |= __tsan_mutex_try_lock;
  __tsan_mutex_pre_lock(mu, flags);
  const bool locked = real_call();
  __tsan_mutex_post_lock(mu, locked ? flags : flags | __tsan_mutex_try_lock_failed, 0);
  return locked;
}

// An operation entered and left holding `mu` that releases it while it waits (Await, CondVar),
// in the mode the caller holds it.
template <typename RealCall>
auto Waiting(absl::Mutex* mu, RealCall real_call) {
  unsigned flags = 0;
  return Annotated(
      real_call,
      [&] {
        flags = HeldAsWriter(mu) ? 0 : __tsan_mutex_read_lock;
        __tsan_mutex_pre_unlock(mu, flags);
      },
      [&] {
        __tsan_mutex_post_unlock(mu, flags);
        __tsan_mutex_pre_lock(mu, flags);
        __tsan_mutex_post_lock(mu, flags, 0);
      });
}

}  // namespace

// The interposers, declared with the real C++ parameter types (`this` first) and named by the
// mangled symbol; k<Name> is that symbol, for dlsym.
#define IMAGEGEN_INTERPOSER(ret, name, params, symbol) \
  ret name params __asm__(symbol);                    \
  constexpr char k##name[] = symbol;
#define IMAGEGEN_REAL(name) static const auto real = Real<decltype(&name)>(k##name)

IMAGEGEN_INTERPOSER(void, MutexLock, (absl::Mutex * mu), "_ZN4absl7debian35Mutex4LockEv")
IMAGEGEN_INTERPOSER(void, MutexReaderLock, (absl::Mutex * mu), "_ZN4absl7debian35Mutex10ReaderLockEv")
IMAGEGEN_INTERPOSER(bool, MutexTryLock, (absl::Mutex * mu), "_ZN4absl7debian35Mutex7TryLockEv")
IMAGEGEN_INTERPOSER(bool, MutexReaderTryLock, (absl::Mutex * mu), "_ZN4absl7debian35Mutex13ReaderTryLockEv")
IMAGEGEN_INTERPOSER(void, MutexUnlock, (absl::Mutex * mu), "_ZN4absl7debian35Mutex6UnlockEv")
IMAGEGEN_INTERPOSER(void, MutexReaderUnlock, (absl::Mutex * mu), "_ZN4absl7debian35Mutex12ReaderUnlockEv")
IMAGEGEN_INTERPOSER(void, MutexLockWhen, (absl::Mutex * mu, const absl::Condition& cond),
                    "_ZN4absl7debian35Mutex8LockWhenERKNS0_9ConditionE")
IMAGEGEN_INTERPOSER(bool, MutexLockWhenWithTimeout,
                    (absl::Mutex * mu, const absl::Condition& cond, absl::Duration timeout),
                    "_ZN4absl7debian35Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE")
IMAGEGEN_INTERPOSER(bool, MutexLockWhenWithDeadline,
                    (absl::Mutex * mu, const absl::Condition& cond, absl::Time deadline),
                    "_ZN4absl7debian35Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE")
IMAGEGEN_INTERPOSER(void, MutexReaderLockWhen, (absl::Mutex * mu, const absl::Condition& cond),
                    "_ZN4absl7debian35Mutex14ReaderLockWhenERKNS0_9ConditionE")
IMAGEGEN_INTERPOSER(bool, MutexReaderLockWhenWithTimeout,
                    (absl::Mutex * mu, const absl::Condition& cond, absl::Duration timeout),
                    "_ZN4absl7debian35Mutex25ReaderLockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE")
IMAGEGEN_INTERPOSER(bool, MutexReaderLockWhenWithDeadline,
                    (absl::Mutex * mu, const absl::Condition& cond, absl::Time deadline),
                    "_ZN4absl7debian35Mutex26ReaderLockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE")
IMAGEGEN_INTERPOSER(void, MutexAwait, (absl::Mutex * mu, const absl::Condition& cond),
                    "_ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE")
IMAGEGEN_INTERPOSER(bool, MutexAwaitWithTimeout,
                    (absl::Mutex * mu, const absl::Condition& cond, absl::Duration timeout),
                    "_ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE")
IMAGEGEN_INTERPOSER(bool, MutexAwaitWithDeadline,
                    (absl::Mutex * mu, const absl::Condition& cond, absl::Time deadline),
                    "_ZN4absl7debian35Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE")
IMAGEGEN_INTERPOSER(void, MutexDestroyComplete, (absl::Mutex * mu), "_ZN4absl7debian35MutexD1Ev")
IMAGEGEN_INTERPOSER(void, MutexDestroyBase, (absl::Mutex * mu), "_ZN4absl7debian35MutexD2Ev")
IMAGEGEN_INTERPOSER(void, CondVarWait, (absl::CondVar * cv, absl::Mutex* mu),
                    "_ZN4absl7debian37CondVar4WaitEPNS0_5MutexE")
IMAGEGEN_INTERPOSER(bool, CondVarWaitWithTimeout, (absl::CondVar * cv, absl::Mutex* mu, absl::Duration timeout),
                    "_ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE")
IMAGEGEN_INTERPOSER(bool, CondVarWaitWithDeadline, (absl::CondVar * cv, absl::Mutex* mu, absl::Time deadline),
                    "_ZN4absl7debian37CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE")
IMAGEGEN_INTERPOSER(void, NotificationNotify, (absl::Notification * n), "_ZN4absl7debian312Notification6NotifyEv")
IMAGEGEN_INTERPOSER(void, NotificationWait, (const absl::Notification* n),
                    "_ZNK4absl7debian312Notification19WaitForNotificationEv")
IMAGEGEN_INTERPOSER(bool, NotificationWaitWithTimeout, (const absl::Notification* n, absl::Duration timeout),
                    "_ZNK4absl7debian312Notification30WaitForNotificationWithTimeoutENS0_8DurationE")
IMAGEGEN_INTERPOSER(bool, NotificationWaitWithDeadline, (const absl::Notification* n, absl::Time deadline),
                    "_ZNK4absl7debian312Notification31WaitForNotificationWithDeadlineENS0_4TimeE")

// Lock, unlock and try-lock, exclusive and shared.

void MutexLock(absl::Mutex* mu) {
  IMAGEGEN_REAL(MutexLock);
  Locking(mu, 0, [&] { return real(mu); });
}

void MutexReaderLock(absl::Mutex* mu) {
  IMAGEGEN_REAL(MutexReaderLock);
  Locking(mu, __tsan_mutex_read_lock, [&] { return real(mu); });
}


bool MutexTryLock(absl::Mutex* mu) {
  IMAGEGEN_REAL(MutexTryLock);
  return TryLocking(mu, 0, [&] { return real(mu); });
}

bool MutexReaderTryLock(absl::Mutex* mu) {
  IMAGEGEN_REAL(MutexReaderTryLock);
  return TryLocking(mu, __tsan_mutex_read_lock, [&] { return real(mu); });
}

void MutexUnlock(absl::Mutex* mu) {
  IMAGEGEN_REAL(MutexUnlock);
  Unlocking(mu, 0, [&] { real(mu); });
}

void MutexReaderUnlock(absl::Mutex* mu) {
  IMAGEGEN_REAL(MutexReaderUnlock);
  Unlocking(mu, __tsan_mutex_read_lock, [&] { real(mu); });
}

// Conditional locks: they return holding the mutex whether or not the condition became true.

void MutexLockWhen(absl::Mutex* mu, const absl::Condition& cond) {
  IMAGEGEN_REAL(MutexLockWhen);
  Locking(mu, 0, [&] { return real(mu, cond); });
}

bool MutexLockWhenWithTimeout(absl::Mutex* mu, const absl::Condition& cond, absl::Duration timeout) {
  IMAGEGEN_REAL(MutexLockWhenWithTimeout);
  return Locking(mu, 0, [&] { return real(mu, cond, timeout); });
}

bool MutexLockWhenWithDeadline(absl::Mutex* mu, const absl::Condition& cond, absl::Time deadline) {
  IMAGEGEN_REAL(MutexLockWhenWithDeadline);
  return Locking(mu, 0, [&] { return real(mu, cond, deadline); });
}

void MutexReaderLockWhen(absl::Mutex* mu, const absl::Condition& cond) {
  IMAGEGEN_REAL(MutexReaderLockWhen);
  Locking(mu, __tsan_mutex_read_lock, [&] { return real(mu, cond); });
}

bool MutexReaderLockWhenWithTimeout(absl::Mutex* mu, const absl::Condition& cond, absl::Duration timeout) {
  IMAGEGEN_REAL(MutexReaderLockWhenWithTimeout);
  return Locking(mu, __tsan_mutex_read_lock, [&] { return real(mu, cond, timeout); });
}

bool MutexReaderLockWhenWithDeadline(absl::Mutex* mu, const absl::Condition& cond, absl::Time deadline) {
  IMAGEGEN_REAL(MutexReaderLockWhenWithDeadline);
  return Locking(mu, __tsan_mutex_read_lock, [&] { return real(mu, cond, deadline); });
}

// Await: when the condition already holds (Abseil's fast path), nothing is released, and the
// predicate runs here, instrumented, under the caller's lock. Otherwise the mutex is released
// while waiting and held again on return.

void MutexAwait(absl::Mutex* mu, const absl::Condition& cond) {
  IMAGEGEN_REAL(MutexAwait);
  if (interposer_depth == 0 && cond.Eval()) return;
  Waiting(mu, [&] { return real(mu, cond); });
}

bool MutexAwaitWithTimeout(absl::Mutex* mu, const absl::Condition& cond, absl::Duration timeout) {
  IMAGEGEN_REAL(MutexAwaitWithTimeout);
  if (interposer_depth == 0 && cond.Eval()) return true;
  return Waiting(mu, [&] { return real(mu, cond, timeout); });
}

bool MutexAwaitWithDeadline(absl::Mutex* mu, const absl::Condition& cond, absl::Time deadline) {
  IMAGEGEN_REAL(MutexAwaitWithDeadline);
  if (interposer_depth == 0 && cond.Eval()) return true;
  return Waiting(mu, [&] { return real(mu, cond, deadline); });
}

// ~Mutex (both the complete-object and base-object destructor symbols). As in Abseil, the flag
// makes this a no-op for a mutex whose constructor did not announce it to TSan: only those built
// in our instrumented code (the inline constructor calls __tsan_mutex_create) are forgotten, so
// that a later mutex at the same address (a stack frame, a test fixture) starts afresh for the
// deadlock detector.

void MutexDestroyComplete(absl::Mutex* mu) {
  IMAGEGEN_REAL(MutexDestroyComplete);
  Annotated([&] { real(mu); }, [&] { __tsan_mutex_destroy(mu, __tsan_mutex_not_static); }, [] {});
}

void MutexDestroyBase(absl::Mutex* mu) {
  IMAGEGEN_REAL(MutexDestroyBase);
  Annotated([&] { real(mu); }, [&] { __tsan_mutex_destroy(mu, __tsan_mutex_not_static); }, [] {});
}

// CondVar: the waits release the mutex and hold it again on return. Signal and SignalAll order
// nothing by themselves (the mutex does), so they are not interposed.

void CondVarWait(absl::CondVar* cv, absl::Mutex* mu) {
  IMAGEGEN_REAL(CondVarWait);
  Waiting(mu, [&] { return real(cv, mu); });
}

bool CondVarWaitWithTimeout(absl::CondVar* cv, absl::Mutex* mu, absl::Duration timeout) {
  IMAGEGEN_REAL(CondVarWaitWithTimeout);
  return Waiting(mu, [&] { return real(cv, mu, timeout); });
}

bool CondVarWaitWithDeadline(absl::CondVar* cv, absl::Mutex* mu, absl::Time deadline) {
  IMAGEGEN_REAL(CondVarWaitWithDeadline);
  return Waiting(mu, [&] { return real(cv, mu, deadline); });
}

// Notification: Notify releases on the flag before setting it; a wait that returns notified, or an
// inline HasBeenNotified that reads true, acquires on it. Its internal mutex is left to Abseil
// (the calls it makes are nested, so not annotated).

void NotificationNotify(absl::Notification* n) {
  IMAGEGEN_REAL(NotificationNotify);
  InterposedCall call;
  if (call.outermost()) __tsan_release(NotifiedFlag(n));
  real(n);
}

void NotificationWait(const absl::Notification* n) {
  IMAGEGEN_REAL(NotificationWait);
  InterposedCall call;
  real(n);
  if (call.outermost()) __tsan_acquire(NotifiedFlag(n));
}

bool NotificationWaitWithTimeout(const absl::Notification* n, absl::Duration timeout) {
  IMAGEGEN_REAL(NotificationWaitWithTimeout);
  InterposedCall call;
  const bool notified = real(n, timeout);
  if (notified && call.outermost()) __tsan_acquire(NotifiedFlag(n));
  return notified;
}

bool NotificationWaitWithDeadline(const absl::Notification* n, absl::Time deadline) {
  IMAGEGEN_REAL(NotificationWaitWithDeadline);
  InterposedCall call;
  const bool notified = real(n, deadline);
  if (notified && call.outermost()) __tsan_acquire(NotifiedFlag(n));
  return notified;
}

namespace {

// Every interposer must be what the dynamic linker gives libgrpc, libgpr and libabsl for its
// symbol; otherwise their locks are invisible again and TSan floods the log with false reports.
// This fails at start-up instead, naming the symbol (tsan_interposers.dynlist exports them).
__attribute__((constructor)) void CheckInterposersBound() {
#define IMAGEGEN_ENTRY(name) {k##name, reinterpret_cast<void*>(&name)}
  const struct {
    const char* symbol;
    void* ours;
  } entries[] = {
      IMAGEGEN_ENTRY(MutexLock),
      IMAGEGEN_ENTRY(MutexReaderLock),
      IMAGEGEN_ENTRY(MutexTryLock),
      IMAGEGEN_ENTRY(MutexReaderTryLock),
      IMAGEGEN_ENTRY(MutexUnlock),
      IMAGEGEN_ENTRY(MutexReaderUnlock),
      IMAGEGEN_ENTRY(MutexLockWhen),
      IMAGEGEN_ENTRY(MutexLockWhenWithTimeout),
      IMAGEGEN_ENTRY(MutexLockWhenWithDeadline),
      IMAGEGEN_ENTRY(MutexReaderLockWhen),
      IMAGEGEN_ENTRY(MutexReaderLockWhenWithTimeout),
      IMAGEGEN_ENTRY(MutexReaderLockWhenWithDeadline),
      IMAGEGEN_ENTRY(MutexAwait),
      IMAGEGEN_ENTRY(MutexAwaitWithTimeout),
      IMAGEGEN_ENTRY(MutexAwaitWithDeadline),
      IMAGEGEN_ENTRY(MutexDestroyComplete),
      IMAGEGEN_ENTRY(MutexDestroyBase),
      IMAGEGEN_ENTRY(CondVarWait),
      IMAGEGEN_ENTRY(CondVarWaitWithTimeout),
      IMAGEGEN_ENTRY(CondVarWaitWithDeadline),
      IMAGEGEN_ENTRY(NotificationNotify),
      IMAGEGEN_ENTRY(NotificationWait),
      IMAGEGEN_ENTRY(NotificationWaitWithTimeout),
      IMAGEGEN_ENTRY(NotificationWaitWithDeadline),
  };
#undef IMAGEGEN_ENTRY
  for (const auto& entry : entries) {
    if (dlsym(RTLD_DEFAULT, entry.symbol) != entry.ours || dlsym(RTLD_NEXT, entry.symbol) == nullptr) {
      std::fprintf(stderr,
                   "tsan_absl_sync: %s is not exported by the executable or not in libabsl_synchronization "
                   "(tests/sanitizers/tsan_interposers.dynlist)\n",
                   entry.symbol);
      std::abort();
    }
  }
}

}  // namespace
}  // namespace imagegen::tsan_absl_sync
