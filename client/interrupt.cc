#include "client/interrupt.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>

namespace imagegen::client {
namespace {

// Process-wide because a signal handler cannot reach an object.
std::atomic<bool> g_interrupted{false};
int g_pipe[2] = {-1, -1};  // [0] read by the watcher, [1] written by the handler
struct sigaction g_previous_action;

// Bytes on the pipe: what the watcher should do.
constexpr char kCancel = 'c';
constexpr char kQuit = 'q';

static_assert(std::atomic<bool>::is_always_lock_free, "the handler needs a lock-free flag");

extern "C" void OnSigint(int) {
  const int saved_errno = errno;  // write may change errno under the interrupted code
  g_interrupted.store(true);
  const char byte = kCancel;
  [[maybe_unused]] ssize_t ignored = write(g_pipe[1], &byte, 1);
  errno = saved_errno;
}

void WriteByte(char byte) {
  while (write(g_pipe[1], &byte, 1) < 0 && errno == EINTR) {
  }
}

}  // namespace

InterruptCanceller::InterruptCanceller(grpc::ClientContext* context) : context_(context) {
  g_interrupted.store(false);
  // A shell starts background commands with SIGINT ignored so that Ctrl-C reaches only the
  // foreground job; keep it that way, as other tools do.
  struct sigaction current;
  if (sigaction(SIGINT, nullptr, &current) != 0 || current.sa_handler == SIG_IGN) return;
  if (pipe2(g_pipe, O_CLOEXEC) != 0) return;  // no Ctrl-C cancel; the default handler remains
  struct sigaction action = {};
  action.sa_handler = OnSigint;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESETHAND | SA_RESTART;
  if (sigaction(SIGINT, &action, &g_previous_action) != 0) {
    close(g_pipe[0]);
    close(g_pipe[1]);
    return;
  }
  installed_ = true;
  watcher_ = std::thread([this] { Watch(); });
}

InterruptCanceller::~InterruptCanceller() {
  if (!installed_) return;
  sigaction(SIGINT, &g_previous_action, nullptr);
  WriteByte(kQuit);
  watcher_.join();
  close(g_pipe[0]);
  close(g_pipe[1]);
  g_pipe[0] = g_pipe[1] = -1;
}

bool InterruptCanceller::interrupted() const { return g_interrupted.load(); }

void InterruptCanceller::Watch() {
  for (;;) {
    char byte = 0;
    const ssize_t n = read(g_pipe[0], &byte, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || byte == kQuit) return;
    if (byte == kCancel) context_->TryCancel();
  }
}

}  // namespace imagegen::client
