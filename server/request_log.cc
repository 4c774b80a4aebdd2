#include "server/request_log.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/engine/job.h"

namespace imagegen {
namespace {

std::string Quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += absl::StrFormat("\\u%04x", c);
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

std::string Now() { return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()); }

}  // namespace

void RequestLog::OnJobSummary(const JobSummary& s) {
  Write(absl::StrFormat(
      R"({"time":%s,"event":"request","client":%s,"job_id":%s,"model":%s,"outcome":%s,"queue_s":%.4f,"compute_s":%.4f,"images":%d%s})",
      Quote(Now()), Quote(ClipForEcho(s.principal)), Quote(s.job_id), Quote(s.model), Quote(JobOutcomeName(s.outcome)),
      absl::ToDoubleSeconds(s.queue), absl::ToDoubleSeconds(s.compute), s.images,
      s.message.empty() ? "" : absl::StrCat(",\"message\":", Quote(s.message))));
}

void RequestLog::OnPreviewFailed(const std::string& model, const std::string& job_id, const absl::Status& status) {
  LogEvent("preview_failed", {{"job_id", job_id}, {"model", model},
                              {"code", absl::StatusCodeToString(status.code())},
                              {"message", std::string(status.message())}});
}

bool RequestLog::TakeRefusalToken(int64_t* suppressed) {
  absl::MutexLock lock(&limit_mu_);
  const absl::Time now = absl::Now();
  if (refilled_ != absl::InfinitePast()) {
    tokens_ = std::min(kRefusalBurst, tokens_ + absl::ToDoubleSeconds(now - refilled_) * kRefusalsPerSecond);
  }
  refilled_ = now;
  if (tokens_ < 1) {
    ++suppressed_;
    return false;
  }
  tokens_ -= 1;
  *suppressed = suppressed_;
  suppressed_ = 0;
  return true;
}

bool RequestLog::LogRefused(const std::string& model, const std::string& code, const std::string& message) {
  return LogRefusedCall({{"model", model}, {"outcome", "refused"}, {"code", code}, {"message", message}});
}

bool RequestLog::LogRefusedCall(const std::vector<std::pair<std::string, std::string>>& fields) {
  int64_t suppressed = 0;
  if (!TakeRefusalToken(&suppressed)) return false;
  std::string line = absl::StrCat("{\"time\":", Quote(Now()), ",\"event\":\"request\"");
  for (const auto& [k, v] : fields) absl::StrAppend(&line, ",", Quote(k), ":", Quote(v));
  if (suppressed > 0) absl::StrAppend(&line, ",\"suppressed\":", suppressed);
  Write(line + "}");
  return true;
}

void RequestLog::LogEvent(const std::string& event, const std::vector<std::pair<std::string, std::string>>& fields) {
  std::string line = absl::StrCat("{\"time\":", Quote(Now()), ",\"event\":", Quote(event));
  for (const auto& [k, v] : fields) absl::StrAppend(&line, ",", Quote(k), ":", Quote(v));
  Write(line + "}");
}

void RequestLog::Write(const std::string& line) {
  absl::MutexLock lock(&mu_);
  std::fputs((line + "\n").c_str(), out_);
  std::fflush(out_);
}

}  // namespace imagegen
