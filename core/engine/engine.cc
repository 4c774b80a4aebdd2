#include "core/engine/engine.h"

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include "absl/strings/str_cat.h"
#include "core/engine/generation.h"
#include "core/model/model_bundle.h"

namespace imagegen {

struct Engine::Job {
  JobRequest request;
  std::shared_ptr<JobListener> listener;
  absl::Time accepted_at;
  std::atomic<int> stop{static_cast<int>(StopReason::kNone)};
};

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

}  // namespace

Engine::Engine(const Options& options, EngineObserver* observer)
    : options_(options), observer_(observer) {}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const Options& options,
                                                      const std::vector<std::string>& bundle_dirs,
                                                      EngineObserver* observer) {
  if (options.max_queue < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_queue is ", options.max_queue, "; must be >= 1"));
  }
  if (bundle_dirs.empty()) return absl::InvalidArgumentError("no model bundles to load");
  std::unique_ptr<Engine> engine(new Engine(options, observer));
  for (const std::string& dir : bundle_dirs) {
    auto bundle = ModelBundle::Load(dir, options.device);
    if (!bundle.ok()) return bundle.status();
    if (engine->FindBundle((*bundle)->config().name) != nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(dir, "/model.json: name \"", (*bundle)->config().name,
                                                     "\" is already used by another bundle"));
    }
    engine->bundles_.push_back(*std::move(bundle));
  }
  engine->worker_ = std::thread([e = engine.get()] { e->WorkerLoop(); });
  return engine;
}

Engine::~Engine() { Shutdown(); }

std::vector<const ModelConfig*> Engine::models() const {
  std::vector<const ModelConfig*> out;
  for (const auto& b : bundles_) out.push_back(&b->config());
  return out;
}

const ModelConfig* Engine::FindModel(const std::string& name) const {
  ModelBundle* b = FindBundle(name);
  return b ? &b->config() : nullptr;
}

ModelBundle* Engine::FindBundle(const std::string& name) const {
  for (const auto& b : bundles_) {
    if (b->config().name == name) return b.get();
  }
  return nullptr;
}

int Engine::queue_depth() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(queue_.size());
}

absl::Status Engine::Submit(JobRequest request, std::shared_ptr<JobListener> listener) {
  const ModelConfig* model = FindModel(request.model);
  if (model == nullptr) return absl::NotFoundError(absl::StrCat("model \"", request.model, "\" is not loaded"));
  if (auto s = ValidateJobRequest(request, *model, options_.limits); !s.ok()) return s;

  auto job = std::make_shared<Job>();
  job->request = std::move(request);
  job->listener = std::move(listener);
  job->accepted_at = absl::Now();
  int depth;
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_) return absl::UnavailableError("the server is shutting down");
    if (static_cast<int>(queue_.size()) >= options_.max_queue) {
      if (observer_) observer_->OnJobRejected(job->request.model);
      return absl::ResourceExhaustedError(absl::StrCat("the queue is full (", options_.max_queue,
                                                       " jobs waiting); retry later"));
    }
    if (jobs_.contains(job->request.job_id)) {
      return absl::AlreadyExistsError(absl::StrCat("job_id \"", job->request.job_id,
                                                   "\" is already queued or running"));
    }
    // OnAccepted runs under the lock so that it precedes every event of the worker.
    job->listener->OnAccepted(job->request.job_id, static_cast<int>(queue_.size()));
    queue_.push_back(job);
    jobs_[job->request.job_id] = job;
    depth = static_cast<int>(queue_.size());
  }
  if (observer_) observer_->OnQueueDepth(depth);
  return absl::OkStatus();
}

bool Engine::Cancel(const std::string& job_id) {
  std::shared_ptr<Job> queued;
  int depth;
  {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(job_id);
    if (it == jobs_.end()) return false;
    std::shared_ptr<Job> job = it->second;
    auto q = std::find(queue_.begin(), queue_.end(), job);
    if (q == queue_.end()) {  // Running: the worker sees the flag at the next step boundary.
      job->stop.store(static_cast<int>(StopReason::kCancelled));
      return true;
    }
    queue_.erase(q);
    jobs_.erase(it);
    queued = std::move(job);
    depth = static_cast<int>(queue_.size());
  }
  if (observer_) observer_->OnQueueDepth(depth);
  Finish(*queued, absl::CancelledError(absl::StrCat("job ", job_id, " was cancelled")), nullptr);
  return true;
}

void Engine::Shutdown() {
  std::deque<std::shared_ptr<Job>> queued;
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_) {
      // A second caller still waits for the worker below; join only once.
    } else {
      shutting_down_ = true;
      queued.swap(queue_);
      for (const auto& job : queued) jobs_.erase(job->request.job_id);
      for (auto& [id, job] : jobs_) job->stop.store(static_cast<int>(StopReason::kShutdown));
    }
  }
  for (const auto& job : queued) Finish(*job, absl::UnavailableError("the server is shutting down"), nullptr);
  if (!queued.empty() && observer_) observer_->OnQueueDepth(0);
  if (worker_.joinable() && worker_.get_id() != std::this_thread::get_id()) worker_.join();
}

std::shared_ptr<Engine::Job> Engine::NextJob() {
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return shutting_down_ || !queue_.empty(); };
  absl::MutexLock lock(&mu_, absl::Condition(&ready));
  if (shutting_down_) return nullptr;
  std::shared_ptr<Job> job = queue_.front();
  queue_.pop_front();
  if (observer_) {
    observer_->OnQueueDepth(static_cast<int>(queue_.size()));
    observer_->OnActiveJobs(1);
  }
  return job;
}

void Engine::WorkerLoop() {
  // Thread settings are per thread under OpenMP: set them on the thread that runs the models.
  if (options_.intra_op_threads > 0) at::set_num_threads(options_.intra_op_threads);
  c10::InferenceMode inference_mode;
  while (std::shared_ptr<Job> job = NextJob()) {
    RunJob(*job);  // Finish has removed it from jobs_.
    if (observer_) observer_->OnActiveJobs(0);
  }
}

void Engine::RunJob(Job& job) {
  const JobRequest& r = job.request;
  JobResult result;
  result.job_id = r.job_id;
  const absl::Time started = absl::Now();
  result.timings.queue = started - job.accepted_at;
  if (observer_) observer_->OnJobStarted(r.model, result.timings.queue);

  // Why the job must stop now, if it must: checked before it starts and between steps.
  auto stop_status = [&]() -> absl::Status {
    switch (static_cast<StopReason>(job.stop.load())) {
      case StopReason::kCancelled: return absl::CancelledError(absl::StrCat("job ", r.job_id, " was cancelled"));
      case StopReason::kShutdown: return absl::UnavailableError("the server is shutting down");
      case StopReason::kNone: break;
    }
    if (absl::Now() >= r.deadline) {
      return absl::DeadlineExceededError(absl::StrCat("job ", r.job_id, " passed its deadline"));
    }
    return absl::OkStatus();
  };
  if (auto s = stop_status(); !s.ok()) return Finish(job, s, nullptr);

  ModelBundle* bundle = FindBundle(r.model);
  std::unique_ptr<Generation> generation;
  // LibTorch errors are caught here, once per model call, and fail only this job.
  try {
    auto g = Generation::Start(bundle, r);
    if (!g.ok()) return Finish(job, g.status(), nullptr);
    generation = *std::move(g);
    result.timings.text_encode = absl::Now() - started;

    bool first_preview = true;
    while (!generation->done()) {
      if (auto s = stop_status(); !s.ok()) return Finish(job, s, nullptr);
      const absl::Time step_start = absl::Now();
      const int rows = Generation::DenoiseStep({generation.get()});
      if (observer_) observer_->OnModelCall(r.model, rows, 1, absl::Now() - step_start);

      ProgressUpdate update;
      update.step = generation->steps_done();
      update.total_steps = generation->total_steps();
      if (r.preview_every_n_steps > 0 && update.step % r.preview_every_n_steps == 0) {
        auto previews = generation->Preview();
        if (!previews.ok()) return Finish(job, previews.status(), nullptr);
        update.previews = *std::move(previews);
        if (first_preview && observer_) observer_->OnFirstPreview(r.model, absl::Now() - job.accepted_at);
        first_preview = false;
      }
      job.listener->OnProgress(std::move(update));
    }
    result.timings.denoise = absl::Now() - started - result.timings.text_encode;

    const absl::Time decode_start = absl::Now();
    auto images = generation->Decode();
    if (!images.ok()) return Finish(job, images.status(), nullptr);
    result.images = *std::move(images);
    result.timings.decode = absl::Now() - decode_start;
  } catch (const c10::Error& e) {
    return Finish(job, absl::InternalError(absl::StrCat("model ", r.model, " failed: ", e.what_without_backtrace())),
                  nullptr);
  } catch (const std::exception& e) {
    return Finish(job, absl::InternalError(absl::StrCat("model ", r.model, " failed: ", e.what())), nullptr);
  }
  result.timings.total = absl::Now() - job.accepted_at;
  Finish(job, absl::OkStatus(), &result);
}

void Engine::Finish(Job& job, absl::Status status, JobResult* result) {
  {
    // Free the id before the listener hears the end: a client told its job is over may reuse
    // the id (or find CancelJob answering NOT_FOUND) at once. A queued job was removed by its
    // canceller; compare pointers so that a newer job with the same id stays.
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(job.request.job_id);
    if (it != jobs_.end() && it->second.get() == &job) jobs_.erase(it);
  }
  const absl::Duration total = absl::Now() - job.accepted_at;
  const int images = result ? static_cast<int>(result->images.size()) : 0;
  if (observer_) observer_->OnJobFinished(job.request.model, OutcomeOf(status), total, images);
  if (status.ok()) {
    job.listener->OnResult(std::move(*result));
  } else {
    job.listener->OnError(std::move(status));
  }
}

}  // namespace imagegen
