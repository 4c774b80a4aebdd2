#include "core/engine/step_scheduler.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace imagegen {
namespace {

bool SameGroup(const JobRequest& a, const JobRequest& b) {
  return a.model == b.model && a.width == b.width && a.height == b.height;
}

}  // namespace

StepScheduler::StepScheduler(const Options& options, JobQueue* queue, Pipeline* pipeline,
                             const Clock* clock, EngineObserver* observer, StartFn on_start,
                             EndFn on_end)
    : options_(options),
      queue_(queue),
      pipeline_(pipeline),
      clock_(clock),
      observer_(observer),
      on_start_(std::move(on_start)),
      on_end_(std::move(on_end)) {}

int StepScheduler::running_rows() const {
  int rows = 0;
  for (const Running& r : running_) rows += r.job->rows();
  return rows;
}

bool StepScheduler::Tick() {
  ++tick_;
  std::vector<std::shared_ptr<Job>> expired = queue_->RemoveExpired(clock_->Now());
  for (std::shared_ptr<Job>& job : expired) {
    on_end_(*job, absl::DeadlineExceededError(absl::StrCat("job ", job->request.job_id,
                                                           " passed its deadline while queued")),
            nullptr);
  }
  Admit();
  EndStopped();
  if (running_.empty()) return false;
  StepBatch(PickBatch());
  return true;
}

void StepScheduler::Admit() {
  if (options_.request_level && !running_.empty()) return;
  int free_rows = options_.max_batch_rows - running_rows();
  const bool idle = running_.empty();
  bool first = true;
  std::vector<std::shared_ptr<Job>> jobs = queue_->PopWhile([&](const Job& job) {
    // A job larger than the whole budget still runs, alone, when the worker is idle.
    const bool fits = job.rows() <= free_rows || (idle && first);
    if (fits) free_rows -= job.rows();
    first = false;
    return fits;
  });
  if (jobs.empty()) return;

  for (const auto& job : jobs) on_start_(*job);

  struct Started {
    absl::StatusOr<std::unique_ptr<JobState>> state;
    absl::Time start;
    absl::Duration text_encode;
  };
  std::vector<Started> started(jobs.size());
  std::vector<bool> grouped(jobs.size(), false);
  for (size_t first = 0; first < jobs.size(); ++first) {
    if (grouped[first]) continue;
    // One Start per model: a failing text encoder fails only the new jobs of its own model.
    const std::string& model = jobs[first]->request.model;
    std::vector<size_t> group;
    std::vector<const JobRequest*> requests;
    for (size_t i = first; i < jobs.size(); ++i) {
      if (grouped[i] || jobs[i]->request.model != model) continue;
      grouped[i] = true;
      group.push_back(i);
      requests.push_back(&jobs[i]->request);
    }
    const absl::Time start = clock_->Now();
    std::vector<absl::StatusOr<std::unique_ptr<JobState>>> states = pipeline_->Start(requests);
    const absl::Duration text_encode = clock_->Now() - start;
    for (size_t k = 0; k < group.size(); ++k) started[group[k]] = {std::move(states[k]), start, text_encode};
  }
  // In admission order, as a single Start would have left them.
  for (size_t i = 0; i < jobs.size(); ++i) {
    if (!started[i].state.ok()) {
      on_end_(*jobs[i], started[i].state.status(), nullptr);
      continue;
    }
    running_.push_back(Running{jobs[i], *std::move(started[i].state), started[i].start, started[i].text_encode});
  }
}

absl::Status StepScheduler::StopStatus(const Job& job) const {
  const bool late = clock_->Now() >= job.request.deadline;
  switch (static_cast<StopReason>(job.stop.load())) {
    case StopReason::kCancelled:
      // gRPC also cancels a call whose deadline passed: that one ends DEADLINE_EXCEEDED below.
      if (!late) return absl::CancelledError(absl::StrCat("job ", job.request.job_id, " was cancelled"));
      break;
    case StopReason::kShutdown:
      return absl::UnavailableError("the server is shutting down");
    case StopReason::kNone:
    case StopReason::kFinishing:
      break;
  }
  if (late) {
    return absl::DeadlineExceededError(absl::StrCat("job ", job.request.job_id, " passed its deadline"));
  }
  return absl::OkStatus();
}

void StepScheduler::EndStopped() {
  for (size_t i = running_.size(); i-- > 0;) {
    if (absl::Status s = StopStatus(*running_[i].job); !s.ok()) End(i, s, nullptr);
  }
}

std::vector<size_t> StepScheduler::PickBatch() const {
  size_t lead = 0;
  for (size_t i = 1; i < running_.size(); ++i) {
    if (running_[i].last_tick < running_[lead].last_tick) lead = i;
  }
  // The lead's group, in admission order, within the row budget (the lead always goes).
  std::vector<size_t> batch;
  int rows = running_[lead].state->rows();
  for (size_t i = 0; i < running_.size(); ++i) {
    if (i == lead) {
      batch.push_back(i);
      continue;
    }
    if (!SameGroup(running_[i].job->request, running_[lead].job->request)) continue;
    if (rows + running_[i].state->rows() > options_.max_batch_rows) continue;
    rows += running_[i].state->rows();
    batch.push_back(i);
  }
  return batch;
}

void StepScheduler::StepBatch(const std::vector<size_t>& batch) {
  std::vector<JobState*> states;
  for (size_t i : batch) states.push_back(running_[i].state.get());
  const std::string& model = running_[batch.front()].job->request.model;
  const absl::Time start = clock_->Now();
  absl::StatusOr<int> rows = pipeline_->Step(states);
  if (!rows.ok()) {
    // Only the jobs in this call fail; the worker goes on with the others.
    std::vector<size_t> doomed = batch;
    std::sort(doomed.rbegin(), doomed.rend());
    for (size_t i : doomed) End(i, rows.status(), nullptr);
    return;
  }
  const absl::Duration duration = clock_->Now() - start;

  std::vector<size_t> finished;
  int steps_completed = 0;
  for (size_t i : batch) {
    Running& r = running_[i];
    r.last_tick = tick_;
    if (ReportProgress(r)) ++steps_completed;
    if (r.state->done()) finished.push_back(i);
  }
  if (observer_) observer_->OnModelCall(model, *rows, steps_completed, duration);
  std::sort(finished.rbegin(), finished.rend());  // End erases: go from the back
  for (size_t i : finished) FinishJob(i);
}

bool StepScheduler::ReportProgress(Running& r) {
  // One update per completed denoising step: a model call that only began a step (heun's first
  // half, pndm's warm-up) reports nothing.
  const int step = r.state->steps_done();
  if (step == r.reported_step) return false;
  r.reported_step = step;
  ProgressUpdate update;
  update.step = step;
  update.total_steps = r.state->total_steps();
  const int every = r.job->request.preview_every_n_steps;
  if (every > 0 && step % every == 0) {
    absl::StatusOr<std::vector<EncodedImage>> previews = pipeline_->Preview(*r.state);
    if (previews.ok()) {
      update.previews = *std::move(previews);
      if (r.first_preview && observer_) {
        observer_->OnFirstPreview(r.job->request.model, clock_->Now() - r.job->accepted_at);
      }
      r.first_preview = false;
    } else if (observer_) {
      // A preview is a courtesy: the job goes on without it, and the failure is counted and logged.
      observer_->OnPreviewFailed(r.job->request.model, r.job->request.job_id, previews.status());
    }
  }
  r.job->events.RecordProgress(std::move(update));
  r.job->events.Deliver();
  return true;
}

void StepScheduler::FinishJob(size_t index) {
  Running& r = running_[index];
  // Claim the result: a job cancelled (or shut down) during its last step ends as such, and
  // from here on Engine::Cancel answers that it is too late (CancelJob: NOT_FOUND).
  int expected = static_cast<int>(StopReason::kNone);
  if (!r.job->stop.compare_exchange_strong(expected, static_cast<int>(StopReason::kFinishing))) {
    End(index, StopStatus(*r.job), nullptr);
    return;
  }
  const absl::Time decode_start = clock_->Now();
  absl::StatusOr<std::vector<EncodedImage>> images = pipeline_->Finish(*r.state);
  if (!images.ok()) {
    End(index, images.status(), nullptr);
    return;
  }
  const JobRequest& request = r.job->request;
  JobResult result;
  result.job_id = request.job_id;
  result.images = *std::move(images);
  result.model = request.model;
  result.sampler = request.sampler;
  result.steps = request.steps;
  result.guidance_scale = request.guidance_scale;
  result.warnings = r.state->warnings();
  result.timings.queue = r.started - r.job->accepted_at;
  result.timings.decode = clock_->Now() - decode_start;
  result.timings.text_encode = r.text_encode;
  result.timings.denoise = decode_start - r.started - r.text_encode;
  result.timings.total = clock_->Now() - r.job->accepted_at;
  End(index, absl::OkStatus(), &result);
}

void StepScheduler::End(size_t index, absl::Status status, JobResult* result) {
  std::shared_ptr<Job> job = std::move(running_[index].job);
  running_.erase(running_.begin() + static_cast<std::ptrdiff_t>(index));  // frees its tensors
  on_end_(*job, std::move(status), result);
}

void StepScheduler::FailAll(const absl::Status& status) {
  while (!running_.empty()) End(running_.size() - 1, status, nullptr);
}

}  // namespace imagegen
