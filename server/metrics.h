// Prometheus metrics: what the engine reports (EngineObserver) and what only the server sees
// (invalid requests, previews sent or replaced before sending). README.md ("Metrics") lists them.
#ifndef IMAGEGEN_SERVER_METRICS_H_
#define IMAGEGEN_SERVER_METRICS_H_

#include <memory>
#include <string>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "absl/container/flat_hash_set.h"
#include "core/engine/engine_observer.h"

namespace imagegen {

// Thread-safe (prometheus-cpp families and metrics are). Labels are bounded: the model name is
// one of the loaded models (or "unknown" for a request naming none of them), the outcome one of
// a fixed set. Never job ids or prompts.
class Metrics : public EngineObserver {
 public:
  Metrics();

  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  // Server-side events.
  void OnInvalidRequest(const std::string& model);
  // A call without a valid bearer token; its model label is "unknown", whatever it asked for.
  void OnUnauthenticated();
  // A refusal's log line was dropped by RequestLog's rate limit.
  void OnLogLineSuppressed();
  // Token principals get their own label in imagegen_client_jobs_total; every other principal
  // counts as "other" (client certificates) or "shared" (no access control). Call before serving.
  void SetClientNames(const std::vector<std::string>& names);
  void OnPreviewsSent(const std::string& model, int images);
  void OnPreviewsReplaced(const std::string& model, int images);

  // EngineObserver.
  void OnQueueDepth(int depth) override;
  void OnActiveJobs(int active) override;
  void OnJobRejected(const std::string& model) override;
  void OnJobStarted(const std::string& model, absl::Duration queue_time) override;
  void OnModelCall(const std::string& model, int rows, int job_steps, absl::Duration duration) override;
  void OnFirstPreview(const std::string& model, absl::Duration since_accepted) override;
  void OnPreviewFailed(const std::string& model, const std::string& job_id, const absl::Status& status) override;
  void OnJobFinished(const std::string& model, JobOutcome outcome, absl::Duration total, int images) override;
  void OnJobSummary(const JobSummary& summary) override;
  void OnBatchSplit(const std::string& model, int rows) override;
  void OnVaeUpcast(const std::string& model, int count) override;
  void OnDeviceMemory(const std::string& device, int64_t allocated_bytes, int64_t reserved_bytes) override;

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& request_duration_;
  prometheus::Family<prometheus::Histogram>& queue_duration_;
  prometheus::Family<prometheus::Histogram>& first_preview_duration_;
  prometheus::Family<prometheus::Histogram>& step_duration_;
  prometheus::Family<prometheus::Histogram>& batch_rows_;
  prometheus::Family<prometheus::Counter>& images_;
  prometheus::Family<prometheus::Counter>& steps_;
  prometheus::Family<prometheus::Counter>& previews_sent_;
  prometheus::Family<prometheus::Counter>& previews_replaced_;
  prometheus::Family<prometheus::Counter>& preview_failures_;
  prometheus::Family<prometheus::Counter>& log_lines_suppressed_;
  prometheus::Family<prometheus::Counter>& client_jobs_;
  prometheus::Family<prometheus::Counter>& batch_splits_;
  prometheus::Family<prometheus::Counter>& vae_upcasts_;
  prometheus::Family<prometheus::Gauge>& device_memory_;
  absl::flat_hash_set<std::string> client_names_;  // set before serving, read-only after
  prometheus::Gauge& queue_depth_;
  prometheus::Gauge& active_jobs_;
};

}  // namespace imagegen

#endif  // IMAGEGEN_SERVER_METRICS_H_
