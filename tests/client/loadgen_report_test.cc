#include "client/loadgen_report.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace imagegen::loadgen {
namespace {

using grpc::StatusCode;

Sample Ok(int images, double latency_ms, std::optional<double> first_progress_ms = std::nullopt,
          std::optional<double> first_preview_ms = std::nullopt, Plan plan = Plan::kPlain) {
  Sample sample;
  sample.code = StatusCode::OK;
  sample.images = images;
  sample.latency = absl::Milliseconds(latency_ms);
  if (first_progress_ms) sample.first_progress = absl::Milliseconds(*first_progress_ms);
  if (first_preview_ms) sample.first_preview = absl::Milliseconds(*first_preview_ms);
  sample.accepted = true;
  sample.plan = plan;
  return sample;
}

Sample Failed(StatusCode code, Plan plan = Plan::kPlain, bool accepted = true) {
  Sample sample;
  sample.code = code;
  sample.latency = absl::Milliseconds(1);
  sample.plan = plan;
  sample.accepted = accepted;
  return sample;
}

Sample WithCancelJob(Sample sample, StatusCode cancel_code, bool found) {
  sample.cancel_sent = true;
  sample.cancel_job_code = cancel_code;
  sample.cancel_job_found = found;
  return sample;
}

TEST(Percentile, IsTheNearestRank) {
  // The nearest-rank example of the literature: 15, 20, 35, 40, 50.
  const std::vector<double> values = {15, 20, 35, 40, 50};
  EXPECT_EQ(Percentile(values, 5), 15);
  EXPECT_EQ(Percentile(values, 30), 20);
  EXPECT_EQ(Percentile(values, 40), 20);
  EXPECT_EQ(Percentile(values, 50), 35);
  EXPECT_EQ(Percentile(values, 100), 50);
  EXPECT_EQ(Percentile(values, 0), 15);  // rank clamped to 1
}

TEST(Percentile, OfOneHundredValuesIsTheValueOfThatRank) {
  std::vector<double> values;
  for (int i = 1; i <= 100; ++i) values.push_back(i);
  EXPECT_EQ(Percentile(values, 50), 50);
  EXPECT_EQ(Percentile(values, 95), 95);
  EXPECT_EQ(Percentile(values, 99), 99);
  EXPECT_EQ(Percentile(values, 99.5), 100);
}

TEST(Percentile, AndMeanOfNothingAreNone) {
  EXPECT_EQ(Percentile({}, 50), std::nullopt);
  EXPECT_EQ(Mean({}), std::nullopt);
  EXPECT_EQ(Mean({1, 2, 6}), 3);
}

TEST(Summarize, CountsEveryEndByPlanAndSortsOutTheUnexpected) {
  Sample cancelled_by_server = Failed(StatusCode::CANCELLED, Plan::kCancel);  // no cancel sent
  Sample self_cancelled = Failed(StatusCode::CANCELLED, Plan::kCancel);
  self_cancelled.cancel_sent = true;
  const std::vector<Sample> samples = {
      Ok(2, 5),
      Failed(StatusCode::RESOURCE_EXHAUSTED, Plan::kPlain, /*accepted=*/false),  // full queue
      Failed(StatusCode::RESOURCE_EXHAUSTED, Plan::kPlain, /*accepted=*/true),   // unexpected
      self_cancelled,
      cancelled_by_server,  // unexpected
      WithCancelJob(Failed(StatusCode::CANCELLED, Plan::kCancelJob), StatusCode::OK, true),
      WithCancelJob(Ok(1, 7, {}, {}, Plan::kCancelJob), StatusCode::OK, true),  // late
      // CancelJob said NOT_FOUND, yet the call ended CANCELLED: unexpected.
      WithCancelJob(Failed(StatusCode::CANCELLED, Plan::kCancelJob), StatusCode::NOT_FOUND,
                    false),
      WithCancelJob(Ok(1, 9, {}, {}, Plan::kCancelJob), StatusCode::UNAVAILABLE, false),
      Failed(StatusCode::DEADLINE_EXCEEDED, Plan::kDeadline),
      Failed(StatusCode::DEADLINE_EXCEEDED, Plan::kPlain),  // unexpected
      Failed(StatusCode::INTERNAL),                          // unexpected
  };
  const Summary s = Summarize(samples);
  EXPECT_EQ(s.ok, 3);
  EXPECT_EQ(s.ok_images, 4);
  EXPECT_EQ(s.failed, (Counts{{"CANCELLED", 4},
                              {"DEADLINE_EXCEEDED", 2},
                              {"INTERNAL", 1},
                              {"RESOURCE_EXHAUSTED", 2}}));
  EXPECT_EQ(s.by_plan.at(Plan::kPlain), (Counts{{"DEADLINE_EXCEEDED", 1},
                                                {"INTERNAL", 1},
                                                {"OK", 1},
                                                {"RESOURCE_EXHAUSTED", 2}}));
  EXPECT_EQ(s.by_plan.at(Plan::kCancel), (Counts{{"CANCELLED", 2}}));
  EXPECT_EQ(s.by_plan.at(Plan::kCancelJob), (Counts{{"CANCELLED", 2}, {"OK", 2}}));
  EXPECT_EQ(s.by_plan.at(Plan::kDeadline), (Counts{{"DEADLINE_EXCEEDED", 1}}));
  EXPECT_EQ(s.cancel_job_calls, (Counts{{"NOT_FOUND", 1}, {"OK", 2}, {"UNAVAILABLE", 1}}));
  EXPECT_EQ(s.cancel_job_late, 1);
  EXPECT_EQ(s.expected, 7);
  EXPECT_EQ(s.unexpected, (Counts{{"CANCELLED", 2},
                                  {"CancelJob UNAVAILABLE", 1},
                                  {"DEADLINE_EXCEEDED", 1},
                                  {"INTERNAL", 1},
                                  {"RESOURCE_EXHAUSTED", 1}}));
  // Latencies of the OK requests only, sorted.
  EXPECT_EQ(s.latency_ms, (std::vector<double>{5, 7, 9}));
}

TEST(Summarize, TimesToFirstProgressAndPreviewCoverTheOkRequestsThatHaveThem) {
  Sample failed = Failed(StatusCode::INTERNAL);
  failed.first_progress = absl::Milliseconds(1);
  const Summary s = Summarize({Ok(1, 30, 4, std::nullopt), Ok(1, 10, 2, 3), failed});
  EXPECT_EQ(s.latency_ms, (std::vector<double>{10, 30}));
  EXPECT_EQ(s.first_progress_ms, (std::vector<double>{2, 4}));
  EXPECT_EQ(s.first_preview_ms, (std::vector<double>{3}));
}

class ClosedRunReport : public ::testing::Test {
 protected:
  ClosedRunReport() {
    load_.mode = "closed";
    load_.concurrency = 2;
    load_.warmup = 1;
    load_.steps = 5;
    load_.num_images = 1;
    load_.sampler = "ddim";
    load_.preview_every = 1;
    run_.samples = {Ok(1, 10, 2, 3), Ok(2, 30, 4),
                    Failed(StatusCode::RESOURCE_EXHAUSTED, Plan::kPlain, false)};
    run_.wall = absl::Seconds(2);
    summary_ = Summarize(run_.samples);
  }
  LoadOptions load_;
  MeasuredRun run_;
  Summary summary_;
};

// bench/serving.sh and bench/soak.sh read these keys; the order is the one they were written in.
TEST_F(ClosedRunReport, JsonLineIsByteForByteTheBenchmarksFormat) {
  EXPECT_EQ(JsonSummary(load_, run_, summary_),
            "{\"mode\":\"closed\",\"concurrency\":2,\"warmup\":1,\"steps\":5,\"num_images\":1,"
            "\"sampler\":\"ddim\",\"preview_every\":1,\"cancel_fraction\":0.000,"
            "\"cancel_job_fraction\":0.000,\"deadline_fraction\":0.000,\"short_timeout_s\":0.300,"
            "\"requests\":3,\"ok\":2,\"failed\":{\"RESOURCE_EXHAUSTED\":1},\"wall_s\":2.000,"
            "\"images_per_s\":1.500,"
            "\"latency_ms\":{\"p50\":10.000,\"p95\":30.000,\"p99\":30.000,\"mean\":20.000},"
            "\"first_preview_ms\":{\"p50\":3.000,\"p95\":3.000,\"p99\":3.000},"
            "\"first_progress_ms\":{\"p50\":2.000},"
            "\"by_plan\":{\"plain\":{\"OK\":2,\"RESOURCE_EXHAUSTED\":1}},\"cancel_job_calls\":{},"
            "\"cancel_job_late\":0,\"expected\":3,\"unexpected\":0,\"unexpected_by_code\":{}}");
}

TEST_F(ClosedRunReport, HumanLines) {
  EXPECT_EQ(HumanSummary(load_, run_, summary_),
            "closed, concurrency 2: 2 ok, failed: 1 RESOURCE_EXHAUSTED in 2.00 s, 1.50 images/s; "
            "latency ms p50 10 p95 30 p99 30 mean 20; first preview ms p50 3 p95 3 p99 3; "
            "first progress ms p50 2");
  EXPECT_EQ(HumanOutcomes(summary_), "by plan: plain 2 OK, 1 RESOURCE_EXHAUSTED; expected 3, "
                                     "unexpected 0");
  EXPECT_EQ(ExitStatus(run_, summary_), 0);
}

TEST(JsonSummary, PoissonMixRunHasItsLoadKeysAndTheSoakAccounting) {
  LoadOptions load;
  load.mode = "poisson";
  load.rate = 6;
  load.duration_s = 600;
  load.warmup_s = 300;
  load.mix = true;
  load.mix_samplers = "ddim,euler";
  load.mix_img2img = 0.1;
  load.cancel_fraction = 0.1;
  load.cancel_job_fraction = 0.1;
  load.deadline_fraction = 0.1;
  MeasuredRun run;
  run.samples = {Ok(1, 100, 20, 30),
                 WithCancelJob(Ok(2, 200, 10, std::nullopt, Plan::kCancelJob), StatusCode::OK,
                               true),
                 WithCancelJob(Failed(StatusCode::CANCELLED, Plan::kCancelJob),
                               StatusCode::UNAVAILABLE, false)};
  run.wall = absl::Seconds(10);
  run.max_in_flight = 7;
  run.max_send_lag = absl::Microseconds(1500);
  const std::string line = JsonSummary(load, run, Summarize(run.samples));

  const auto in_order = nlohmann::ordered_json::parse(line);
  std::vector<std::string> keys;
  for (const auto& [key, value] : in_order.items()) keys.push_back(key);
  EXPECT_EQ(keys, (std::vector<std::string>{
                      "mode", "rate", "duration_s", "warmup_s", "max_in_flight",
                      "max_send_lag_ms", "mix", "mix_samplers", "mix_img2img", "cancel_fraction",
                      "cancel_job_fraction", "deadline_fraction", "short_timeout_s", "requests",
                      "ok", "failed", "wall_s", "images_per_s", "latency_ms", "first_preview_ms",
                      "first_progress_ms", "by_plan", "cancel_job_calls", "cancel_job_late",
                      "expected", "unexpected", "unexpected_by_code"}));
  const auto json = nlohmann::json::parse(line);
  EXPECT_EQ(json["mode"], "poisson");
  EXPECT_DOUBLE_EQ(json["rate"].get<double>(), 6);
  EXPECT_EQ(json["max_in_flight"], 7);
  EXPECT_DOUBLE_EQ(json["max_send_lag_ms"].get<double>(), 1.5);
  EXPECT_EQ(json["mix"], true);
  EXPECT_EQ(json["mix_samplers"], "ddim,euler");
  EXPECT_EQ(json["requests"], 3);
  EXPECT_EQ(json["ok"], 2);
  EXPECT_EQ(json["failed"], nlohmann::json({{"CANCELLED", 1}}));
  EXPECT_DOUBLE_EQ(json["images_per_s"].get<double>(), 0.3);
  EXPECT_DOUBLE_EQ(json["latency_ms"]["p50"].get<double>(), 100);
  EXPECT_DOUBLE_EQ(json["latency_ms"]["p99"].get<double>(), 200);
  EXPECT_DOUBLE_EQ(json["latency_ms"]["mean"].get<double>(), 150);
  EXPECT_DOUBLE_EQ(json["first_preview_ms"]["p95"].get<double>(), 30);
  EXPECT_DOUBLE_EQ(json["first_progress_ms"]["p50"].get<double>(), 10);
  EXPECT_EQ(json["by_plan"],
            nlohmann::json(
                {{"plain", {{"OK", 1}}}, {"cancel_job", {{"CANCELLED", 1}, {"OK", 1}}}}));
  EXPECT_EQ(json["cancel_job_calls"], nlohmann::json({{"OK", 1}, {"UNAVAILABLE", 1}}));
  EXPECT_EQ(json["cancel_job_late"], 1);
  EXPECT_EQ(json["expected"], 2);
  EXPECT_EQ(json["unexpected"], 2);
  EXPECT_EQ(json["unexpected_by_code"],
            nlohmann::json({{"CANCELLED", 1}, {"CancelJob UNAVAILABLE", 1}}));
}

TEST(JsonSummary, NoSamplesAndNoWallGiveNulls) {
  LoadOptions load;
  MeasuredRun run;
  const Summary summary = Summarize(run.samples);
  const auto json = nlohmann::json::parse(JsonSummary(load, run, summary));
  EXPECT_TRUE(json["images_per_s"].is_null());
  EXPECT_TRUE(json["latency_ms"]["p50"].is_null());
  EXPECT_TRUE(json["latency_ms"]["mean"].is_null());
  EXPECT_TRUE(json["first_preview_ms"]["p95"].is_null());
  EXPECT_EQ(json["requests"], 0);
  EXPECT_EQ(ExitStatus(run, summary), 2);  // UNKNOWN
}

TEST(ExitStatus, IsTheFirstFailuresCodeWhenNothingSucceeded) {
  MeasuredRun run;
  run.samples = {Failed(StatusCode::UNAVAILABLE), Failed(StatusCode::INTERNAL)};
  EXPECT_EQ(ExitStatus(run, Summarize(run.samples)), 14);
}

}  // namespace
}  // namespace imagegen::loadgen
