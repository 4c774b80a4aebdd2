// The engine: admission of generation jobs, and the worker that runs them.
//
// Engine::Submit puts a job in a bounded FIFO queue (a full queue is refused at once). A worker
// thread takes the next job, encodes its text, runs its reverse process step by step, and
// reports progress, previews and the result to the job's JobListener; what it does goes to an
// EngineObserver. Cancellation, a passed deadline or Shutdown end a job at its next step
// boundary. This first form runs one job at a time on one worker; the per-step batched call
// (Generation::DenoiseStep) already accepts rows of several jobs.
#ifndef IMAGEGEN_CORE_ENGINE_ENGINE_H_
#define IMAGEGEN_CORE_ENGINE_ENGINE_H_

#include <atomic>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "core/engine/engine_observer.h"
#include "core/engine/job.h"
#include "core/model/model_config.h"

namespace imagegen {

class ModelBundle;

// Thread-safe. Owns the model bundles and the worker thread; the destructor shuts down.
class Engine {
 public:
  struct Options {
    // Jobs that may wait in the queue (running jobs not counted). A full queue refuses at once.
    int max_queue = 64;
    // Torch device of the worker: "cpu" or "cuda:N".
    std::string device = "cpu";
    // LibTorch intra-op threads of the worker; 0: LibTorch's default (one per physical core).
    int intra_op_threads = 0;
    RequestLimits limits;
  };

  // Loads each bundle in `bundle_dirs` and starts the worker. Errors name the bundle file at
  // fault. `observer` may be null; otherwise it must outlive the engine.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const Options& options,
                                                        const std::vector<std::string>& bundle_dirs,
                                                        EngineObserver* observer);
  ~Engine();

  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // The loaded models, in load order. Their configs are immutable.
  std::vector<const ModelConfig*> models() const;
  // nullptr when no model has that name.
  const ModelConfig* FindModel(const std::string& name) const;
  const RequestLimits& limits() const { return options_.limits; }

  // Queues a job. On OK the engine shares ownership of `listener`, has already called its
  // OnAccepted, and will end the job with exactly one OnResult or OnError. Otherwise the listener
  // hears nothing and the status says why: NOT_FOUND (unknown model), INVALID_ARGUMENT (a field,
  // see ValidateJobRequest), ALREADY_EXISTS (job id in use), RESOURCE_EXHAUSTED (queue full),
  // UNAVAILABLE (shutting down). Never blocks on the worker.
  absl::Status Submit(JobRequest request, std::shared_ptr<JobListener> listener);

  // Cancels a queued or running job: a queued one ends now, a running one at its next step
  // boundary, both with CANCELLED. False when no such job is queued or running.
  bool Cancel(const std::string& job_id);

  // Stops admission; queued jobs end now and the running one at its next step boundary, with
  // UNAVAILABLE; joins the worker. Idempotent.
  void Shutdown();

  int queue_depth() const;

 private:
  struct Job;
  enum class StopReason : int { kNone = 0, kCancelled = 1, kShutdown = 2 };

  explicit Engine(const Options& options, EngineObserver* observer);
  void WorkerLoop();
  std::shared_ptr<Job> NextJob();
  void RunJob(Job& job);
  void Finish(Job& job, absl::Status status, JobResult* result);
  ModelBundle* FindBundle(const std::string& name) const;

  const Options options_;
  EngineObserver* const observer_;  // Not owned; may be null.
  std::vector<std::unique_ptr<ModelBundle>> bundles_;  // Immutable after Create.

  mutable absl::Mutex mu_;
  // Invariant: every job in queue_ is in jobs_; jobs_ also holds the running job.
  std::deque<std::shared_ptr<Job>> queue_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::shared_ptr<Job>> jobs_ ABSL_GUARDED_BY(mu_);
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  std::thread worker_;
};

}  // namespace imagegen

#endif  // IMAGEGEN_CORE_ENGINE_ENGINE_H_
