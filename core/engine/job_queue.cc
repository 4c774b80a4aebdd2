#include "core/engine/job_queue.h"

#include "absl/strings/str_cat.h"

namespace imagegen {

JobQueue::JobQueue(int capacity, absl::Duration aging, const Clock* clock, std::function<void(int)> on_size)
    : capacity_(capacity), aging_(aging), clock_(clock), on_size_(std::move(on_size)) {}

double JobQueue::Key(const Job& job) const {
  // priority + (now - accepted) / aging, less the common now / aging: fixed while it waits.
  return job.request.priority - absl::ToUnixMicros(job.accepted_at) / absl::ToDoubleMicroseconds(aging_);
}

bool JobQueue::Order::operator()(const std::shared_ptr<Job>& a, const std::shared_ptr<Job>& b) const {
  // The comparator cannot reach the queue's aging: Push stores the key in the job first.
  if (a->queue_key != b->queue_key) return a->queue_key > b->queue_key;
  return a->sequence < b->sequence;
}

absl::Status JobQueue::Push(std::shared_ptr<Job> job) {
  absl::MutexLock lock(&mu_);
  if (closed_) return absl::UnavailableError("the server is shutting down");
  if (static_cast<int>(jobs_.size()) >= capacity_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the queue is full (", capacity_, " jobs waiting); retry later or elsewhere"));
  }
  job->queue_key = Key(*job);
  auto [it, inserted] = jobs_.insert(job);
  queued_rows_ += job->rows();
  const int position = static_cast<int>(std::distance(jobs_.begin(), it));
  job->last_position = position;
  job->listener->OnAccepted(job->request.job_id, position);
  Changed();
  return absl::OkStatus();
}

std::vector<std::shared_ptr<Job>> JobQueue::PopWhile(const std::function<bool(const Job&)>& fits) {
  absl::MutexLock lock(&mu_);
  std::vector<std::shared_ptr<Job>> out;
  while (!jobs_.empty() && fits(**jobs_.begin())) {
    out.push_back(*jobs_.begin());
    queued_rows_ -= out.back()->rows();
    jobs_.erase(jobs_.begin());
  }
  if (!out.empty()) Changed();
  return out;
}

std::shared_ptr<Job> JobQueue::Remove(const std::string& job_id, const JobListener* owner) {
  absl::MutexLock lock(&mu_);
  for (auto it = jobs_.begin(); it != jobs_.end(); ++it) {
    if ((*it)->request.job_id == job_id && (owner == nullptr || (*it)->listener.get() == owner)) {
      std::shared_ptr<Job> job = *it;
      queued_rows_ -= job->rows();
      jobs_.erase(it);
      Changed();
      return job;
    }
  }
  return nullptr;
}

std::vector<std::shared_ptr<Job>> JobQueue::RemoveExpired(absl::Time now) {
  absl::MutexLock lock(&mu_);
  std::vector<std::shared_ptr<Job>> out;
  for (auto it = jobs_.begin(); it != jobs_.end();) {
    if ((*it)->request.deadline <= now) {
      queued_rows_ -= (*it)->rows();
      out.push_back(*it);
      it = jobs_.erase(it);
    } else {
      ++it;
    }
  }
  if (!out.empty()) Changed();
  return out;
}

std::vector<std::shared_ptr<Job>> JobQueue::Close() {
  absl::MutexLock lock(&mu_);
  closed_ = true;
  std::vector<std::shared_ptr<Job>> out(jobs_.begin(), jobs_.end());
  jobs_.clear();
  queued_rows_ = 0;
  Changed();
  return out;
}

bool JobQueue::WaitForJob(absl::Time deadline) {
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return closed_ || !jobs_.empty(); };
  absl::MutexLock lock(&mu_);
  mu_.AwaitWithDeadline(absl::Condition(&ready), deadline);
  return !closed_ && !jobs_.empty();
}

void JobQueue::WaitForRows(int rows, absl::Time deadline) {
  auto ready = [this, rows]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return closed_ || queued_rows_ >= rows; };
  absl::MutexLock lock(&mu_);
  mu_.AwaitWithDeadline(absl::Condition(&ready), deadline);
}

int JobQueue::size() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(jobs_.size());
}

bool JobQueue::closed() const {
  absl::MutexLock lock(&mu_);
  return closed_;
}

void JobQueue::Changed() {
  int position = 0;
  for (const std::shared_ptr<Job>& job : jobs_) {
    if (job->last_position != position) {
      job->last_position = position;
      job->listener->OnQueuePosition(position);
    }
    ++position;
  }
  if (on_size_) on_size_(static_cast<int>(jobs_.size()));
}

}  // namespace imagegen
