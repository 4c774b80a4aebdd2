// ThreadSanitizer annotations for the hand-offs inside Debian's uninstrumented gRPC (TSan build of
// server_test only: tests/CMakeLists.txt adds this file when IMAGEGEN_SANITIZE is "thread").
//
// Why: an operation started on one thread (a reactor's StartWrite or Finish, a client's call)
// completes on another, after travelling through the transport's lock-free queues and combiners,
// where TSan sees no synchronisation; and a callback call's references are counted partly in
// libgrpc++ itself. The inline gRPC code compiled into our executable then looks racy: the
// ServerCallbackWriterImpl that Finish filled in on one thread is destroyed by OnDone's thread, a
// reactor's fields written before StartWrite are read in OnWriteDone, and so on.
//
// How: the executable defines the functions below under their symbol names and exports them
// (tsan_interposers.dynlist), so that libgrpc and libgrpc++, which call them through the PLT,
// arrive here. Each tells TSan an ordering that gRPC guarantees, with __tsan_release and
// __tsan_acquire, and forwards to the real function (dlsym(RTLD_NEXT)):
//   - grpc_cq_begin_op(cq, tag), on the thread that starts an operation, releases on the tag, and
//     grpc_cq_end_op(cq, tag, ...), on the thread that completes it, acquires and releases on it:
//     the start of an operation happens before its completion;
//   - grpc_completion_queue_next and _pluck acquire on the tag they return: the completion happens
//     before the tag is handed out (the server's callback queue is such a queue, drained by gRPC's
//     "nexting" threads, through a lock-free queue);
//   - ServerCallbackCall::ScheduleOnDone, which runs once the call's last reference is gone,
//     acquires on callbacks_outstanding_, the counter that the inline reactions (instrumented)
//     release on as they finish, so OnDone follows every reaction. (One unreference stays unseen:
//     the one inside libgrpc++ that follows an OnCancel run on gRPC's executor. What OnCancel does
//     is then ordered before OnDone only when that unreference is the last, or by our own locks.)
// Whatever our code does after starting an operation stays unordered with its completion: a
// reactor that touches its state after StartWrite while OnWriteDone may run is still reported.
//
// grpc_cq_begin_op and grpc_cq_end_op are internal to gRPC 1.51
// (src/core/lib/surface/completion_queue.h), and the counter's place is that of
// grpcpp/support/server_callback.h in 1.51; the static_assert and the start-up check in
// CheckInterposersBound fail loudly if they change.
#include <dlfcn.h>
#include <grpc/grpc.h>
#include <grpcpp/support/server_callback.h>
#include <sanitizer/tsan_interface.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <utility>

#include "absl/status/status.h"

struct grpc_cq_completion;

namespace imagegen::tsan_grpc {
namespace {

template <typename Fn>
Fn Real(const char* symbol) {
  void* fn = dlsym(RTLD_NEXT, symbol);
  if (fn == nullptr) {
    std::fprintf(stderr, "tsan_grpc: %s not found in the libraries after the executable\n", symbol);
    std::abort();
  }
  return reinterpret_cast<Fn>(fn);
}

// ServerCallbackCall is {vptr; atomic_int on_cancel_conditions_remaining_; atomic_int
// callbacks_outstanding_;}.
static_assert(sizeof(grpc::internal::ServerCallbackCall) == sizeof(void*) + 2 * sizeof(std::atomic_int),
              "the layout of grpc::internal::ServerCallbackCall changed");
void* CallbacksOutstanding(grpc::internal::ServerCallbackCall* call) {
  return reinterpret_cast<char*>(call) + sizeof(void*) + sizeof(std::atomic_int);
}

}  // namespace

// The interposers; k<Name> is the symbol, for dlsym.
#define IMAGEGEN_INTERPOSER(ret, name, params, symbol) \
  ret name params __asm__(symbol);                    \
  constexpr char k##name[] = symbol;
#define IMAGEGEN_REAL(name) static const auto real = Real<decltype(&name)>(k##name)

IMAGEGEN_INTERPOSER(bool, CqBeginOp, (grpc_completion_queue * cq, void* tag),
                    "_Z16grpc_cq_begin_opP21grpc_completion_queuePv")
IMAGEGEN_INTERPOSER(void, CqEndOp,
                    (grpc_completion_queue * cq, void* tag, absl::Status error,
                     void (*done)(void* done_arg, grpc_cq_completion* storage), void* done_arg,
                     grpc_cq_completion* storage, bool internal),
                    "_Z14grpc_cq_end_opP21grpc_completion_queuePvN4absl7debian36StatusEPFvS1_P18grpc_cq_"
                    "completionES1_S6_b")
IMAGEGEN_INTERPOSER(grpc_event, CqNext, (grpc_completion_queue * cq, gpr_timespec deadline, void* reserved),
                    "grpc_completion_queue_next")
IMAGEGEN_INTERPOSER(grpc_event, CqPluck,
                    (grpc_completion_queue * cq, void* tag, gpr_timespec deadline, void* reserved),
                    "grpc_completion_queue_pluck")
IMAGEGEN_INTERPOSER(void, ScheduleOnDone, (grpc::internal::ServerCallbackCall * call, bool inline_ondone),
                    "_ZN4grpc8internal18ServerCallbackCall14ScheduleOnDoneEb")

bool CqBeginOp(grpc_completion_queue* cq, void* tag) {
  IMAGEGEN_REAL(CqBeginOp);
  __tsan_release(tag);
  return real(cq, tag);
}

void CqEndOp(grpc_completion_queue* cq, void* tag, absl::Status error,
             void (*done)(void* done_arg, grpc_cq_completion* storage), void* done_arg, grpc_cq_completion* storage,
             bool internal) {
  IMAGEGEN_REAL(CqEndOp);
  __tsan_acquire(tag);
  __tsan_release(tag);
  real(cq, tag, std::move(error), done, done_arg, storage, internal);
}

grpc_event CqNext(grpc_completion_queue* cq, gpr_timespec deadline, void* reserved) {
  IMAGEGEN_REAL(CqNext);
  const grpc_event event = real(cq, deadline, reserved);
  if (event.type == GRPC_OP_COMPLETE) __tsan_acquire(event.tag);
  return event;
}

grpc_event CqPluck(grpc_completion_queue* cq, void* tag, gpr_timespec deadline, void* reserved) {
  IMAGEGEN_REAL(CqPluck);
  const grpc_event event = real(cq, tag, deadline, reserved);
  if (event.type == GRPC_OP_COMPLETE) __tsan_acquire(event.tag);
  return event;
}

void ScheduleOnDone(grpc::internal::ServerCallbackCall* call, bool inline_ondone) {
  IMAGEGEN_REAL(ScheduleOnDone);
  __tsan_acquire(CallbacksOutstanding(call));
  real(call, inline_ondone);
}

namespace {

// libgrpc and libgrpc++ must reach the definitions above; otherwise their hand-offs are invisible
// again and TSan floods the log. This fails at start-up instead, naming the symbol.
__attribute__((constructor)) void CheckInterposersBound() {
#define IMAGEGEN_ENTRY(name) {k##name, reinterpret_cast<void*>(&name)}
  const std::pair<const char*, void*> entries[] = {
      IMAGEGEN_ENTRY(CqBeginOp), IMAGEGEN_ENTRY(CqEndOp),         IMAGEGEN_ENTRY(CqNext),
      IMAGEGEN_ENTRY(CqPluck),   IMAGEGEN_ENTRY(ScheduleOnDone),
  };
#undef IMAGEGEN_ENTRY
  for (const auto& [symbol, ours] : entries) {
    if (dlsym(RTLD_DEFAULT, symbol) != ours || dlsym(RTLD_NEXT, symbol) == nullptr) {
      std::fprintf(stderr,
                   "tsan_grpc: %s is not exported by the executable or not in libgrpc/libgrpc++ "
                   "(tests/sanitizers/tsan_interposers.dynlist)\n",
                   symbol);
      std::abort();
    }
  }
}

}  // namespace
}  // namespace imagegen::tsan_grpc
