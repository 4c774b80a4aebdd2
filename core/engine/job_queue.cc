#include "core/engine/job_queue.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace imagegen {

JobQueue::JobQueue(int capacity, int max_per_principal, absl::Duration aging, const Clock* clock,
                   std::function<void(int)> on_size)
    : capacity_(capacity),
      max_per_principal_(max_per_principal),
      aging_(aging),
      clock_(clock),
      on_size_(std::move(on_size)) {}

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
    if (size_ >= capacity_) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the queue is full (", capacity_, " jobs waiting); retry later or elsewhere"));
    }
    PrincipalQueue& mine = queues_[job->request.principal];
    if (max_per_principal_ > 0 && static_cast<int>(mine.size()) >= max_per_principal_) {
      if (mine.empty()) queues_.erase(job->request.principal);
      return absl::ResourceExhaustedError(absl::StrCat("this client already has ", max_per_principal_,
                                                       " jobs waiting, its share of the queue; retry when one "
                                                       "has started"));
    }
    auto it = mine.insert(Entry{Key(*job), job->sequence, job, -1}).first;
    ++size_;
    queued_rows_ += job->rows();
    it->last_position = Position(static_cast<int>(std::distance(mine.begin(), it)));
    job->events.RecordAccepted(job->request.job_id, it->last_position);
    notify.push_back(job);
    Changed(&notify);
  }
  Deliver(notify);
  return absl::OkStatus();
}

std::shared_ptr<Job> JobQueue::Take(std::map<std::string, PrincipalQueue>::iterator principal,
                                    PrincipalQueue::iterator it) {
  std::shared_ptr<Job> job = it->job;
  queued_rows_ -= job->rows();
  --size_;
  principal->second.erase(it);
  if (principal->second.empty()) queues_.erase(principal);
  job->events.RecordLeftQueue();
  return job;
}

std::vector<std::shared_ptr<Job>> JobQueue::PopWhile(const std::function<bool(const Job&)>& fits,
                                                     const PrincipalRank& rank) {
  std::vector<std::shared_ptr<Job>> out;
  std::vector<std::shared_ptr<Job>> notify;
  {
    absl::MutexLock lock(&mu_);
    while (!queues_.empty()) {
      auto best = queues_.begin();
      int64_t best_rank = rank ? rank(best->first) : 0;
      for (auto p = std::next(queues_.begin()); p != queues_.end(); ++p) {
        const int64_t r = rank ? rank(p->first) : 0;
        if (r < best_rank || (r == best_rank && Order()(*p->second.begin(), *best->second.begin()))) {
          best = p;
          best_rank = r;
        }
      }
      if (!fits(*best->second.begin()->job)) break;
      out.push_back(Take(best, best->second.begin()));
    }
    if (!out.empty()) Changed(&notify);
  }
  Deliver(notify);
  return out;
}

std::shared_ptr<Job> JobQueue::Remove(const std::string& principal, const std::string& job_id,
                                      const JobListener* owner) {
  std::shared_ptr<Job> removed;
  std::vector<std::shared_ptr<Job>> notify;
  {
    absl::MutexLock lock(&mu_);
    auto p = queues_.find(principal);
    if (p == queues_.end()) return nullptr;
    for (auto it = p->second.begin(); it != p->second.end(); ++it) {
      const Job& job = *it->job;
      if (job.request.job_id == job_id && (owner == nullptr || job.events.listener() == owner)) {
        removed = Take(p, it);
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
    for (auto p = queues_.begin(); p != queues_.end();) {
      std::vector<PrincipalQueue::iterator> expired;
      for (auto it = p->second.begin(); it != p->second.end(); ++it) {
        if (it->job->request.deadline <= now) expired.push_back(it);
      }
      auto next = std::next(p);
      for (auto it : expired) out.push_back(Take(p, it));  // the last may drop *p
      p = next;
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
    while (!queues_.empty()) out.push_back(Take(queues_.begin(), queues_.begin()->second.begin()));
    Changed(&notify);
  }
  return out;
}

bool JobQueue::WaitForJob(absl::Time deadline) {
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return closed_ || size_ > 0; };
  absl::MutexLock lock(&mu_);
  mu_.AwaitWithDeadline(absl::Condition(&ready), deadline);
  return !closed_ && size_ > 0;
}

void JobQueue::WaitForRows(int rows, absl::Time deadline) {
  auto ready = [this, rows]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return closed_ || queued_rows_ >= rows; };
  absl::MutexLock lock(&mu_);
  mu_.AwaitWithDeadline(absl::Condition(&ready), deadline);
}

int JobQueue::size() const {
  absl::MutexLock lock(&mu_);
  return size_;
}

bool JobQueue::closed() const {
  absl::MutexLock lock(&mu_);
  return closed_;
}

int JobQueue::Position(int k) const {
  // k of its own ahead, and min(k, n) of every other principal's n, when principals take turns.
  int position = 0;
  for (const auto& [principal, queue] : queues_) position += std::min(static_cast<int>(queue.size()), k);
  return position;
}

void JobQueue::Changed(std::vector<std::shared_ptr<Job>>* notify) {
  for (const auto& [principal, queue] : queues_) {
    int k = 0;
    for (const Entry& entry : queue) {
      const int position = Position(k);
      if (entry.last_position != position) {
        entry.last_position = position;
        entry.job->events.RecordQueuePosition(position);
        notify->push_back(entry.job);
      }
      ++k;
    }
  }
  if (on_size_) on_size_(size_);
}

void JobQueue::Deliver(const std::vector<std::shared_ptr<Job>>& notify) {
  for (const std::shared_ptr<Job>& job : notify) job->events.Deliver();
}

}  // namespace imagegen
