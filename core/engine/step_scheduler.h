// Step-level continuous batching: the loop body of one worker.
//
// Every Tick the scheduler admits queued jobs while their rows fit the row budget (text encoding
// of the new jobs in one call per model; a job's init image is decoded here, on the worker),
// ends jobs that were cancelled or passed their deadline, picks the group of running jobs that
// share a model and image size, and runs one step of all of them in one UNet call with a
// per-row timestep. Jobs join at the next tick and leave as soon as they finish or stop, so no
// job waits for another to end.
//
// Fair sharing between principals (JobRequest::principal), so that one client's flood delays
// another's job by a few step times at most:
//   - Admission takes the queued head of the principal with the fewest rows running here
//     (JobQueue::PopWhile), and a principal with nothing running here is admitted even when the
//     row budget is spent (one job), so a flood never locks another client out.
//   - Each principal is charged the model time of its rows (a call's duration split by rows),
//     and the next call is for the group of the running job whose principal has been charged
//     least (start-time fair queueing: a principal that starts running again is charged from the
//     least charge of those running, less the time of the call it waited for, so idle time
//     banks no credit); ties go to the group that waited longest. A small job of one client therefore runs its steps between two steps of
//     another client's large job, not after it.
// A call that runs out of memory is retried as two calls of half its jobs each, down to single
// jobs, before any job fails RESOURCE_EXHAUSTED.
// With Options::request_level, new jobs join only when no job runs (a batch forms, runs to the
// end, then the next): the classic request-level batching, kept for comparison.
#ifndef IMAGEGEN_CORE_ENGINE_STEP_SCHEDULER_H_
#define IMAGEGEN_CORE_ENGINE_STEP_SCHEDULER_H_

#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "core/engine/clock.h"
#include "core/engine/engine_observer.h"
#include "core/engine/job_queue.h"
#include "core/engine/pipeline.h"

namespace imagegen {

// Not thread-safe: one worker thread calls Tick (and FailAll). It never blocks; the worker
// waits on the queue when Tick reports no work. The queue, pipeline, clock and observer are not
// owned and must outlive it.
class StepScheduler {
 public:
  struct Options {
    // UNet rows per call (guidance counts two per image), each row counted Job::row_weight times
    // in a call (RowWeight: rows of larger images than the model's default count more; admission
    // counts plain rows). A job larger than this runs alone.
    int max_batch_rows = 32;
    // Admit new jobs only when none runs.
    bool request_level = false;
  };
  // Called once per job that ends, after the worker let go of its state: `result` is set
  // exactly when `status` is OK.
  using EndFn = std::function<void(Job& job, absl::Status status, JobResult* result)>;
  // Called once per job that starts running (left the queue for this worker).
  using StartFn = std::function<void(Job& job)>;

  StepScheduler(const Options& options, JobQueue* queue, Pipeline* pipeline, const Clock* clock,
                EngineObserver* observer, StartFn on_start, EndFn on_end);

  // One scheduling round. Returns false when there was nothing to run.
  bool Tick();
  // Ends every running job with `status` (shutdown).
  void FailAll(const absl::Status& status);

  int num_running() const { return static_cast<int>(running_.size()); }
  int running_rows() const;

 private:
  struct Running {
    std::shared_ptr<Job> job;
    std::unique_ptr<JobState> state;
    absl::Time started;
    absl::Duration text_encode;  // its share of the Start call that encoded its text
    int64_t last_tick = -1;  // the tick of its last step: the group that waited longest goes next
    int reported_step = 0;   // the step its listener heard last
    bool first_preview = true;
  };

  void Admit();
  // Starts `jobs` (left the queue for this worker): init images decoded, text encoded.
  void Start(const std::vector<std::shared_ptr<Job>>& jobs);
  void EndStopped();
  // The jobs to step this tick: the group of the running job whose principal was charged least.
  std::vector<size_t> PickBatch() const;
  void StepBatch(const std::vector<size_t>& batch);
  // One model call of `part` (indices into running_), split in two on RESOURCE_EXHAUSTED. Jobs
  // whose call failed are added to `failed` with the status; steps are reported and charged.
  void CallModel(const std::vector<size_t>& part, std::vector<std::pair<size_t, absl::Status>>* failed);
  int RowsOf(const std::string& principal) const;
  // After a model call: a Progress (with previews when due) if the job completed a step.
  // Returns whether it did.
  bool ReportProgress(Running& r);
  // Decodes a done() job's images and ends it.
  void FinishJob(size_t index);
  void End(size_t index, absl::Status status, JobResult* result);
  absl::Status StopStatus(const Job& job) const;

  const Options options_;
  JobQueue* const queue_;
  Pipeline* const pipeline_;
  const Clock* const clock_;
  EngineObserver* const observer_;  // may be null
  StartFn on_start_;
  EndFn on_end_;
  std::vector<Running> running_;  // in admission order
  // Model time charged to each principal with running jobs, in seconds (fair sharing, above).
  absl::flat_hash_map<std::string, double> charged_;
  absl::Duration last_call_;  // the last model call's time
  int64_t tick_ = 0;
};

}  // namespace imagegen

#endif  // IMAGEGEN_CORE_ENGINE_STEP_SCHEDULER_H_
