// Ctrl-C cancels the call on the server, not only the local process.
#ifndef IMAGEGEN_CLIENT_INTERRUPT_H_
#define IMAGEGEN_CLIENT_INTERRUPT_H_

#include <thread>

#include <grpcpp/client_context.h>

namespace imagegen::client {

// While alive, SIGINT cancels `context` with ClientContext::TryCancel, which tells the server
// to drop the job at its next step; the blocked Read then returns and the call ends CANCELLED.
//
// TryCancel is not async-signal-safe, so the handler only sets a flag and writes a byte to a
// pipe; a watcher thread waiting on the pipe makes the call. The handler is one-shot
// (SA_RESETHAND): a second Ctrl-C kills the process, for when the server does not answer.
//
// When SIGINT is ignored on entry (a background job of a shell without job control), it stays
// ignored and this object does nothing.
//
// At most one InterruptCanceller may exist at a time (the handler's state is process-wide).
// `context` must outlive it. The destructor restores the previous SIGINT disposition and joins
// the watcher.
class InterruptCanceller {
 public:
  explicit InterruptCanceller(grpc::ClientContext* context);
  ~InterruptCanceller();
  InterruptCanceller(const InterruptCanceller&) = delete;
  InterruptCanceller& operator=(const InterruptCanceller&) = delete;

  // True when SIGINT arrived while this object was alive.
  bool interrupted() const;

 private:
  void Watch();

  grpc::ClientContext* context_;
  bool installed_ = false;  // false when the pipe or handler could not be set up
  std::thread watcher_;
};

}  // namespace imagegen::client

#endif  // IMAGEGEN_CLIENT_INTERRUPT_H_
