#include "core/engine/step_scheduler.h"

#include <algorithm>
#include <optional>

#include "absl/strings/str_cat.h"
#include "core/image/image_codec.h"

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

int StepScheduler::RowsOf(const std::string& principal) const {
  int rows = 0;
  for (const Running& r : running_) {
    if (r.job->request.principal == principal) rows += r.job->rows();
  }
  return rows;
}

void StepScheduler::Admit() {
  if (options_.request_level && !running_.empty()) return;
  int free_rows = options_.max_batch_rows - running_rows();
  const bool idle = running_.empty();
  bool first = true;
  absl::flat_hash_map<std::string, int> rows;  // per principal: running here, and taken now
  auto rows_of = [&](const std::string& principal) -> int& {
    auto [it, inserted] = rows.try_emplace(principal, 0);
    if (inserted) it->second = RowsOf(principal);
    return it->second;
  };
  std::vector<std::shared_ptr<Job>> jobs = queue_->PopWhile(
      [&](const Job& job) {
        int& mine = rows_of(job.request.principal);
        // A job larger than the whole budget still runs, alone, when the worker is idle; a
        // principal with nothing running here gets one job in whatever the budget.
        const bool fits = job.rows() <= free_rows || (idle && first) || (mine == 0 && !options_.request_level);
        if (fits) {
          free_rows -= job.rows();
          mine += job.rows();
        }
        first = false;
        return fits;
      },
      [&](const std::string& principal) -> int64_t { return rows_of(principal); });
  if (!jobs.empty()) Start(jobs);
}

void StepScheduler::Start(const std::vector<std::shared_ptr<Job>>& jobs) {
  for (const auto& job : jobs) on_start_(*job);

  // Init images arrive encoded: decoded here, off the RPC threads, bounded to the size their
  // header declared (which validation checked). The decoded copy lives until Start has made its
  // tensors.
  std::vector<std::optional<JobRequest>> decoded(jobs.size());
  std::vector<absl::Status> refused(jobs.size());
  for (size_t i = 0; i < jobs.size(); ++i) {
    const JobRequest& r = jobs[i]->request;
    if (r.init_image_encoded.empty()) continue;
    absl::StatusOr<RasterImage> image =
        DecodeImage(r.init_image_encoded, DecodeLimits{std::max(r.width, r.height), int64_t{r.width} * r.height});
    if (!image.ok()) {
      refused[i] = absl::InvalidArgumentError(absl::StrCat("init_image (", r.init_image_encoded.size(), " bytes) is ",
                                                           image.status().message(), "; allowed: a PNG or JPEG"));
      continue;
    }
    decoded[i].emplace(r);
    decoded[i]->init_image_encoded.clear();
    decoded[i]->init_image = *std::move(image);
  }

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
      if (!refused[i].ok()) {
        started[i].state = refused[i];
        continue;
      }
      group.push_back(i);
      requests.push_back(decoded[i] ? &*decoded[i] : &jobs[i]->request);
    }
    if (group.empty()) continue;
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
    const std::string& principal = jobs[i]->request.principal;
    if (!charged_.contains(principal)) {
      // Starts running again: charged from the least charge of those running, less the last
      // call's time (the call it waited for), so it runs that long before the others go on; no
      // credit banked while idle.
      double least = 0;
      bool any = false;
      for (const auto& [p, c] : charged_) {
        least = any ? std::min(least, c) : c;
        any = true;
      }
      charged_[principal] = any ? least - absl::ToDoubleSeconds(last_call_) : 0;
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
  // The lead: the job whose principal was charged least; then the one that waited longest.
  auto charge = [this](const Running& r) {
    auto it = charged_.find(r.job->request.principal);
    return it == charged_.end() ? 0.0 : it->second;
  };
  size_t lead = 0;
  for (size_t i = 1; i < running_.size(); ++i) {
    const double a = charge(running_[i]);
    const double b = charge(running_[lead]);
    if (a < b || (a == b && running_[i].last_tick < running_[lead].last_tick)) lead = i;
  }
  // The lead's group, in admission order, within the row budget of a call, where rows of large
  // images count more (Job::budget_rows), so that a call costs about what a call of default-size
  // rows does (the lead always goes).
  std::vector<size_t> batch;
  int rows = running_[lead].job->budget_rows();
  for (size_t i = 0; i < running_.size(); ++i) {
    if (i == lead) {
      batch.push_back(i);
      continue;
    }
    if (!SameGroup(running_[i].job->request, running_[lead].job->request)) continue;
    if (rows + running_[i].job->budget_rows() > options_.max_batch_rows) continue;
    rows += running_[i].job->budget_rows();
    batch.push_back(i);
  }
  return batch;
}

void StepScheduler::StepBatch(const std::vector<size_t>& batch) {
  std::vector<std::pair<size_t, absl::Status>> ends;  // failed, then the finished (OK) ones
  CallModel(batch, &ends);
  const size_t failed = ends.size();
  for (size_t i : batch) {
    const bool failed_call =
        std::any_of(ends.begin(), ends.begin() + static_cast<std::ptrdiff_t>(failed), [i](const auto& e) { return e.first == i; });
    if (!failed_call && running_[i].state->done()) ends.emplace_back(i, absl::OkStatus());
  }
  // End erases: go from the back.
  std::sort(ends.begin(), ends.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  for (auto& [i, status] : ends) {
    if (status.ok()) {
      FinishJob(i);
    } else {
      End(i, std::move(status), nullptr);
    }
  }
}

void StepScheduler::CallModel(const std::vector<size_t>& part,
                              std::vector<std::pair<size_t, absl::Status>>* failed) {
  std::vector<JobState*> states;
  int call_rows = 0;
  for (size_t i : part) {
    states.push_back(running_[i].state.get());
    call_rows += running_[i].state->rows();
  }
  const std::string& model = running_[part.front()].job->request.model;
  const absl::Time start = clock_->Now();
  absl::StatusOr<int> rows = pipeline_->Step(states);
  if (!rows.ok()) {
    if (rows.status().code() == absl::StatusCode::kResourceExhausted && part.size() > 1) {
      if (observer_) observer_->OnBatchSplit(model, call_rows);
      const auto middle = part.begin() + static_cast<std::ptrdiff_t>(part.size() / 2);
      CallModel(std::vector<size_t>(part.begin(), middle), failed);
      CallModel(std::vector<size_t>(middle, part.end()), failed);
      return;
    }
    // Only the jobs in this call fail; the worker goes on with the others.
    for (size_t i : part) failed->emplace_back(i, rows.status());
    return;
  }
  const absl::Duration duration = clock_->Now() - start;
  last_call_ = duration;
  int steps_completed = 0;
  for (size_t i : part) {
    Running& r = running_[i];
    r.last_tick = tick_;
    charged_[r.job->request.principal] += absl::ToDoubleSeconds(duration) * r.state->rows() / std::max(*rows, 1);
    if (ReportProgress(r)) ++steps_completed;
  }
  if (observer_) observer_->OnModelCall(model, *rows, steps_completed, duration);
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
  const int upcasts = running_[index].state->vae_upcasts();
  running_.erase(running_.begin() + static_cast<std::ptrdiff_t>(index));  // frees its tensors
  if (upcasts > 0 && observer_) observer_->OnVaeUpcast(job->request.model, upcasts);
  bool still_running = false;
  for (const Running& r : running_) still_running = still_running || r.job->request.principal == job->request.principal;
  if (!still_running) charged_.erase(job->request.principal);
  on_end_(*job, std::move(status), result);
}

void StepScheduler::FailAll(const absl::Status& status) {
  while (!running_.empty()) End(running_.size() - 1, status, nullptr);
}

}  // namespace imagegen
