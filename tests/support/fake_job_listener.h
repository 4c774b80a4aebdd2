// A JobListener that records what the engine tells it, and can pin the engine's worker.
#ifndef IMAGEGEN_TESTS_SUPPORT_FAKE_JOB_LISTENER_H_
#define IMAGEGEN_TESTS_SUPPORT_FAKE_JOB_LISTENER_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "core/engine/engine.h"
#include "core/engine/job.h"

namespace imagegen::test {

// Records every event of one job, in order. Thread-safe: the engine calls it from the worker
// (and OnAccepted from Submit's caller) while the test reads it.
//
// BlockAtStep makes it BREAK the JobListener contract on purpose: OnProgress for that step
// waits until Release(). That pins the engine's one worker inside a known job at a known step, so
// that a test can fill the queue, cancel a running job or shut down at a point it chooses,
// without sleeps or timing margins. A test that pins must Release before the engine is
// destroyed (Engine's destructor joins the worker); the wait also gives up after kTestTimeout so
// that a failing test cannot hang forever.
class FakeJobListener : public JobListener {
 public:
  enum class Event { kAccepted, kProgress, kResult, kError };

  // REQUIRES: called before the job is submitted.
  void BlockAtStep(int step);
  // Waits until the worker is held in OnProgress(step). False after kTestTimeout.
  bool WaitUntilBlocked();
  // Lets a held (or future) OnProgress return. Idempotent.
  void Release();

  // Waits for OnResult or OnError. False after kTestTimeout.
  bool WaitForEnd();
  // True once OnResult or OnError has been called.
  bool ended() const { return ended_.HasBeenNotified(); }

  std::vector<Event> events() const;
  std::string accepted_job_id() const;
  int accepted_position() const;  // -1 before OnAccepted
  std::vector<ProgressUpdate> progress() const;
  std::vector<int> progress_steps() const;
  // Every OnQueuePosition, in order.
  std::vector<int> queue_positions() const;
  // Empty until OnResult.
  std::optional<JobResult> result() const;
  // OK after OnResult, the error after OnError, UNKNOWN before either.
  absl::Status final_status() const;
  // OnResult and OnError calls together: exactly 1 for a well-behaved engine.
  int terminal_events() const;

  // JobListener.
  void OnAccepted(const std::string& job_id, int queue_position) override;
  void OnQueuePosition(int queue_position) override;
  void OnProgress(ProgressUpdate update) override;
  void OnResult(JobResult result) override;
  void OnError(absl::Status status) override;

 private:
  mutable absl::Mutex mu_;
  std::vector<Event> events_ ABSL_GUARDED_BY(mu_);
  std::string accepted_job_id_ ABSL_GUARDED_BY(mu_);
  int accepted_position_ ABSL_GUARDED_BY(mu_) = -1;
  std::vector<ProgressUpdate> progress_ ABSL_GUARDED_BY(mu_);
  std::vector<int> queue_positions_ ABSL_GUARDED_BY(mu_);
  std::optional<JobResult> result_ ABSL_GUARDED_BY(mu_);
  absl::Status status_ ABSL_GUARDED_BY(mu_) = absl::UnknownError("the job has not ended");
  int terminal_events_ ABSL_GUARDED_BY(mu_) = 0;
  int block_at_step_ ABSL_GUARDED_BY(mu_) = 0;  // 0: never block

  absl::Notification blocked_;
  absl::Notification release_;
  absl::Notification ended_;
};

// Holds `engine`'s worker (an engine with one worker) inside a 5-step tiny job (TinyJobRequest)
// submitted in-process, blocked at step 1 until the returned listener's Release. Returns once
// the worker is held; EXPECT-fails when the job is refused or never starts.
std::shared_ptr<FakeJobListener> PinWorker(Engine& engine, const std::string& job_id);

}  // namespace imagegen::test

#endif  // IMAGEGEN_TESTS_SUPPORT_FAKE_JOB_LISTENER_H_
