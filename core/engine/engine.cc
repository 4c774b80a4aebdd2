#include "core/engine/engine.h"

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <mutex>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/engine/device_memory.h"
#include "core/engine/generation.h"
#include "core/engine/step_scheduler.h"
#include "core/model/model_bundle.h"

namespace imagegen {
namespace {

JobOutcome OutcomeOf(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk: return JobOutcome::kOk;
    case absl::StatusCode::kCancelled: return JobOutcome::kCancelled;
    case absl::StatusCode::kDeadlineExceeded: return JobOutcome::kDeadlineExceeded;
    case absl::StatusCode::kUnavailable: return JobOutcome::kUnavailable;
    default: return JobOutcome::kFailed;
  }
}

// at::set_num_interop_threads may be called once per process, before any inter-op work.
void SetInteropThreadsOnce(int threads) {
  static std::once_flag once;
  std::call_once(once, [threads] {
    try {
      at::set_num_interop_threads(threads);
    } catch (const std::exception&) {
      // Parallel work already started in this process (a test's earlier engine): keep LibTorch's.
    }
  });
}

}  // namespace

Engine::Engine(const Options& options, const Clock* clock, EngineObserver* observer)
    : options_(options),
      clock_(clock != nullptr ? clock : &real_clock_),
      observer_(observer),
      queue_(options.max_queue, options.max_queue_per_principal, options.priority_aging, clock_, [observer](int size) {
        if (observer != nullptr) observer->OnQueueDepth(size);
      }) {}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const Options& options,
                                                      const std::vector<std::string>& bundle_dirs,
                                                      EngineObserver* observer) {
  if (options.max_queue < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_queue is ", options.max_queue, "; must be >= 1"));
  }
  if (options.max_queue_per_principal < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_queue_per_principal is ", options.max_queue_per_principal, "; must be >= 0"));
  }
  if (options.max_batch_rows < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_batch_rows is ", options.max_batch_rows, "; must be >= 1"));
  }
  if (options.devices.empty()) return absl::InvalidArgumentError("no devices to run on");
  if (bundle_dirs.empty()) return absl::InvalidArgumentError("no model bundles to load");
  if (options.interop_threads > 0) SetInteropThreadsOnce(options.interop_threads);
  std::unique_ptr<Engine> engine(new Engine(options, nullptr, observer));
  std::vector<Pipeline*> pipelines;
  for (const std::string& device : options.devices) {
    std::vector<ModelBundle*> replicas;
    for (const std::string& dir : bundle_dirs) {
      auto bundle = ModelBundle::Load(dir, device, options.precision);
      if (!bundle.ok()) return bundle.status();
      replicas.push_back(bundle->get());
      if (device == options.devices.front()) {
        for (const ModelConfig& c : engine->configs_) {
          if (c.name == (*bundle)->config().name) {
            return absl::InvalidArgumentError(absl::StrCat(dir, "/model.json: name \"", c.name,
                                                           "\" is already used by another bundle"));
          }
        }
        engine->configs_.push_back((*bundle)->config());
      }
      engine->bundles_.push_back(*std::move(bundle));
    }
    engine->owned_pipelines_.push_back(std::make_unique<GenerationPipeline>(std::move(replicas)));
    pipelines.push_back(engine->owned_pipelines_.back().get());
  }
  engine->StartWorkers(std::move(pipelines), options.devices);
  return engine;
}

std::unique_ptr<Engine> Engine::CreateForTest(const Options& options, std::vector<ModelConfig> models,
                                              std::vector<Pipeline*> pipelines, const Clock* clock,
                                              EngineObserver* observer) {
  std::unique_ptr<Engine> engine(new Engine(options, clock, observer));
  engine->configs_ = std::move(models);
  engine->StartWorkers(std::move(pipelines), {});
  return engine;
}

void Engine::StartWorkers(std::vector<Pipeline*> pipelines, std::vector<std::string> devices) {
  devices.resize(pipelines.size());
  for (size_t i = 0; i < pipelines.size(); ++i) {
    workers_.emplace_back([this, pipeline = pipelines[i], device = devices[i]] { WorkerLoop(pipeline, device); });
  }
}

Engine::~Engine() { Shutdown(); }

std::vector<const ModelConfig*> Engine::models() const {
  std::vector<const ModelConfig*> out;
  for (const ModelConfig& c : configs_) out.push_back(&c);
  return out;
}

const ModelConfig* Engine::FindModel(const std::string& name) const {
  for (const ModelConfig& c : configs_) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

absl::Status Engine::Submit(JobRequest request, std::shared_ptr<JobListener> listener) {
  const ModelConfig* model = FindModel(request.model);
  if (model == nullptr) return absl::NotFoundError(absl::StrCat("model \"", request.model, "\" is not loaded"));
  if (auto s = ValidateJobRequest(request, *model, options_.limits); !s.ok()) return s;

  auto job = std::make_shared<Job>(std::move(listener));
  job->row_weight = RowWeight(request, *model);
  job->request = std::move(request);
  job->accepted_at = clock_->Now();
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_) return absl::UnavailableError("the server is shutting down");
    if (!accepting_) return absl::UnavailableError("the server is draining; retry on another replica");
    if (jobs_.contains(JobKey(job->request.principal, job->request.job_id))) {
      return absl::AlreadyExistsError(absl::StrCat("job_id \"", job->request.job_id,
                                                   "\" is already one of your queued or running jobs"));
    }
    job->sequence = next_sequence_++;
    // Registered before it is queued, so that a worker that takes it at once finds it.
    jobs_[JobKey(job->request.principal, job->request.job_id)] = job;
  }
  if (absl::Status s = queue_.Push(job); !s.ok()) {
    absl::MutexLock lock(&mu_);
    jobs_.erase(JobKey(job->request.principal, job->request.job_id));
    if (s.code() == absl::StatusCode::kResourceExhausted && observer_) observer_->OnJobRejected(job->request.model);
    return s;
  }
  return absl::OkStatus();
}

bool Engine::Cancel(const std::string& principal, const std::string& job_id, const JobListener* owner) {
  if (std::shared_ptr<Job> queued = queue_.Remove(principal, job_id, owner)) {
    // gRPC cancels a call whose deadline passed: end it as what it is (StepScheduler::StopStatus
    // does the same for a running job).
    Finish(*queued,
           clock_->Now() >= queued->request.deadline
               ? absl::DeadlineExceededError(absl::StrCat("job ", job_id, " passed its deadline while queued"))
               : absl::CancelledError(absl::StrCat("job ", job_id, " was cancelled")),
           nullptr);
    return true;
  }
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(JobKey(principal, job_id));
  if (it == jobs_.end() || (owner != nullptr && it->second->events.listener() != owner)) return false;
  // Running (or between the queue and a worker): the worker ends it at the next step boundary,
  // unless it has already claimed the job's result (kFinishing): then it is too late.
  return it->second->RequestStop(StopReason::kCancelled);
}

void Engine::StopAccepting() {
  absl::MutexLock lock(&mu_);
  accepting_ = false;
}

bool Engine::WaitUntilIdle(absl::Time deadline) {
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return jobs_.empty(); };
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithDeadline(absl::Condition(&idle), deadline);
}

void Engine::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    shutting_down_ = true;
    for (auto& [id, job] : jobs_) {
      // A cancelled job still ends CANCELLED, a finishing one delivers its result.
      job->RequestStop(StopReason::kShutdown);
    }
  }
  std::vector<std::shared_ptr<Job>> queued = queue_.Close();
  for (const auto& job : queued) Finish(*job, absl::UnavailableError("the server is shutting down"), nullptr);
  stop_workers_.store(true);
  absl::MutexLock lock(&join_mu_);
  if (joined_) return;
  for (std::thread& worker : workers_) {
    if (worker.joinable()) worker.join();
  }
  joined_ = true;
}

void Engine::WorkerLoop(Pipeline* pipeline, const std::string& device) {
  // Thread settings are per thread under OpenMP: set them on the thread that runs the models.
  if (options_.intra_op_threads > 0) at::set_num_threads(options_.intra_op_threads);
  c10::InferenceMode inference_mode;
  StepScheduler::Options options;
  options.max_batch_rows = options_.max_batch_rows;
  options.request_level = options_.request_level_batching;
  StepScheduler scheduler(
      options, &queue_, pipeline, clock_, observer_, [this](Job& job) { OnJobStarted(job); },
      [this](Job& job, absl::Status status, JobResult* result) { Finish(job, std::move(status), result); });
  const bool report_memory = observer_ != nullptr && absl::StartsWith(device, "cuda");
  absl::Time memory_reported = absl::InfinitePast();
  while (!stop_workers_.load()) {
    if (report_memory && absl::Now() - memory_reported >= absl::Seconds(1)) {
      for (const DeviceMemory& m : QueryDeviceMemory({device})) {
        observer_->OnDeviceMemory(m.device, m.allocated_bytes, m.reserved_bytes);
      }
      memory_reported = absl::Now();
    }
    if (scheduler.Tick()) continue;
    // Idle: wait for work, then give a first batch up to max_queue_delay to fill.
    if (queue_.WaitForJob(absl::Now() + absl::Milliseconds(100)) && options_.max_queue_delay > absl::ZeroDuration()) {
      queue_.WaitForRows(options_.max_batch_rows, absl::Now() + options_.max_queue_delay);
    }
  }
  scheduler.FailAll(absl::UnavailableError("the server is shutting down"));
}

void Engine::OnJobStarted(Job& job) {
  job.started_at = clock_->Now();
  job.started.store(true);
  const int active = ++active_jobs_;
  if (observer_) {
    observer_->OnActiveJobs(active);
    observer_->OnJobStarted(job.request.model, clock_->Now() - job.accepted_at);
  }
}

void Engine::Finish(Job& job, absl::Status status, JobResult* result) {
  // The end is decided here, once. A cancel that Cancel accepted before it wins over a failure
  // found since (CancelJob's OK promises CANCELLED); from here on Cancel answers false.
  // (A result is only delivered once its worker has claimed it, kFinishing, so an OK status
  // never meets a requested stop.)
  int stop = static_cast<int>(StopReason::kNone);
  if (!job.stop.compare_exchange_strong(stop, static_cast<int>(StopReason::kFinishing)) &&
      stop == static_cast<int>(StopReason::kCancelled) && !status.ok() &&
      status.code() != absl::StatusCode::kCancelled && status.code() != absl::StatusCode::kDeadlineExceeded) {
    status = absl::CancelledError(absl::StrCat("job ", job.request.job_id, " was cancelled"));
  }
  if (job.started.load()) {
    const int active = --active_jobs_;
    if (observer_) observer_->OnActiveJobs(active);
  }
  const absl::Duration total = clock_->Now() - job.accepted_at;
  const int images = result ? static_cast<int>(result->images.size()) : 0;
  if (observer_) {
    observer_->OnJobFinished(job.request.model, OutcomeOf(status), total, images);
    const absl::Duration queue = job.started.load() ? job.started_at - job.accepted_at : total;
    observer_->OnJobSummary({job.request.principal, job.request.job_id, job.request.model, OutcomeOf(status),
                             std::string(status.message()), queue, total - queue, images});
  }
  {
    // Free the id before the listener hears the end: a client told its job is over may reuse
    // the id (or find CancelJob answering NOT_FOUND) at once. After the observer, so that
    // whoever WaitUntilIdle lets go finds the metrics and the request log complete. Compare
    // pointers so that a newer job with the same id stays.
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(JobKey(job.request.principal, job.request.job_id));
    if (it != jobs_.end() && it->second.get() == &job) jobs_.erase(it);
  }
  std::optional<JobResult> delivered;
  if (status.ok() && result != nullptr) delivered = std::move(*result);
  job.events.RecordEnd(std::move(status), std::move(delivered));
  job.events.Deliver();
}

}  // namespace imagegen
