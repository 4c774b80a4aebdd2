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

void FakeEngineObserver::OnJobRejected(const std::string&) {
  absl::MutexLock lock(&mu_);
  ++rejected_;
}

void FakeEngineObserver::OnJobStarted(const std::string&, absl::Duration) {
  absl::MutexLock lock(&mu_);
  ++started_;
}

void FakeEngineObserver::OnModelCall(const std::string&, int rows, int, absl::Duration) {
  absl::MutexLock lock(&mu_);
  rows_.push_back(rows);
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

}  // namespace imagegen::test
