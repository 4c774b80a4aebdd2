#include "core/engine/job_queue.h"

#include "absl/strings/str_cat.h"

namespace imagegen {

JobQueue::JobQueue(int capacity, absl::Duration aging, const Clock* clock, std::function<void(int)> on_size)
    : capacity_(capacity), aging_(aging), clock_(clock), on_size_(std::move(on_size)) {}

double JobQueue::Key(const Job& job) const {
  // priority + (now - accepted) / aging, less the common now / aging: fixed while it waits.
  return job.request.priority - absl::ToUnixMicros(job.accepted_at) / absl::ToDoubleMicroseconds(aging_);
}

bool JobQueue::Order::operator()(const Entry& a, const Entry& b) const {
  if (a.key != b.key) return a.key > b.key;
  return a.sequence < b.sequence;
}

absl::Status JobQueue::Push(std::shared_ptr<Job> job) {
  std::vector<std::shared_ptr<Job>> notify;
  {
    absl::MutexLock lock(&mu_);
    if (closed_) return absl::UnavailableError("the server is shutting down");
    if (static_cast<int>(jobs_.size()) >= capacity_) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the queue is full (", capacity_, " jobs waiting); retry later or elsewhere"));
    }
    auto [it, inserted] = jobs_.insert(Entry{Key(*job), job->sequence, job, -1});
    queued_rows_ += job->rows();
    const int position = static_cast<int>(std::distance(jobs_.begin(), it));
    it->last_position = position;
    job->events.RecordAccepted(job->request.job_id, position);
    notify.push_back(job);
    Changed(&notify);
  }
  Deliver(notify);
  return absl::OkStatus();
}

std::shared_ptr<Job> JobQueue::Take(std::set<Entry, Order>::iterator it) {
  std::shared_ptr<Job> job = it->job;
  queued_rows_ -= job->rows();
  jobs_.erase(it);
  job->events.RecordLeftQueue();
  return job;
}

std::vector<std::shared_ptr<Job>> JobQueue::PopWhile(const std::function<bool(const Job&)>& fits) {
  std::vector<std::shared_ptr<Job>> out;
  std::vector<std::shared_ptr<Job>> notify;
  {
    absl::MutexLock lock(&mu_);
    while (!jobs_.empty() && fits(*jobs_.begin()->job)) out.push_back(Take(jobs_.begin()));
    if (!out.empty()) Changed(&notify);
  }
  Deliver(notify);
  return out;
}

std::shared_ptr<Job> JobQueue::Remove(const std::string& job_id, const JobListener* owner) {
  std::shared_ptr<Job> removed;
  std::vector<std::shared_ptr<Job>> notify;
  {
    absl::MutexLock lock(&mu_);
    for (auto it = jobs_.begin(); it != jobs_.end(); ++it) {
      const Job& job = *it->job;
      if (job.request.job_id == job_id && (owner == nullptr || job.events.listener() == owner)) {
        removed = Take(it);
        Changed(&notify);
        break;
      }
    }
  }
  Deliver(notify);
  return removed;
}

std::vector<std::shared_ptr<Job>> JobQueue::RemoveExpired(absl::Time now) {
  std::vector<std::shared_ptr<Job>> out;
  std::vector<std::shared_ptr<Job>> notify;
  {
    absl::MutexLock lock(&mu_);
    for (auto it = jobs_.begin(); it != jobs_.end();) {
      auto next = std::next(it);
      if (it->job->request.deadline <= now) out.push_back(Take(it));
      it = next;
    }
    if (!out.empty()) Changed(&notify);
  }
  Deliver(notify);
  return out;
}

std::vector<std::shared_ptr<Job>> JobQueue::Close() {
  std::vector<std::shared_ptr<Job>> out;
  std::vector<std::shared_ptr<Job>> notify;
  {
    absl::MutexLock lock(&mu_);
    closed_ = true;
    while (!jobs_.empty()) out.push_back(Take(jobs_.begin()));
    Changed(&notify);
  }
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

void JobQueue::Changed(std::vector<std::shared_ptr<Job>>* notify) {
  int position = 0;
  for (const Entry& entry : jobs_) {
    if (entry.last_position != position) {
      entry.last_position = position;
      entry.job->events.RecordQueuePosition(position);
      notify->push_back(entry.job);
    }
    ++position;
  }
  if (on_size_) on_size_(static_cast<int>(jobs_.size()));
}

void JobQueue::Deliver(const std::vector<std::shared_ptr<Job>>& notify) {
  for (const std::shared_ptr<Job>& job : notify) job->events.Deliver();
}

}  // namespace imagegen
