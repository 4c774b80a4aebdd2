// Admission: the bounded priority queue of jobs waiting for a worker.
#ifndef IMAGEGEN_CORE_ENGINE_JOB_QUEUE_H_
#define IMAGEGEN_CORE_ENGINE_JOB_QUEUE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/engine/job.h"
#include "core/engine/pipeline.h"

namespace imagegen {

// Why a job stops, or kFinishing once its worker has claimed its result for delivery. Each
// transition is a compare-and-swap from kNone, so Cancel and the worker agree on which won:
// a job Cancel stopped ends CANCELLED, and a job past kFinishing can no longer be cancelled.
enum class StopReason : int { kNone = 0, kCancelled = 1, kShutdown = 2, kFinishing = 3 };

// A job as the engine tracks it from admission to its end. `request`, `listener`,
// `accepted_at` and `sequence` are set before the job is shared and never change; `stop` is
// written by Cancel/Shutdown and by the worker when the job finishes (StopReason).
struct Job {
  JobRequest request;
  std::shared_ptr<JobListener> listener;
  absl::Time accepted_at;
  uint64_t sequence = 0;  // admission order
  std::atomic<int> stop{static_cast<int>(StopReason::kNone)};
  // Asks the worker to stop the job for `reason` (kCancelled or kShutdown). True when the job
  // will end for that reason; false when it already stops for another or its result is claimed.
  bool RequestStop(StopReason reason) {
    int expected = static_cast<int>(StopReason::kNone);
    return stop.compare_exchange_strong(expected, static_cast<int>(reason)) || expected == static_cast<int>(reason);
  }
  std::atomic<bool> started{false};  // a worker took it from the queue
  absl::Time started_at;  // when it did; written by that worker before `started`
  // JobQueue's: the ordering key (set before insertion) and the position the listener heard last.
  double queue_key = 0;
  int last_position = -1;

  int rows() const { return request.guidance_scale != 1.0 ? 2 * request.num_images : request.num_images; }
};

// Thread-safe. Order: the highest effective priority first, FIFO among equals, where a job's
// effective priority is its priority plus the time it has waited divided by `aging` (one level
// per `aging` waited). Two jobs' order therefore never changes while they wait, and a job
// overtakes every job of higher priority that arrives more than (difference x aging) after it:
// under a steady stream of high-priority work a low-priority job still starts.
// Listeners hear their position (jobs ahead) at admission and whenever it changes.
class JobQueue {
 public:
  // REQUIRES: capacity >= 1, aging > 0. `clock` must outlive the queue. `on_size` (may be
  // empty) hears the new number of queued jobs after every change, under the queue's lock, so
  // that the reports of concurrent changes arrive in the order of the changes (a gauge fed from
  // it is never left stale). It must not block or call back into the queue.
  JobQueue(int capacity, absl::Duration aging, const Clock* clock, std::function<void(int)> on_size = nullptr);

  // Queues `job` and calls its listener's OnAccepted with its position, under the queue's lock
  // so that it precedes every later event. RESOURCE_EXHAUSTED when full, UNAVAILABLE after
  // Close. On error the listener hears nothing.
  absl::Status Push(std::shared_ptr<Job> job);

  // Takes jobs from the head, in order, while `fits` accepts the head; stops at the first it
  // refuses, so that a large job at the head is not overtaken forever by smaller ones.
  std::vector<std::shared_ptr<Job>> PopWhile(const std::function<bool(const Job&)>& fits);

  // Removes and returns the job with this id (and, when `owner` is given, that listener);
  // nullptr when it is not queued.
  std::shared_ptr<Job> Remove(const std::string& job_id, const JobListener* owner = nullptr);
  // Removes and returns the jobs whose deadline is at or before `now`.
  std::vector<std::shared_ptr<Job>> RemoveExpired(absl::Time now);
  // Refuses further pushes, wakes every waiter, and returns what was queued.
  std::vector<std::shared_ptr<Job>> Close();

  // Blocks until a job is queued, the queue is closed, or `deadline` (real time) passes.
  // Returns true when a job is queued.
  bool WaitForJob(absl::Time deadline);
  // Blocks until the queued jobs' rows reach `rows`, the queue is closed, or `deadline` passes.
  void WaitForRows(int rows, absl::Time deadline);

  int size() const;
  bool closed() const;

 private:
  // Larger key first; then admission order.
  struct Order {
    bool operator()(const std::shared_ptr<Job>& a, const std::shared_ptr<Job>& b) const;
  };
  double Key(const Job& job) const;
  // After every change: tells every queued job whose position changed its new position, and
  // `on_size_` the new size.
  void Changed() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int capacity_;
  const absl::Duration aging_;
  const Clock* const clock_;
  const std::function<void(int)> on_size_;
  mutable absl::Mutex mu_;
  std::set<std::shared_ptr<Job>, Order> jobs_ ABSL_GUARDED_BY(mu_);
  int queued_rows_ ABSL_GUARDED_BY(mu_) = 0;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace imagegen

#endif  // IMAGEGEN_CORE_ENGINE_JOB_QUEUE_H_
