#include "client/loadgen_report.h"

#include <algorithm>
#include <cmath>
#include <functional>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/cli.h"

namespace imagegen::loadgen {
namespace {

using client::JsonString;

// The milliseconds of `field` over the OK samples that have it, sorted.
std::vector<double> SortedMillis(
    const std::vector<Sample>& samples,
    const std::function<std::optional<absl::Duration>(const Sample&)>& field) {
  std::vector<double> millis;
  for (const Sample& sample : samples) {
    if (sample.code != grpc::StatusCode::OK) continue;
    if (std::optional<absl::Duration> value = field(sample)) {
      millis.push_back(absl::ToDoubleMilliseconds(*value));
    }
  }
  std::sort(millis.begin(), millis.end());
  return millis;
}

// gRPC and Abseil share the code numbering, and Abseil has the names.
std::string CodeName(grpc::StatusCode code) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

// Three decimals, as every duration and fraction of the JSON line has; null for no value.
std::string JsonNumber(std::optional<double> value) {
  return value ? absl::StrFormat("%.3f", *value) : "null";
}

std::string JsonCounts(const Counts& counts) {
  std::vector<std::string> fields;
  for (const auto& [code, count] : counts) {
    fields.push_back(absl::StrCat(JsonString(code), ":", count));
  }
  return absl::StrCat("{", absl::StrJoin(fields, ","), "}");
}

int64_t Total(const Counts& counts) {
  int64_t total = 0;
  for (const auto& [code, count] : counts) total += count;
  return total;
}

// The soak's accounting: {"by_plan":{"plain":{"OK":n,...},...},"cancel_job_calls":{...},...}.
std::string JsonOutcomes(const Summary& s) {
  std::vector<std::string> plans;
  for (const auto& [plan, counts] : s.by_plan) {
    plans.push_back(absl::StrCat(JsonString(PlanName(plan)), ":", JsonCounts(counts)));
  }
  return absl::StrCat("\"by_plan\":{", absl::StrJoin(plans, ","),
                      "},\"cancel_job_calls\":", JsonCounts(s.cancel_job_calls),
                      ",\"cancel_job_late\":", s.cancel_job_late, ",\"expected\":", s.expected,
                      ",\"unexpected\":", Total(s.unexpected),
                      ",\"unexpected_by_code\":", JsonCounts(s.unexpected));
}

// The fields that say what load was offered.
std::string JsonLoad(const LoadOptions& load, const MeasuredRun& run) {
  std::string json = absl::StrCat("\"mode\":", JsonString(load.mode));
  if (load.mode == "closed") {
    absl::StrAppend(&json, ",\"concurrency\":", load.concurrency, ",\"warmup\":", load.warmup);
  } else {
    absl::StrAppend(&json, ",\"rate\":", JsonNumber(load.rate),
                    ",\"duration_s\":", JsonNumber(load.duration_s),
                    ",\"warmup_s\":", JsonNumber(load.warmup_s),
                    ",\"max_in_flight\":", run.max_in_flight, ",\"max_send_lag_ms\":",
                    JsonNumber(absl::ToDoubleMilliseconds(run.max_send_lag)));
  }
  if (load.mix) {
    absl::StrAppend(&json, ",\"mix\":true,\"mix_samplers\":", JsonString(load.mix_samplers),
                    ",\"mix_img2img\":", JsonNumber(load.mix_img2img));
  } else {
    absl::StrAppend(&json, ",\"steps\":", load.steps, ",\"num_images\":", load.num_images,
                    ",\"sampler\":", JsonString(load.sampler),
                    ",\"preview_every\":", load.preview_every);
  }
  absl::StrAppend(&json, ",\"cancel_fraction\":", JsonNumber(load.cancel_fraction),
                  ",\"cancel_job_fraction\":", JsonNumber(load.cancel_job_fraction),
                  ",\"deadline_fraction\":", JsonNumber(load.deadline_fraction),
                  ",\"short_timeout_s\":", JsonNumber(load.short_timeout_s));
  return json;
}

// Whole milliseconds for the readable summary; "-" for no value.
std::string Ms(std::optional<double> value) {
  return value ? absl::StrFormat("%.0f", *value) : "-";
}

}  // namespace

const char* PlanName(Plan plan) {
  switch (plan) {
    case Plan::kPlain: return "plain";
    case Plan::kCancel: return "cancel";
    case Plan::kCancelJob: return "cancel_job";
    case Plan::kDeadline: return "deadline";
  }
  return "?";
}

bool Expected(const Sample& sample) {
  switch (sample.code) {
    case grpc::StatusCode::OK:  // a cancel or a deadline may come after the result
      return true;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      // A full queue answers before JobAccepted: the load's doing. After it, the code means a
      // job ran out of memory (core/engine/model_failure), which no load here should cause.
      return !sample.accepted;
    case grpc::StatusCode::CANCELLED:
      return sample.cancel_sent &&
             (sample.plan == Plan::kCancel ||
              (sample.plan == Plan::kCancelJob && sample.cancel_job_code == grpc::StatusCode::OK));
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return sample.plan == Plan::kDeadline;
    default:
      return false;
  }
}

bool ExpectedCancelJob(grpc::StatusCode code) {
  return code == grpc::StatusCode::OK || code == grpc::StatusCode::NOT_FOUND;
}

std::optional<double> Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return std::nullopt;
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(sorted.size())));
  rank = std::clamp<size_t>(rank, 1, sorted.size());
  return sorted[rank - 1];
}

std::optional<double> Mean(const std::vector<double>& values) {
  if (values.empty()) return std::nullopt;
  double sum = 0;
  for (double value : values) sum += value;
  return sum / static_cast<double>(values.size());
}

Summary Summarize(const std::vector<Sample>& samples) {
  Summary summary;
  for (const Sample& sample : samples) {
    if (sample.code == grpc::StatusCode::OK) {
      ++summary.ok;
      summary.ok_images += sample.images;
    } else {
      ++summary.failed[CodeName(sample.code)];
    }
    ++summary.by_plan[sample.plan][CodeName(sample.code)];
    if (Expected(sample)) {
      ++summary.expected;
    } else {
      ++summary.unexpected[CodeName(sample.code)];
    }
    if (sample.cancel_job_code) {
      ++summary.cancel_job_calls[CodeName(*sample.cancel_job_code)];
      if (!ExpectedCancelJob(*sample.cancel_job_code)) {
        ++summary.unexpected[absl::StrCat("CancelJob ", CodeName(*sample.cancel_job_code))];
      }
      if (sample.cancel_job_found && sample.code == grpc::StatusCode::OK) ++summary.cancel_job_late;
    }
  }
  summary.latency_ms =
      SortedMillis(samples, [](const Sample& s) { return std::optional(s.latency); });
  summary.first_preview_ms = SortedMillis(samples, [](const Sample& s) { return s.first_preview; });
  summary.first_progress_ms =
      SortedMillis(samples, [](const Sample& s) { return s.first_progress; });
  return summary;
}

std::optional<double> ImagesPerSecond(const Summary& summary, absl::Duration wall) {
  if (wall <= absl::ZeroDuration()) return std::nullopt;
  return static_cast<double>(summary.ok_images) / absl::ToDoubleSeconds(wall);
}

std::string JsonSummary(const LoadOptions& load, const MeasuredRun& run, const Summary& s) {
  return absl::StrCat(
      "{", JsonLoad(load, run), ",\"requests\":", run.samples.size(), ",\"ok\":", s.ok,
      ",\"failed\":", JsonCounts(s.failed),
      ",\"wall_s\":", JsonNumber(absl::ToDoubleSeconds(run.wall)),
      ",\"images_per_s\":", JsonNumber(ImagesPerSecond(s, run.wall)),
      ",\"latency_ms\":{\"p50\":", JsonNumber(Percentile(s.latency_ms, 50)),
      ",\"p95\":", JsonNumber(Percentile(s.latency_ms, 95)),
      ",\"p99\":", JsonNumber(Percentile(s.latency_ms, 99)),
      ",\"mean\":", JsonNumber(Mean(s.latency_ms)),
      "},\"first_preview_ms\":{\"p50\":", JsonNumber(Percentile(s.first_preview_ms, 50)),
      ",\"p95\":", JsonNumber(Percentile(s.first_preview_ms, 95)),
      ",\"p99\":", JsonNumber(Percentile(s.first_preview_ms, 99)),
      "},\"first_progress_ms\":{\"p50\":", JsonNumber(Percentile(s.first_progress_ms, 50)), "},",
      JsonOutcomes(s), "}");
}

std::string HumanSummary(const LoadOptions& load, const MeasuredRun& run, const Summary& s) {
  const std::string offered = load.mode == "closed"
                                  ? absl::StrCat("closed, concurrency ", load.concurrency)
                                  : absl::StrCat("poisson, ", load.rate, "/s");
  std::vector<std::string> failed;
  for (const auto& [code, count] : s.failed) failed.push_back(absl::StrCat(count, " ", code));
  const std::optional<double> ips = ImagesPerSecond(s, run.wall);
  return absl::StrFormat(
      "%s: %d ok%s in %.2f s, %s images/s; latency ms p50 %s p95 %s p99 %s mean %s; "
      "first preview ms p50 %s p95 %s p99 %s; first progress ms p50 %s",
      offered, s.ok, failed.empty() ? "" : absl::StrCat(", failed: ", absl::StrJoin(failed, ", ")),
      absl::ToDoubleSeconds(run.wall), ips ? absl::StrFormat("%.2f", *ips) : "-",
      Ms(Percentile(s.latency_ms, 50)), Ms(Percentile(s.latency_ms, 95)),
      Ms(Percentile(s.latency_ms, 99)), Ms(Mean(s.latency_ms)),
      Ms(Percentile(s.first_preview_ms, 50)), Ms(Percentile(s.first_preview_ms, 95)),
      Ms(Percentile(s.first_preview_ms, 99)), Ms(Percentile(s.first_progress_ms, 50)));
}

std::string HumanOutcomes(const Summary& s) {
  auto join = [](const Counts& counts) {
    std::vector<std::string> parts;
    for (const auto& [code, count] : counts) parts.push_back(absl::StrCat(count, " ", code));
    return absl::StrJoin(parts, ", ");
  };
  std::vector<std::string> plans;
  for (const auto& [plan, counts] : s.by_plan) {
    plans.push_back(absl::StrCat(PlanName(plan), " ", join(counts)));
  }
  std::string out = absl::StrCat("by plan: ", absl::StrJoin(plans, "; "));
  if (!s.cancel_job_calls.empty()) {
    absl::StrAppend(&out, "; CancelJob calls ", join(s.cancel_job_calls), " (", s.cancel_job_late,
                    " found the job after its last step)");
  }
  absl::StrAppend(&out, "; expected ", s.expected, ", unexpected ", Total(s.unexpected));
  if (!s.unexpected.empty()) absl::StrAppend(&out, " (", join(s.unexpected), ")");
  return out;
}

int ExitStatus(const MeasuredRun& run, const Summary& summary) {
  if (summary.ok > 0) return 0;
  if (run.samples.empty()) return static_cast<int>(absl::StatusCode::kUnknown);
  return static_cast<int>(run.samples.front().code);
}

}  // namespace imagegen::loadgen
