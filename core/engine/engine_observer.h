// What the engine reports about its work, for metrics and logs (server/metrics.h exports it).
#ifndef IMAGEGEN_CORE_ENGINE_ENGINE_OBSERVER_H_
#define IMAGEGEN_CORE_ENGINE_ENGINE_OBSERVER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace imagegen {

// How a job ended. kRejected: refused at admission because the queue was full.
// kUnavailable: ended by a server shutdown. kFailed: the model or an encoder failed.
enum class JobOutcome { kOk, kCancelled, kDeadlineExceeded, kRejected, kUnavailable, kFailed };

const char* JobOutcomeName(JobOutcome outcome);  // "ok", "cancelled", ...

// Implementations must be thread-safe and must not block: methods are called from the worker
// thread and from Engine::Submit/Cancel callers. All methods default to doing nothing.
class EngineObserver {
 public:
  virtual ~EngineObserver() = default;
  // The number of queued (not yet running) jobs changed.
  virtual void OnQueueDepth(int depth) {}
  // The number of running jobs changed.
  virtual void OnActiveJobs(int active) {}
  virtual void OnJobRejected(const std::string& model) {}
  // A job left the queue and starts running after `queue_time`.
  virtual void OnJobStarted(const std::string& model, absl::Duration queue_time) {}
  // One batched UNet call of `rows` rows (guidance counts two rows per image) completed
  // `job_steps` denoising steps of its jobs (heun's first call of a step completes none) in
  // `duration`.
  virtual void OnModelCall(const std::string& model, int rows, int job_steps,
                           absl::Duration duration) {}
  // A model call of `rows` rows ran out of memory and is retried as two calls of half its jobs
  // each (StepScheduler); its jobs fail RESOURCE_EXHAUSTED only when a single job still does.
  virtual void OnBatchSplit(const std::string& model, int rows) {}
  // `count` VAE decodes of a job came out non-finite in half precision and were redone in
  // float32 (as diffusers' force_upcast).
  virtual void OnVaeUpcast(const std::string& model, int count) {}
  // A CUDA device's memory: what tensors hold, and what the caching allocator holds (reported by
  // its worker, at most once a second while it works).
  virtual void OnDeviceMemory(const std::string& device, int64_t allocated_bytes, int64_t reserved_bytes) {}
  // A job produced its first preview, `since_accepted` after it was accepted.
  virtual void OnFirstPreview(const std::string& model, absl::Duration since_accepted) {}
  // A due preview could not be made (decoded or encoded); the job went on without it.
  virtual void OnPreviewFailed(const std::string& model, const std::string& job_id, const absl::Status& status) {}
  // A job that was accepted ended.
  virtual void OnJobFinished(const std::string& model, JobOutcome outcome, absl::Duration total,
                             int images) {}
  // The same end, with what a request log line needs. `queue` is the time until a worker took
  // the job (all of `total` when it never started); `compute` the rest.
  struct JobSummary {
    std::string principal;  // JobRequest::principal
    std::string job_id;
    std::string model;
    JobOutcome outcome;
    std::string message;  // the error, empty when ok
    absl::Duration queue;
    absl::Duration compute;
    int images = 0;
  };
  virtual void OnJobSummary(const JobSummary& summary) {}
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
  void OnBatchSplit(const std::string& model, int rows) override {
    for (auto* o : observers_) o->OnBatchSplit(model, rows);
  }
  void OnVaeUpcast(const std::string& model, int count) override {
    for (auto* o : observers_) o->OnVaeUpcast(model, count);
  }
  void OnDeviceMemory(const std::string& device, int64_t allocated_bytes, int64_t reserved_bytes) override {
    for (auto* o : observers_) o->OnDeviceMemory(device, allocated_bytes, reserved_bytes);
  }
  void OnFirstPreview(const std::string& model, absl::Duration since_accepted) override {
    for (auto* o : observers_) o->OnFirstPreview(model, since_accepted);
  }
  void OnPreviewFailed(const std::string& model, const std::string& job_id, const absl::Status& status) override {
    for (auto* o : observers_) o->OnPreviewFailed(model, job_id, status);
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

#endif  // IMAGEGEN_CORE_ENGINE_ENGINE_OBSERVER_H_
