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
  // A due preview could not be made.
  void OnPreviewFailed(const std::string& model, const std::string& job_id, const absl::Status& status) override;
  // A request refused before it became a job (invalid field, unknown model, full queue, ...).
  void LogRefused(const std::string& model, const std::string& code, const std::string& message);
  // Any other event, as {"event": event, key: value...}; values are JSON-escaped strings.
  void LogEvent(const std::string& event, const std::vector<std::pair<std::string, std::string>>& fields);

 private:
  void Write(const std::string& line);
  std::FILE* out_;
  absl::Mutex mu_;
};

}  // namespace imagegen

#endif  // IMAGEGEN_SERVER_REQUEST_LOG_H_
