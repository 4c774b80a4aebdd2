// Admission: the bounded priority queue of jobs waiting for a worker.
#ifndef IMAGEGEN_CORE_ENGINE_JOB_QUEUE_H_
#define IMAGEGEN_CORE_ENGINE_JOB_QUEUE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
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

// Thread-safe. One queue per principal (JobRequest::principal), so that no client's jobs wait
// behind another's:
//   - Within a principal: the highest effective priority first, FIFO among equals, where a job's
//     effective priority is its priority plus the time it has waited divided by `aging` (one
//     level per `aging` waited). Two jobs' order therefore never changes while they wait, and a
//     job overtakes every job of higher priority that arrives more than (difference x aging)
//     after it: under a steady stream of high-priority work a low-priority job still starts.
//   - Between principals: PopWhile takes the head of the principal its caller ranks lowest (the
//     worker ranks by the rows a principal already runs), so a principal's priority never puts
//     its jobs ahead of another's.
// A principal may hold at most `max_per_principal` queued jobs (0: no bound but the capacity).
// Listeners hear their position at admission and whenever it changes: the jobs ahead of it if
// every principal with queued jobs took turns (its own jobs ahead, plus, of every other
// principal, as many as that). The queue records those events in each job's JobEvents under its
// lock and delivers them after releasing it (lock order in job.h), so a listener may call back
// into the queue.
class JobQueue {
 public:
  // REQUIRES: capacity >= 1, max_per_principal >= 0, aging > 0. `clock` must outlive the queue.
  // `on_size` (may be empty) hears the new number of queued jobs after every change, under the
  // queue's lock, so that the reports of concurrent changes arrive in the order of the changes
  // (a gauge fed from it is never left stale). It must not block or call back into the queue.
  JobQueue(int capacity, int max_per_principal, absl::Duration aging, const Clock* clock,
           std::function<void(int)> on_size = nullptr);

  // Queues `job` and has its listener hear OnAccepted with its position (recorded under the
  // queue's lock, so it precedes every later event of the job; delivered after).
  // RESOURCE_EXHAUSTED when the queue or the principal's share of it is full, UNAVAILABLE after
  // Close. On error the listener hears nothing.
  absl::Status Push(std::shared_ptr<Job> job);

  // How PopWhile chooses between principals: the lower rank first (ties: the head that came
  // first in priority order). Called under the queue's lock: it must not call into the queue.
  using PrincipalRank = std::function<int64_t(const std::string& principal)>;
  // Takes jobs while `fits` accepts the next one: each time the head of the principal that
  // `rank` (empty: every principal ranks the same) puts first. Stops at the first it refuses, so
  // that a large job at a head is not overtaken forever by smaller ones. `fits` is called under
  // the queue's lock, like `rank`, and may change what `rank` answers.
  std::vector<std::shared_ptr<Job>> PopWhile(const std::function<bool(const Job&)>& fits,
                                             const PrincipalRank& rank = nullptr);

  // Removes and returns the principal's job with this id (and, when `owner` is given, that
  // listener); nullptr when it is not queued. Jobs leaving the queue (here, PopWhile,
  // RemoveExpired, Close) no longer hear queue positions.
  std::shared_ptr<Job> Remove(const std::string& principal, const std::string& job_id,
                              const JobListener* owner = nullptr);
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
  using PrincipalQueue = std::set<Entry, Order>;
  double Key(const Job& job) const;
  // The position of the k-th (from 0) job of a principal's queue.
  int Position(int k) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // After every change: records the new position of every queued job whose position changed
  // (added to `notify`, to deliver once the lock is released), and tells `on_size_` the size.
  void Changed(std::vector<std::shared_ptr<Job>>* notify) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes `it` out of `principal`'s queue (dropped once empty). Returns the job.
  std::shared_ptr<Job> Take(std::map<std::string, PrincipalQueue>::iterator principal, PrincipalQueue::iterator it)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Delivers the events Changed recorded. REQUIRES: mu_ not held.
  static void Deliver(const std::vector<std::shared_ptr<Job>>& notify);

  const int capacity_;
  const int max_per_principal_;
  const absl::Duration aging_;
  const Clock* const clock_;
  const std::function<void(int)> on_size_;
  mutable absl::Mutex mu_;
  // Every principal with queued jobs (none empty), each in its order.
  std::map<std::string, PrincipalQueue> queues_ ABSL_GUARDED_BY(mu_);
  int size_ ABSL_GUARDED_BY(mu_) = 0;
  int queued_rows_ ABSL_GUARDED_BY(mu_) = 0;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace imagegen

#endif  // IMAGEGEN_CORE_ENGINE_JOB_QUEUE_H_
