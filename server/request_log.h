// One structured (JSON) log line per request, and the start-up summary, on stderr.
#ifndef IMAGEGEN_SERVER_REQUEST_LOG_H_
#define IMAGEGEN_SERVER_REQUEST_LOG_H_

#include <cstdio>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "core/engine/engine_observer.h"

namespace imagegen {

// Thread-safe; lines never interleave. Writes job ids, models, outcomes and times, never prompts.
class RequestLog : public EngineObserver {
 public:
  explicit RequestLog(std::FILE* out = stderr) : out_(out) {}

  // An accepted job ended.
  void OnJobSummary(const JobSummary& summary) override;
  // A request refused before it became a job (invalid field, unknown model, full queue, ...).
  void LogRefused(const std::string& model, const std::string& code, const std::string& message);
  // Any other event, as {"event": event, key: value...}; values are JSON-escaped strings.
  void LogEvent(const std::string& event, const std::vector<std::pair<std::string, std::string>>& fields);

 private:
  void Write(const std::string& line);
  std::FILE* out_;
  absl::Mutex mu_;
};

// Forwards every engine event to several observers (metrics and the request log). Thread-safe
// when they are; does not own them.
class ObserverFanout : public EngineObserver {
 public:
  explicit ObserverFanout(std::vector<EngineObserver*> observers) : observers_(std::move(observers)) {}
  void OnQueueDepth(int depth) override { for (auto* o : observers_) o->OnQueueDepth(depth); }
  void OnActiveJobs(int active) override { for (auto* o : observers_) o->OnActiveJobs(active); }
  void OnJobRejected(const std::string& model) override { for (auto* o : observers_) o->OnJobRejected(model); }
  void OnJobStarted(const std::string& model, absl::Duration queue_time) override {
    for (auto* o : observers_) o->OnJobStarted(model, queue_time);
  }
  void OnModelCall(const std::string& model, int rows, int job_steps, absl::Duration duration) override {
    for (auto* o : observers_) o->OnModelCall(model, rows, job_steps, duration);
  }
  void OnFirstPreview(const std::string& model, absl::Duration since_accepted) override {
    for (auto* o : observers_) o->OnFirstPreview(model, since_accepted);
  }
  void OnJobFinished(const std::string& model, JobOutcome outcome, absl::Duration total, int images) override {
    for (auto* o : observers_) o->OnJobFinished(model, outcome, total, images);
  }
  void OnJobSummary(const JobSummary& summary) override {
    for (auto* o : observers_) o->OnJobSummary(summary);
  }

 private:
  std::vector<EngineObserver*> observers_;
};

}  // namespace imagegen

#endif  // IMAGEGEN_SERVER_REQUEST_LOG_H_
