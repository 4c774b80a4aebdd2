// Metrics: what each engine and server event does to the exported families, read back through
// prometheus-cpp's own text serializer (what a scrape returns).
#include "server/metrics.h"

#include <string>

#include <gtest/gtest.h>
#include <prometheus/text_serializer.h>

#include "absl/strings/match.h"
#include "tests/support/http_get.h"

namespace imagegen {
namespace {

using test::SumSamples;

std::string Scrape(const Metrics& metrics) {
  return prometheus::TextSerializer().Serialize(metrics.registry()->Collect());
}

TEST(Metrics, RequestsAreCountedByModelAndOutcome) {
  Metrics m;
  m.OnJobFinished("tiny", JobOutcome::kOk, absl::Seconds(1), 2);
  m.OnJobFinished("tiny", JobOutcome::kCancelled, absl::Seconds(1), 0);
  m.OnJobRejected("tiny");
  m.OnInvalidRequest("unknown");
  m.OnUnauthenticated();
  const std::string text = Scrape(m);
  EXPECT_EQ(SumSamples(text, "imagegen_requests_total", {"model=\"tiny\"", "outcome=\"ok\""}), 1.0) << text;
  EXPECT_EQ(SumSamples(text, "imagegen_requests_total", {"outcome=\"cancelled\""}), 1.0);
  EXPECT_EQ(SumSamples(text, "imagegen_requests_total", {"outcome=\"rejected\""}), 1.0);
  EXPECT_EQ(SumSamples(text, "imagegen_requests_total", {"model=\"unknown\"", "outcome=\"invalid\""}), 1.0);
  EXPECT_EQ(SumSamples(text, "imagegen_requests_total", {"outcome=\"unauthenticated\""}), 1.0);
  EXPECT_EQ(SumSamples(text, "imagegen_images_generated_total", {"model=\"tiny\""}), 2.0);
  EXPECT_EQ(SumSamples(text, "imagegen_request_duration_seconds_count", {"model=\"tiny\""}), 2.0);
}

TEST(Metrics, ModelCallsFeedStepsRowsAndDurations) {
  Metrics m;
  m.OnModelCall("tiny", 6, 3, absl::Milliseconds(4));
  m.OnModelCall("tiny", 2, 0, absl::Milliseconds(5));  // heun's first call of a step
  const std::string text = Scrape(m);
  EXPECT_EQ(SumSamples(text, "imagegen_denoising_steps_total", {"model=\"tiny\""}), 3.0) << text;
  EXPECT_EQ(SumSamples(text, "imagegen_batch_rows_sum", {"model=\"tiny\""}), 8.0);
  EXPECT_EQ(SumSamples(text, "imagegen_step_duration_seconds_count", {"model=\"tiny\""}), 2.0);
}

TEST(Metrics, PreviewsSentReplacedAndFailedAreCounted) {
  Metrics m;
  m.OnPreviewsSent("tiny", 4);
  m.OnPreviewsReplaced("tiny", 2);
  m.OnPreviewFailed("tiny", "job-1", absl::InternalError("encoder"));
  m.OnFirstPreview("tiny", absl::Milliseconds(30));
  const std::string text = Scrape(m);
  EXPECT_EQ(SumSamples(text, "imagegen_previews_sent_total", {"model=\"tiny\""}), 4.0) << text;
  EXPECT_EQ(SumSamples(text, "imagegen_previews_replaced_total", {"model=\"tiny\""}), 2.0);
  EXPECT_EQ(SumSamples(text, "imagegen_preview_failures_total", {"model=\"tiny\""}), 1.0);
  EXPECT_EQ(SumSamples(text, "imagegen_time_to_first_preview_seconds_count", {"model=\"tiny\""}), 1.0);
  EXPECT_FALSE(absl::StrContains(text, "job-1"));  // job ids are never labels
}

TEST(Metrics, GaugesHoldTheLastReport) {
  Metrics m;
  m.OnQueueDepth(5);
  m.OnQueueDepth(2);
  m.OnActiveJobs(3);
  m.OnJobStarted("tiny", absl::Milliseconds(20));
  const std::string text = Scrape(m);
  EXPECT_EQ(SumSamples(text, "imagegen_queue_depth", {}), 2.0) << text;
  EXPECT_EQ(SumSamples(text, "imagegen_active_jobs", {}), 3.0);
  EXPECT_EQ(SumSamples(text, "imagegen_queue_duration_seconds_count", {"model=\"tiny\""}), 1.0);
}

}  // namespace
}  // namespace imagegen
