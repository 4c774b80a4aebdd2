#include "tests/support/fake_engine_observer.h"

namespace imagegen::test {

int FakeEngineObserver::jobs_finished(JobOutcome outcome) const {
  absl::MutexLock lock(&mu_);
  auto it = finished_.find(outcome);
  return it == finished_.end() ? 0 : it->second;
}

int FakeEngineObserver::jobs_started() const {
  absl::MutexLock lock(&mu_);
  return started_;
}

int FakeEngineObserver::jobs_rejected() const {
  absl::MutexLock lock(&mu_);
  return rejected_;
}

int FakeEngineObserver::first_previews() const {
  absl::MutexLock lock(&mu_);
  return first_previews_;
}

int FakeEngineObserver::images_finished() const {
  absl::MutexLock lock(&mu_);
  return images_;
}

std::vector<int> FakeEngineObserver::model_call_rows() const {
  absl::MutexLock lock(&mu_);
  return rows_;
}

std::vector<int> FakeEngineObserver::model_call_steps() const {
  absl::MutexLock lock(&mu_);
  return steps_;
}

std::vector<std::string> FakeEngineObserver::preview_failures() const {
  absl::MutexLock lock(&mu_);
  return preview_failures_;
}

void FakeEngineObserver::OnPreviewFailed(const std::string&, const std::string& job_id, const absl::Status&) {
  absl::MutexLock lock(&mu_);
  preview_failures_.push_back(job_id);
}

void FakeEngineObserver::OnJobRejected(const std::string&) {
  absl::MutexLock lock(&mu_);
  ++rejected_;
}

void FakeEngineObserver::OnJobStarted(const std::string&, absl::Duration) {
  absl::MutexLock lock(&mu_);
  ++started_;
}

void FakeEngineObserver::OnModelCall(const std::string&, int rows, int job_steps, absl::Duration) {
  absl::MutexLock lock(&mu_);
  rows_.push_back(rows);
  steps_.push_back(job_steps);
}

void FakeEngineObserver::OnFirstPreview(const std::string&, absl::Duration) {
  absl::MutexLock lock(&mu_);
  ++first_previews_;
}

void FakeEngineObserver::OnJobFinished(const std::string&, JobOutcome outcome, absl::Duration, int images) {
  absl::MutexLock lock(&mu_);
  ++finished_[outcome];
  images_ += images;
}

std::vector<int> FakeEngineObserver::batch_splits() const {
  absl::MutexLock lock(&mu_);
  return batch_splits_;
}

void FakeEngineObserver::OnBatchSplit(const std::string&, int rows) {
  absl::MutexLock lock(&mu_);
  batch_splits_.push_back(rows);
}

}  // namespace imagegen::test
