#include "core/engine/step_scheduler.h"

#include <algorithm>
#include <exception>

#include "absl/strings/str_cat.h"
#include "core/engine/model_failure.h"

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
    // One Start per model: a text encoder that throws fails only the new jobs of its own model.
    const std::string& model = jobs[first]->request.model;
    std::vector<size_t> group;
    std::vector<const JobRequest*> requests;
    for (size_t i = first; i < jobs.size(); ++i) {
      if (grouped[i] || jobs[i]->request.model != model) continue;
      grouped[i] = true;
      group.push_back(i);
      requests.push_back(&jobs[i]->request);
    }
    std::vector<absl::StatusOr<std::unique_ptr<JobState>>> states;
    const absl::Time start = clock_->Now();
    try {
      states = pipeline_->Start(requests);
    } catch (const std::exception& e) {
      const absl::Status failure = ModelFailure(model, e);
      states.clear();
      for (size_t k = 0; k < group.size(); ++k) states.push_back(failure);
    }
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
  int rows = 0;
  try {
    rows = pipeline_->Step(states);
  } catch (const std::exception& e) {
    // Only the jobs in this call fail; the worker goes on with the others.
    const absl::Status failure = ModelFailure(model, e);
    std::vector<size_t> doomed = batch;
    std::sort(doomed.rbegin(), doomed.rend());
    for (size_t i : doomed) End(i, failure, nullptr);
    return;
  }
  if (observer_) observer_->OnModelCall(model, rows, static_cast<int>(batch.size()), clock_->Now() - start);

  std::vector<size_t> finished;
  for (size_t i : batch) {
    Running& r = running_[i];
    r.last_tick = tick_;
    ProgressUpdate update;
    update.step = r.state->steps_done();
    update.total_steps = r.state->total_steps();
    const int every = r.job->request.preview_every_n_steps;
    if (every > 0 && update.step % every == 0) {
      try {
        auto previews = pipeline_->Preview(*r.state);
        if (previews.ok()) update.previews = *std::move(previews);
      } catch (const std::exception&) {
        // A preview is a courtesy: the job goes on without it.
      }
      if (!update.previews.empty() && r.first_preview && observer_) {
        observer_->OnFirstPreview(r.job->request.model, clock_->Now() - r.job->accepted_at);
      }
      r.first_preview = r.first_preview && update.previews.empty();
    }
    r.job->listener->OnProgress(std::move(update));
    if (r.state->done()) finished.push_back(i);
  }
  std::sort(finished.rbegin(), finished.rend());  // End erases: go from the back
  for (size_t i : finished) {
    Running& r = running_[i];
    // Claim the result: a job cancelled (or shut down) during its last step ends as such, and
    // from here on Engine::Cancel answers that it is too late (CancelJob: NOT_FOUND).
    int expected = static_cast<int>(StopReason::kNone);
    if (!r.job->stop.compare_exchange_strong(expected, static_cast<int>(StopReason::kFinishing))) {
      End(i, StopStatus(*r.job), nullptr);
      continue;
    }
    JobResult result;
    result.job_id = r.job->request.job_id;
    absl::StatusOr<std::vector<EncodedImage>> images;
    const absl::Time decode_start = clock_->Now();
    try {
      images = pipeline_->Finish(*r.state);
    } catch (const std::exception& e) {
      images = ModelFailure(r.job->request.model, e);
    }
    if (!images.ok()) {
      End(i, images.status(), nullptr);
      continue;
    }
    result.images = *std::move(images);
    result.timings.queue = r.started - r.job->accepted_at;
    result.timings.decode = clock_->Now() - decode_start;
    result.timings.text_encode = r.text_encode;
    result.timings.denoise = decode_start - r.started - r.text_encode;
    result.timings.total = clock_->Now() - r.job->accepted_at;
    End(i, absl::OkStatus(), &result);
  }
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
