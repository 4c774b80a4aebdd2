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
#include "core/engine/clock.h"
#include "core/engine/job.h"

namespace imagegen {

// Thread-safe. Order: the highest effective priority first, FIFO among equals, where a job's
// effective priority is its priority plus the time it has waited divided by `aging` (one level
// per `aging` waited). Two jobs' order therefore never changes while they wait, and a job
// overtakes every job of higher priority that arrives more than (difference x aging) after it:
// under a steady stream of high-priority work a low-priority job still starts.
// Listeners hear their position (jobs ahead) at admission and whenever it changes: the queue
// records those events in each job's JobEvents under its lock and delivers them after releasing
// it (lock order in job.h), so a listener may call back into the queue.
class JobQueue {
 public:
  // REQUIRES: capacity >= 1, aging > 0. `clock` must outlive the queue. `on_size` (may be
  // empty) hears the new number of queued jobs after every change, under the queue's lock, so
  // that the reports of concurrent changes arrive in the order of the changes (a gauge fed from
  // it is never left stale). It must not block or call back into the queue.
  JobQueue(int capacity, absl::Duration aging, const Clock* clock, std::function<void(int)> on_size = nullptr);

  // Queues `job` and has its listener hear OnAccepted with its position (recorded under the
  // queue's lock, so it precedes every later event of the job; delivered after). RESOURCE_EXHAUSTED
  // when full, UNAVAILABLE after Close. On error the listener hears nothing.
  absl::Status Push(std::shared_ptr<Job> job);

  // Takes jobs from the head, in order, while `fits` accepts the head; stops at the first it
  // refuses, so that a large job at the head is not overtaken forever by smaller ones.
  std::vector<std::shared_ptr<Job>> PopWhile(const std::function<bool(const Job&)>& fits);

  // Removes and returns the job with this id (and, when `owner` is given, that listener);
  // nullptr when it is not queued. Jobs leaving the queue (here, PopWhile, RemoveExpired, Close)
  // no longer hear queue positions.
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
  // A queued job with the queue's bookkeeping: its ordering key, fixed at admission, and the
  // position its listener heard last.
  struct Entry {
    double key;
    uint64_t sequence;
    std::shared_ptr<Job> job;
    mutable int last_position;  // not part of the order
  };
  // Larger key first; then admission order.
  struct Order {
    bool operator()(const Entry& a, const Entry& b) const;
  };
  double Key(const Job& job) const;
  // After every change: records the new position of every queued job whose position changed
  // (added to `notify`, to deliver once the lock is released), and tells `on_size_` the size.
  void Changed(std::vector<std::shared_ptr<Job>>* notify) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes `it` out of the queue. Returns the job.
  std::shared_ptr<Job> Take(std::set<Entry, Order>::iterator it) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Delivers the events Changed recorded. REQUIRES: mu_ not held.
  static void Deliver(const std::vector<std::shared_ptr<Job>>& notify);

  const int capacity_;
  const absl::Duration aging_;
  const Clock* const clock_;
  const std::function<void(int)> on_size_;
  mutable absl::Mutex mu_;
  std::set<Entry, Order> jobs_ ABSL_GUARDED_BY(mu_);
  int queued_rows_ ABSL_GUARDED_BY(mu_) = 0;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace imagegen

#endif  // IMAGEGEN_CORE_ENGINE_JOB_QUEUE_H_
