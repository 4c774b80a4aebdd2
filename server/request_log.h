// One structured (JSON) log line per request, and the start-up summary, on stderr.
#ifndef IMAGEGEN_SERVER_REQUEST_LOG_H_
#define IMAGEGEN_SERVER_REQUEST_LOG_H_

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/engine/engine_observer.h"

namespace imagegen {

// Thread-safe; lines never interleave. Writes job ids, models, outcomes and times, never prompts.
class RequestLog : public EngineObserver {
 public:
  // Refusal lines: kRefusalBurst at once, then kRefusalsPerSecond on average; the first line
  // written after some were dropped says how many ("suppressed").
  static constexpr double kRefusalsPerSecond = 10;
  static constexpr double kRefusalBurst = 50;

  explicit RequestLog(std::FILE* out = stderr) : out_(out) {}

  // An accepted job ended.
  void OnJobSummary(const JobSummary& summary) override;
  // A due preview could not be made.
  void OnPreviewFailed(const std::string& model, const std::string& job_id, const absl::Status& status) override;
  // A request refused before it became a job (invalid field, unknown model, full queue, ...).
  // Refusals are rate-limited together with LogRefusedCall: false when this line was dropped.
  bool LogRefused(const std::string& model, const std::string& code, const std::string& message);
  // A call refused before it was read (no valid token): a "request" event with `fields` (which
  // say "outcome": "refused"). Rate-limited: false when dropped.
  bool LogRefusedCall(const std::vector<std::pair<std::string, std::string>>& fields);
  // Any other event, as {"event": event, key: value...}; values are JSON-escaped strings.
  void LogEvent(const std::string& event, const std::vector<std::pair<std::string, std::string>>& fields);

 private:
  void Write(const std::string& line);
  // Takes a refusal line's token: false when none is left. `*suppressed` is set to the lines
  // dropped since the last one written (then reset).
  bool TakeRefusalToken(int64_t* suppressed);
  std::FILE* out_;
  absl::Mutex mu_;
  absl::Mutex limit_mu_;
  double tokens_ ABSL_GUARDED_BY(limit_mu_) = kRefusalBurst;
  absl::Time refilled_ ABSL_GUARDED_BY(limit_mu_) = absl::InfinitePast();
  int64_t suppressed_ ABSL_GUARDED_BY(limit_mu_) = 0;
};

}  // namespace imagegen

#endif  // IMAGEGEN_SERVER_REQUEST_LOG_H_
