#include "tests/support/fake_job_listener.h"

#include <gtest/gtest.h>

#include "tests/support/test_bundle.h"

namespace imagegen::test {

void FakeJobListener::BlockAtStep(int step) {
  absl::MutexLock lock(&mu_);
  block_at_step_ = step;
}

bool FakeJobListener::WaitUntilBlocked() { return blocked_.WaitForNotificationWithTimeout(kTestTimeout); }

void FakeJobListener::Release() {
  if (!release_.HasBeenNotified()) release_.Notify();
}

bool FakeJobListener::WaitForEnd() { return ended_.WaitForNotificationWithTimeout(kTestTimeout); }

std::vector<FakeJobListener::Event> FakeJobListener::events() const {
  absl::MutexLock lock(&mu_);
  return events_;
}

std::string FakeJobListener::accepted_job_id() const {
  absl::MutexLock lock(&mu_);
  return accepted_job_id_;
}

int FakeJobListener::accepted_position() const {
  absl::MutexLock lock(&mu_);
  return accepted_position_;
}

std::vector<ProgressUpdate> FakeJobListener::progress() const {
  absl::MutexLock lock(&mu_);
  return progress_;
}

std::vector<int> FakeJobListener::progress_steps() const {
  absl::MutexLock lock(&mu_);
  std::vector<int> steps;
  for (const ProgressUpdate& p : progress_) steps.push_back(p.step);
  return steps;
}

std::optional<JobResult> FakeJobListener::result() const {
  absl::MutexLock lock(&mu_);
  return result_;
}

absl::Status FakeJobListener::final_status() const {
  absl::MutexLock lock(&mu_);
  return status_;
}

int FakeJobListener::terminal_events() const {
  absl::MutexLock lock(&mu_);
  return terminal_events_;
}

void FakeJobListener::OnAccepted(const std::string& job_id, int queue_position) {
  absl::MutexLock lock(&mu_);
  events_.push_back(Event::kAccepted);
  accepted_job_id_ = job_id;
  accepted_position_ = queue_position;
}

void FakeJobListener::OnProgress(ProgressUpdate update) {
  bool block;
  {
    absl::MutexLock lock(&mu_);
    events_.push_back(Event::kProgress);
    block = block_at_step_ != 0 && update.step == block_at_step_;
    progress_.push_back(std::move(update));
  }
  if (block) {
    blocked_.Notify();
    // The deliberate contract violation described in the header.
    release_.WaitForNotificationWithTimeout(kTestTimeout);
  }
}

void FakeJobListener::OnResult(JobResult result) {
  {
    absl::MutexLock lock(&mu_);
    events_.push_back(Event::kResult);
    result_ = std::move(result);
    status_ = absl::OkStatus();
    ++terminal_events_;
  }
  if (!ended_.HasBeenNotified()) ended_.Notify();
}

void FakeJobListener::OnError(absl::Status status) {
  {
    absl::MutexLock lock(&mu_);
    events_.push_back(Event::kError);
    status_ = std::move(status);
    ++terminal_events_;
  }
  if (!ended_.HasBeenNotified()) ended_.Notify();
}

void FakeJobListener::OnQueuePosition(int queue_position) {
  absl::MutexLock lock(&mu_);
  queue_positions_.push_back(queue_position);
}

std::vector<int> FakeJobListener::queue_positions() const {
  absl::MutexLock lock(&mu_);
  return queue_positions_;
}

std::shared_ptr<FakeJobListener> PinWorker(Engine& engine, const std::string& job_id) {
  auto listener = std::make_shared<FakeJobListener>();
  listener->BlockAtStep(1);
  const absl::Status status = engine.Submit(TinyJobRequest(job_id, 5), listener);
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_TRUE(status.ok() && listener->WaitUntilBlocked()) << "the worker never started the pinning job";
  return listener;
}

}  // namespace imagegen::test
