// The engine: admission of generation jobs, and the workers that run them.
//
// Engine::Submit puts a job in a bounded priority queue (JobQueue; a full queue is refused at
// once). One worker thread per device runs a StepScheduler: every tick it admits queued jobs
// into its running set while they fit the row budget, and runs one batched UNet call over the
// running jobs that share a model and image size (step-level continuous batching). Each job's
// progress, previews and result go to its JobListener; what the engine does goes to an
// EngineObserver. Cancellation, a passed deadline or Shutdown end a job at its next step
// boundary (at once while it is queued).
#ifndef IMAGEGEN_CORE_ENGINE_ENGINE_H_
#define IMAGEGEN_CORE_ENGINE_ENGINE_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/engine/clock.h"
#include "core/engine/engine_observer.h"
#include "core/engine/job.h"
#include "core/engine/job_queue.h"
#include "core/model/model_config.h"
#include "core/model/precision.h"

namespace imagegen {

class ModelBundle;
class Pipeline;
class StepScheduler;

// Thread-safe. Owns the model bundles and the worker threads; the destructor shuts down.
class Engine {
 public:
  struct Options {
    // Jobs that may wait in the queue (running jobs not counted). A full queue refuses at once.
    int max_queue = 64;
    // Jobs one principal (JobRequest::principal) may have waiting; 0: no bound but max_queue.
    int max_queue_per_principal = 0;
    // One worker per device, each with its own model replicas: "cpu" or "cuda:N".
    std::vector<std::string> devices = {"cpu"};
    // What the modules compute in (cast at load; float16 and bfloat16 on CUDA devices only). The
    // samplers keep float32 latents and cast at the UNet's boundary (generation.h).
    Precision precision = Precision::kFloat32;
    // LibTorch intra-op threads of each worker; 0: LibTorch's default (one per physical core).
    // OpenMP settings are per thread: each worker sets its own.
    int intra_op_threads = 0;
    // LibTorch inter-op threads, process-wide; 0: LibTorch's default. Only the first engine of
    // a process sets it (LibTorch allows one setting, before any parallel work).
    int interop_threads = 0;
    // UNet rows per call (guidance counts two rows per image), a row of an image larger than the
    // model's default counting its pixels over the default's, rounded up (RowWeight, job.h); also
    // the plain rows of the jobs a worker runs at once.
    int max_batch_rows = 32;
    // How long an idle worker waits for queued rows to fill a first batch.
    absl::Duration max_queue_delay = absl::ZeroDuration();
    // Request-level batching (a batch forms, runs to the end, then the next) instead of
    // step-level batching; for comparison.
    bool request_level_batching = false;
    // A waiting job gains one priority level per `priority_aging` waited (JobQueue).
    absl::Duration priority_aging = absl::Seconds(10);
    RequestLimits limits;
  };

  // Loads each bundle in `bundle_dirs` once per device and starts the workers. Errors name the
  // bundle file at fault. `observer` may be null; otherwise it must outlive the engine.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const Options& options,
                                                        const std::vector<std::string>& bundle_dirs,
                                                        EngineObserver* observer);
  // Runs the engine over `pipelines` (one worker each) instead of loaded bundles: the tests' way
  // in, with fake pipelines and a fake clock. `models` are what the pipelines serve; `clock`
  // and the pipelines must outlive the engine. Workers run as with Create.
  static std::unique_ptr<Engine> CreateForTest(const Options& options, std::vector<ModelConfig> models,
                                               std::vector<Pipeline*> pipelines, const Clock* clock,
                                               EngineObserver* observer);
  ~Engine();

  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // The loaded models, in load order. Their configs are immutable.
  std::vector<const ModelConfig*> models() const;
  // nullptr when no model has that name.
  const ModelConfig* FindModel(const std::string& name) const;
  // The server's limits, as configured (0: per model).
  const RequestLimits& limits() const { return options_.limits; }
  // What a request for `model` may ask (ResolveLimits).
  RequestLimits LimitsFor(const ModelConfig& model) const { return ResolveLimits(options_.limits, model); }

  // Queues a job. On OK the engine shares ownership of `listener`, which hears OnAccepted before
  // any other event (JobEvents, job.h) and will hear exactly one OnResult or OnError. Otherwise
  // the listener hears nothing and the status says why: NOT_FOUND (unknown model),
  // INVALID_ARGUMENT (a field, see ValidateJobRequest), ALREADY_EXISTS (the principal already
  // has a queued or running job with that id), RESOURCE_EXHAUSTED (the queue or the principal's
  // share of it is full), UNAVAILABLE (shutting down). Never blocks on a worker, and
  // calls no listener under an engine lock (lock order in job.h).
  absl::Status Submit(JobRequest request, std::shared_ptr<JobListener> listener);

  // Cancels the principal's queued or running job `job_id` (another principal's job with that id
  // is not found): a queued one ends now, a running one at its next step
  // boundary, both with CANCELLED (DEADLINE_EXCEEDED once the job's deadline has passed, as when
  // gRPC cancels a call at its deadline). False when no such job is queued or running, or when
  // its end is already decided (its result is being decoded, or it failed). With `owner`, only
  // the job whose listener that is: a call cancels its own job, never a later one that reused
  // the id or the one whose id made it ALREADY_EXISTS.
  bool Cancel(const std::string& principal, const std::string& job_id, const JobListener* owner = nullptr);

  // Stops admission: Submit answers UNAVAILABLE from now on; queued and running jobs go on.
  void StopAccepting();
  // Blocks until no job is queued or running, or `deadline` passes. True when idle; by then the
  // observer has heard every job's end.
  bool WaitUntilIdle(absl::Time deadline);

  // Stops admission; queued jobs end now and running ones at their next step boundary, with
  // UNAVAILABLE; joins the workers. Idempotent.
  void Shutdown();

  int queue_depth() const { return queue_.size(); }

 private:
  Engine(const Options& options, const Clock* clock, EngineObserver* observer);
  void StartWorkers(std::vector<Pipeline*> pipelines, std::vector<std::string> devices);
  // `device` is the worker's ("" for a test's pipeline): its memory is reported while it works.
  void WorkerLoop(Pipeline* pipeline, const std::string& device);
  void OnJobStarted(Job& job);
  // Ends a job: observer, registry, then its listener.
  void Finish(Job& job, absl::Status status, JobResult* result);

  const Options options_;
  const Clock* const clock_;
  EngineObserver* const observer_;  // Not owned; may be null.
  RealClock real_clock_;
  std::vector<ModelConfig> configs_;  // Immutable after creation.
  std::vector<std::unique_ptr<ModelBundle>> bundles_;  // every device's replicas
  std::vector<std::unique_ptr<Pipeline>> owned_pipelines_;
  JobQueue queue_;

  mutable absl::Mutex mu_;
  // Every queued and running job by principal and id (for duplicates and Cancel).
  using JobKey = std::pair<std::string, std::string>;
  absl::flat_hash_map<JobKey, std::shared_ptr<Job>> jobs_ ABSL_GUARDED_BY(mu_);
  uint64_t next_sequence_ ABSL_GUARDED_BY(mu_) = 0;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  bool accepting_ ABSL_GUARDED_BY(mu_) = true;
  std::atomic<int> active_jobs_{0};
  std::atomic<bool> stop_workers_{false};
  std::vector<std::thread> workers_;
  bool joined_ = false;  // Shutdown's, under join_mu_
  absl::Mutex join_mu_;
};

}  // namespace imagegen

#endif  // IMAGEGEN_CORE_ENGINE_ENGINE_H_
