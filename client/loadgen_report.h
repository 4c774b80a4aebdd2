// The report of the load generator (imagegen-loadgen): what each request saw, the summary of a
// run (percentiles, throughput, outcome counts) and the two ways it is printed, the JSON line
// that bench/serving.sh and bench/soak.sh read (keep its keys and their order) and the readable
// lines on stderr. No flags, no gRPC calls and no I/O: the caller passes the load it offered
// (LoadOptions) and what it measured (MeasuredRun). All functions are thread-compatible.
#ifndef IMAGEGEN_CLIENT_LOADGEN_REPORT_H_
#define IMAGEGEN_CLIENT_LOADGEN_REPORT_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <grpcpp/support/status.h>

#include "absl/time/time.h"

namespace imagegen::loadgen {

using Clock = std::chrono::steady_clock;

// What a request does besides asking for images (--cancel_fraction and its siblings).
enum class Plan { kPlain, kCancel, kCancelJob, kDeadline };

// "plain", "cancel", "cancel_job", "deadline": the keys of the JSON's by_plan.
const char* PlanName(Plan plan);

// What one request saw. Durations count from its send.
struct Sample {
  grpc::StatusCode code = grpc::StatusCode::UNKNOWN;
  int images = 0;                                // images in the result (0 unless OK)
  absl::Duration latency;                        // to the result, or to the end of a failed call
  std::optional<absl::Duration> first_progress;  // the first Progress of a step (step > 0)
  std::optional<absl::Duration> first_preview;
  Clock::time_point end;  // when the result (or the failure) arrived
  Plan plan = Plan::kPlain;
  bool accepted = false;     // JobAccepted arrived: the server queued the job
  bool cancel_sent = false;  // kCancel, kCancelJob: the cancel went out before the call ended
  // kCancelJob: the CancelJob call's status and answer, once one was sent.
  std::optional<grpc::StatusCode> cancel_job_code;
  bool cancel_job_found = false;
};

// The measured part of a run.
struct MeasuredRun {
  std::vector<Sample> samples;
  absl::Duration wall;
  int max_in_flight = 0;        // poisson only
  absl::Duration max_send_lag;  // poisson only: how late the sender was on its schedule
};

// The load that was offered, echoed at the front of the JSON line. Each field is the
// imagegen-loadgen flag of the same name; the report prints only those of `mode` (and of `mix`).
struct LoadOptions {
  std::string mode = "closed";  // "closed" or "poisson"
  // closed
  int concurrency = 1;
  int64_t warmup = 0;
  // poisson
  double rate = 1;
  double duration_s = 60;
  double warmup_s = 0;
  // mix: each request draws its own shape
  bool mix = false;
  std::string mix_samplers;
  double mix_img2img = 0.1;
  // not mix: the shape of every request
  uint32_t steps = 0;
  uint32_t num_images = 1;  // images per request, at least 1
  std::string sampler;
  uint32_t preview_every = 1;
  // the plans
  double cancel_fraction = 0;
  double cancel_job_fraction = 0;
  double deadline_fraction = 0;
  double short_timeout_s = 0.3;
};

// Whether a request ended as its plan allows. Expected: OK (a cancel or a deadline may come too
// late), RESOURCE_EXHAUSTED before JobAccepted (a full queue), CANCELLED when the request
// cancelled itself or its CancelJob found the job, DEADLINE_EXCEEDED for a kDeadline request.
bool Expected(const Sample& sample);

// Whether a CancelJob call ended as it may: OK, or NOT_FOUND when the job had already ended.
bool ExpectedCancelJob(grpc::StatusCode code);

// Nearest-rank percentile (p in [0, 100]) of sorted values: the value of rank ceil(p / 100 * n),
// clamped to 1..n. nullopt when there are no values.
std::optional<double> Percentile(const std::vector<double>& sorted, double p);

// The arithmetic mean; nullopt when there are no values.
std::optional<double> Mean(const std::vector<double>& values);

using Counts = std::map<std::string, int64_t>;  // by status code name ("OK", "CANCELLED", ...)

struct Summary {
  int64_t ok = 0;
  int64_t ok_images = 0;
  Counts failed;
  // Over the OK samples that have the value, sorted ascending.
  std::vector<double> latency_ms, first_preview_ms, first_progress_ms;
  // Soak accounting: every end by plan, the CancelJob calls' ends, and what was unexpected.
  std::map<Plan, Counts> by_plan;
  Counts cancel_job_calls;
  // CancelJob answered cancelled = true, yet the job ended OK: the cancel found it after its
  // last step.
  int64_t cancel_job_late = 0;
  int64_t expected = 0;
  Counts unexpected;  // requests by their end, and "CancelJob " + code for CancelJob calls
};

Summary Summarize(const std::vector<Sample>& samples);

// OK images per second of `wall`; nullopt when `wall` is not positive.
std::optional<double> ImagesPerSecond(const Summary& summary, absl::Duration wall);

// The JSON line (no newline): the load, then requests, ok, failed, wall_s, images_per_s,
// latency_ms {p50, p95, p99, mean}, first_preview_ms {p50, p95, p99}, first_progress_ms {p50},
// by_plan, cancel_job_calls, cancel_job_late, expected, unexpected, unexpected_by_code.
// Milliseconds and seconds with 3 decimals; null where there is no value.
std::string JsonSummary(const LoadOptions& load, const MeasuredRun& run,
                        const Summary& summary);

// "closed, concurrency 4: 40 ok in 12.34 s, 3.24 images/s; latency ms p50 ...".
std::string HumanSummary(const LoadOptions& load, const MeasuredRun& run,
                         const Summary& summary);

// "by plan: plain 90 OK, 2 RESOURCE_EXHAUSTED; cancel 3 CANCELLED, 1 OK; ...; unexpected 0".
std::string HumanOutcomes(const Summary& summary);

// imagegen-loadgen's exit status: 0 when a measured request succeeded; otherwise the status
// code of the first measured request (UNKNOWN, 2, when there was none).
int ExitStatus(const MeasuredRun& run, const Summary& summary);

}  // namespace imagegen::loadgen

#endif  // IMAGEGEN_CLIENT_LOADGEN_REPORT_H_
