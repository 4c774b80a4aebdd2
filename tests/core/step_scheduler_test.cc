// The step scheduler over the admission queue, with a fake pipeline and a fake clock: every
// interleaving below is decided by the test, none by timing. (The queue alone: job_queue_test.cc.)
#include "core/engine/step_scheduler.h"

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

#include "core/engine/job_queue.h"
#include "core/image/png_codec.h"
#include "tests/support/fake_engine_observer.h"
#include "tests/support/fake_job_listener.h"
#include "tests/support/fake_pipeline.h"
#include "tests/support/test_bundle.h"

namespace imagegen {
namespace {

using test::FakeClock;
using test::FakeEngineObserver;
using test::FakeJobListener;
using test::FakePipeline;
using Ids = std::vector<std::string>;

class StepSchedulerTest : public ::testing::Test {
 protected:
  void Build(StepScheduler::Options options, int capacity = 16) {
    queue_ = std::make_unique<JobQueue>(capacity, 0, absl::Seconds(10), &clock_);
    scheduler_ = std::make_unique<StepScheduler>(
        options, queue_.get(), &pipeline_, &clock_, &observer_, [this](Job& job) { started_.push_back(job.request.job_id); },
        [](Job& job, absl::Status status, JobResult* result) {
          std::optional<JobResult> delivered;
          if (status.ok()) delivered = std::move(*result);
          job.events.RecordEnd(std::move(status), std::move(delivered));
          job.events.Deliver();
        });
  }
  void SetUp() override { Build(StepScheduler::Options{}); }

  // Queues a job of `steps` steps and `rows` UNet rows (1 image without guidance, or 2 rows = 1
  // guided image, ...).
  std::shared_ptr<FakeJobListener> Push(const std::string& id, int steps, int rows = 2, int priority = 0,
                                        absl::Time deadline = absl::InfiniteFuture(), int width = 32) {
    auto listener = std::make_shared<FakeJobListener>();
    auto job = std::make_shared<Job>(listener);
    job->request.principal = principal_;
    job->request.job_id = id;
    job->request.model = "m";
    job->request.steps = steps;
    job->request.guidance_scale = rows % 2 == 0 ? 3.0 : 1.0;
    job->request.num_images = rows % 2 == 0 ? rows / 2 : rows;
    job->request.priority = priority;
    job->request.deadline = deadline;
    job->request.width = width;
    job->request.height = 32;
    job->accepted_at = clock_.Now();
    job->sequence = next_sequence_++;
    jobs_[id] = job;
    EXPECT_TRUE(queue_->Push(job).ok());
    return listener;
  }

  FakeClock clock_;
  FakePipeline pipeline_;
  FakeEngineObserver observer_;
  std::unique_ptr<JobQueue> queue_;
  std::unique_ptr<StepScheduler> scheduler_;
  std::map<std::string, std::shared_ptr<Job>> jobs_;
  std::vector<std::string> started_;
  uint64_t next_sequence_ = 0;
  std::string principal_;  // of the jobs Push makes
};

TEST_F(StepSchedulerTest, JobsJoinAndLeaveAtStepBoundaries) {
  auto a = Push("a", 4);
  ASSERT_TRUE(scheduler_->Tick());
  auto b = Push("b", 2);
  ASSERT_TRUE(scheduler_->Tick());
  ASSERT_TRUE(scheduler_->Tick());
  EXPECT_TRUE(b->ended());  // b's two steps are done: it left at once
  EXPECT_FALSE(a->ended());
  ASSERT_TRUE(scheduler_->Tick());
  EXPECT_TRUE(a->ended());
  EXPECT_EQ(pipeline_.calls, (std::vector<Ids>{{"a"}, {"a", "b"}, {"a", "b"}, {"a"}}));
  EXPECT_EQ(a->progress_steps(), (std::vector<int>{1, 2, 3, 4}));
  EXPECT_EQ(b->progress_steps(), (std::vector<int>{1, 2}));
  EXPECT_TRUE(a->final_status().ok());
  EXPECT_FALSE(scheduler_->Tick());  // nothing left
}

TEST_F(StepSchedulerTest, NewJobsTextIsEncodedTogether) {
  Push("a", 2);
  Push("b", 2);
  Push("c", 2);
  scheduler_->Tick();
  EXPECT_EQ(pipeline_.starts, (std::vector<Ids>{{"a", "b", "c"}}));
}

TEST_F(StepSchedulerTest, RowBudgetBoundsEveryCall) {
  StepScheduler::Options options;
  options.max_batch_rows = 4;
  Build(options);
  Push("a", 2, 2);
  Push("b", 2, 2);
  auto c = Push("c", 2, 2);
  scheduler_->Tick();
  EXPECT_EQ(pipeline_.calls.back(), (Ids{"a", "b"}));
  EXPECT_EQ(c->queue_positions().back(), 0);  // next in line
  scheduler_->Tick();  // a and b finish
  scheduler_->Tick();
  EXPECT_EQ(pipeline_.calls.back(), (Ids{"c"}));
  for (int rows : pipeline_.call_rows) EXPECT_LE(rows, 4);
}

TEST_F(StepSchedulerTest, AJobLargerThanTheBudgetRunsAloneWhenIdle) {
  StepScheduler::Options options;
  options.max_batch_rows = 4;
  Build(options);
  auto big = Push("big", 1, 16);
  auto small = Push("small", 1, 2);
  scheduler_->Tick();
  EXPECT_EQ(pipeline_.calls.back(), (Ids{"big"}));
  EXPECT_TRUE(big->ended());
  scheduler_->Tick();
  EXPECT_EQ(pipeline_.calls.back(), (Ids{"small"}));
}

TEST_F(StepSchedulerTest, HigherPriorityStartsFirstAndFifoWithinAPriority) {
  StepScheduler::Options options;
  options.max_batch_rows = 2;  // one job at a time
  Build(options);
  Push("low", 1, 2, 0);
  Push("high1", 1, 2, 5);
  Push("high2", 1, 2, 5);
  for (int i = 0; i < 3; ++i) scheduler_->Tick();
  EXPECT_EQ(started_, (Ids{"high1", "high2", "low"}));
}

TEST_F(StepSchedulerTest, WaitingAgesPriorityUpSoLowPriorityIsNotStarved) {
  StepScheduler::Options options;
  options.max_batch_rows = 2;
  Build(options);  // one priority level per 10 s waited
  Push("low", 1, 2, 0);
  clock_.Advance(absl::Seconds(60));  // low has gained 6 levels
  Push("high", 1, 2, 5);
  scheduler_->Tick();
  scheduler_->Tick();
  EXPECT_EQ(started_, (Ids{"low", "high"}));
}

TEST_F(StepSchedulerTest, QueuedJobsHearTheirPositionWhenItChanges) {
  StepScheduler::Options options;
  options.max_batch_rows = 2;
  Build(options);
  auto a = Push("a", 1);
  auto b = Push("b", 1);
  auto c = Push("c", 1);
  EXPECT_EQ(a->accepted_position(), 0);
  EXPECT_EQ(b->accepted_position(), 1);
  EXPECT_EQ(c->accepted_position(), 2);
  scheduler_->Tick();  // a runs and ends
  EXPECT_EQ(b->queue_positions(), (std::vector<int>{0}));
  EXPECT_EQ(c->queue_positions(), (std::vector<int>{1}));
  auto urgent = Push("urgent", 1, 2, 50);
  EXPECT_EQ(urgent->accepted_position(), 0);
  EXPECT_EQ(b->queue_positions(), (std::vector<int>{0, 1}));
}

TEST_F(StepSchedulerTest, DeadlinePassedWhileQueuedEndsTheJobWithoutRunningIt) {
  StepScheduler::Options options;
  options.max_batch_rows = 2;
  Build(options);
  Push("busy", 5);
  auto late = Push("late", 2, 2, 0, clock_.Now() + absl::Seconds(1));
  scheduler_->Tick();
  clock_.Advance(absl::Seconds(2));
  scheduler_->Tick();
  EXPECT_EQ(late->final_status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(late->progress_steps().empty());
  EXPECT_EQ(std::count(started_.begin(), started_.end(), "late"), 0);
}

TEST_F(StepSchedulerTest, DeadlinePassedWhileRunningEndsItAtTheNextStep) {
  auto a = Push("a", 10, 2, 0, clock_.Now() + absl::Seconds(1));
  auto b = Push("b", 3);
  scheduler_->Tick();
  clock_.Advance(absl::Seconds(2));
  scheduler_->Tick();
  EXPECT_EQ(a->final_status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(a->progress_steps(), (std::vector<int>{1}));
  EXPECT_EQ(pipeline_.calls.back(), (Ids{"b"}));  // b goes on alone
  scheduler_->Tick();
  EXPECT_TRUE(b->final_status().ok());
}

// gRPC cancels a call when its deadline passes: the job ends as a deadline, not a cancel.
TEST_F(StepSchedulerTest, ACancelAfterTheDeadlineIsDeadlineExceeded) {
  auto a = Push("a", 10, 2, 0, clock_.Now() + absl::Seconds(1));
  scheduler_->Tick();
  clock_.Advance(absl::Seconds(2));
  jobs_["a"]->stop.store(static_cast<int>(StopReason::kCancelled));
  scheduler_->Tick();
  EXPECT_EQ(a->final_status().code(), absl::StatusCode::kDeadlineExceeded) << a->final_status();
}

TEST_F(StepSchedulerTest, CancelledJobsLeaveTheBatchAtTheNextStepAndQueuedOnesAtOnce) {
  auto a = Push("a", 10);
  auto b = Push("b", 3);
  scheduler_->Tick();
  jobs_["a"]->stop.store(static_cast<int>(StopReason::kCancelled));
  scheduler_->Tick();
  EXPECT_EQ(a->final_status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(pipeline_.calls.back(), (Ids{"b"}));
  EXPECT_EQ(scheduler_->num_running(), 1);  // a's state is gone
  Push("queued", 3);
  ASSERT_NE(queue_->Remove("", "queued"), nullptr);
  EXPECT_EQ(queue_->size(), 0);
}

// CancelJob promises that the job's call ends CANCELLED once it answers OK (Engine::Cancel is
// Job::RequestStop on a running job), even when the cancel lands during the last step.
TEST_F(StepSchedulerTest, ACancelDuringTheLastStepEndsTheJobCancelled) {
  auto a = Push("a", 2);
  scheduler_->Tick();
  bool accepted = false;
  pipeline_.during_step = [&] { accepted = jobs_["a"]->RequestStop(StopReason::kCancelled); };
  scheduler_->Tick();  // the last step
  EXPECT_TRUE(accepted);
  EXPECT_EQ(a->final_status().code(), absl::StatusCode::kCancelled) << a->final_status();
  EXPECT_FALSE(a->result().has_value());
}

// Once the worker has claimed a job's result (decoding it), a cancel is refused, so that no
// CancelJob answers OK for a job that then ends OK.
TEST_F(StepSchedulerTest, ACancelWhileTheResultIsDecodedIsRefused) {
  auto a = Push("a", 2);
  bool accepted = true;
  pipeline_.during_finish = [&] { accepted = jobs_["a"]->RequestStop(StopReason::kCancelled); };
  scheduler_->Tick();
  scheduler_->Tick();
  EXPECT_FALSE(accepted);
  EXPECT_TRUE(a->final_status().ok()) << a->final_status();
  // Shutdown does not take a claimed result away either.
  EXPECT_FALSE(jobs_["a"]->RequestStop(StopReason::kShutdown));
}

TEST_F(StepSchedulerTest, AFailingModelCallFailsOnlyItsJobsAndTheWorkerGoesOn) {
  auto a = Push("a", 3);
  auto poison = Push("poison", 3);
  auto other_size = Push("wide", 2, 2, 0, absl::InfiniteFuture(), 64);
  pipeline_.poison_job_id = "poison";
  scheduler_->Tick();  // a + poison share a call: both fail
  EXPECT_EQ(a->final_status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(poison->final_status().code(), absl::StatusCode::kInternal);
  EXPECT_NE(poison->final_status().message().find("fake UNet failure"), std::string::npos);
  scheduler_->Tick();
  scheduler_->Tick();
  EXPECT_TRUE(other_size->final_status().ok());
  auto next = Push("next", 1);
  scheduler_->Tick();
  EXPECT_TRUE(next->final_status().ok());
}

TEST_F(StepSchedulerTest, AJobItsPipelineRefusesFailsAloneAtStart) {
  Push("ok", 1);
  auto refused = Push("refused", 1);
  jobs_["refused"]->request.prompt = "fail start";
  scheduler_->Tick();
  EXPECT_EQ(refused->final_status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(jobs_.count("ok"));
  EXPECT_EQ(pipeline_.calls.back(), (Ids{"ok"}));
}

// A text encoder that throws fails the new jobs of its own model only (one Start per model),
// and its message names that model.
TEST_F(StepSchedulerTest, AThrowingStartFailsOnlyTheNewJobsOfItsModel) {
  auto a = Push("a", 1);
  auto b = Push("b", 1);
  auto c = Push("c", 1);
  auto d = Push("d", 1);
  for (const char* id : {"b", "d"}) jobs_[id]->request.model = "m2";
  jobs_["d"]->request.prompt = "throw start";
  scheduler_->Tick();
  EXPECT_EQ(pipeline_.starts, (std::vector<Ids>{{"a", "c"}, {"b", "d"}}));
  for (const auto& failed : {b, d}) {
    EXPECT_EQ(failed->final_status().code(), absl::StatusCode::kInternal);
    EXPECT_EQ(failed->final_status().message(), "model m2 failed: fake text encoder failure");
  }
  EXPECT_EQ(pipeline_.calls, (std::vector<Ids>{{"a", "c"}}));
  EXPECT_TRUE(a->final_status().ok());
  EXPECT_TRUE(c->final_status().ok());
}

TEST_F(StepSchedulerTest, DifferentImageSizesRunInTurnsNotTogether) {
  Push("small-a", 3);
  Push("wide", 3, 2, 0, absl::InfiniteFuture(), 64);
  Push("small-b", 3);
  for (int i = 0; i < 4; ++i) scheduler_->Tick();
  EXPECT_EQ(pipeline_.calls,
            (std::vector<Ids>{{"small-a", "small-b"}, {"wide"}, {"small-a", "small-b"}, {"wide"}}));
}

TEST_F(StepSchedulerTest, RequestLevelBatchingAdmitsOnlyWhenTheBatchHasEnded) {
  StepScheduler::Options options;
  options.request_level = true;
  Build(options);
  Push("a", 3);
  scheduler_->Tick();
  Push("b", 1);
  scheduler_->Tick();
  scheduler_->Tick();  // a ends
  scheduler_->Tick();
  EXPECT_EQ(pipeline_.calls, (std::vector<Ids>{{"a"}, {"a"}, {"a"}, {"b"}}));
}

TEST_F(StepSchedulerTest, PreviewsComeEveryNStepsAndTheFirstIsReported) {
  jobs_.clear();
  auto a = Push("a", 4);
  jobs_["a"]->request.preview_every_n_steps = 2;
  for (int i = 0; i < 4; ++i) scheduler_->Tick();
  const auto progress = a->progress();
  ASSERT_EQ(progress.size(), 4u);
  EXPECT_TRUE(progress[0].previews.empty());
  ASSERT_EQ(progress[1].previews.size(), 1u);
  EXPECT_EQ(progress[1].previews[0].data, "preview 2");
  EXPECT_EQ(progress[3].previews[0].data, "preview 4");
}

// Progress counts denoising steps, not model calls: a sampler of two calls per step (heun)
// reports each step once, when its second call is done, and previews count the same steps.
TEST_F(StepSchedulerTest, ProgressAndPreviewsCountStepsNotModelCalls) {
  pipeline_.calls_per_step = 2;
  auto a = Push("a", 3);
  jobs_["a"]->request.preview_every_n_steps = 2;
  for (int i = 0; i < 6; ++i) scheduler_->Tick();
  EXPECT_EQ(pipeline_.calls.size(), 6u);
  EXPECT_EQ(a->progress_steps(), (std::vector<int>{1, 2, 3}));
  const auto progress = a->progress();
  ASSERT_EQ(progress.size(), 3u);
  for (const ProgressUpdate& p : progress) EXPECT_EQ(p.total_steps, 3);
  EXPECT_TRUE(progress[0].previews.empty());
  ASSERT_EQ(progress[1].previews.size(), 1u);
  EXPECT_EQ(progress[1].previews[0].data, "preview 2");
  EXPECT_TRUE(progress[2].previews.empty());
  // The steps metric counts the same unit: only the calls that completed a step.
  EXPECT_EQ(observer_.model_call_steps(), (std::vector<int>{0, 1, 0, 1, 0, 1}));
  EXPECT_TRUE(a->final_status().ok());
}

// A preview that cannot be made is counted and the job goes on to its result.
TEST_F(StepSchedulerTest, AFailingPreviewIsReportedAndTheJobGoesOn) {
  auto a = Push("a", 2);
  jobs_["a"]->request.preview_every_n_steps = 1;
  pipeline_.broken_preview_job_id = "a";
  scheduler_->Tick();
  scheduler_->Tick();
  EXPECT_EQ(observer_.preview_failures(), (std::vector<std::string>{"a", "a"}));
  EXPECT_EQ(observer_.first_previews(), 0);
  EXPECT_EQ(a->progress_steps(), (std::vector<int>{1, 2}));
  EXPECT_TRUE(a->final_status().ok());
}

// The result says what ran, with the defaults resolved, and what the model could not take.
TEST_F(StepSchedulerTest, TheResultCarriesWhatRanAndTheWarnings) {
  auto a = Push("a", 2);
  jobs_["a"]->request.sampler = "heun";
  scheduler_->Tick();
  scheduler_->Tick();
  const std::optional<JobResult> result = a->result();
  ASSERT_TRUE(result.has_value());
  const JobResult& r = *result;
  EXPECT_EQ(r.model, "m");
  EXPECT_EQ(r.sampler, "heun");
  EXPECT_EQ(r.steps, 2);
  EXPECT_EQ(r.guidance_scale, 3.0);
  EXPECT_EQ(r.warnings, (std::vector<std::string>{"fake warning for a"}));
}

TEST_F(StepSchedulerTest, FailAllEndsEveryRunningJob) {
  auto a = Push("a", 5);
  auto b = Push("b", 5);
  scheduler_->Tick();
  scheduler_->FailAll(absl::UnavailableError("shutting down"));
  EXPECT_EQ(a->final_status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(b->final_status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(scheduler_->num_running(), 0);
}

// Issue 14: one client floods with large jobs (a different size, so never batched with the small
// one); another client's small job must run its steps between the flood's, not after it. The
// fake clock charges 1 s per call of the flood and 10 ms per call of the small job.
TEST_F(StepSchedulerTest, AFloodingPrincipalDelaysAnotherBySomeStepsAtMost) {
  pipeline_.on_call = [this](const Ids& ids) {
    clock_.Advance(ids.front()[0] == 'a' ? absl::Seconds(1) : absl::Milliseconds(10));
  };
  principal_ = "alice";
  for (int i = 0; i < 8; ++i) Push(absl::StrCat("a", i), 30, 8, 100, absl::InfiniteFuture(), 64);
  scheduler_->Tick();
  scheduler_->Tick();
  principal_ = "bob";
  auto small = Push("small", 30, 2);
  const size_t calls_before = pipeline_.calls.size();
  for (int i = 0; i < 200 && !small->ended(); ++i) scheduler_->Tick();
  ASSERT_TRUE(small->ended());
  EXPECT_TRUE(small->final_status().ok());
  int flood_calls = 0;
  for (size_t i = calls_before; i < pipeline_.calls.size(); ++i) flood_calls += pipeline_.calls[i].front()[0] == 'a';
  // Admitted although alice's four jobs fill the row budget, and done before her next step: it
  // starts with the credit of the call it waited for (the old rule, the group that waited
  // longest, alternated: 30 of her steps).
  EXPECT_EQ(flood_calls, 0);
  EXPECT_LE(clock_.Now() - jobs_["small"]->accepted_at, absl::Seconds(1));
}

TEST_F(StepSchedulerTest, AdmissionTakesTurnsBetweenPrincipalsWhateverTheirPriorities) {
  StepScheduler::Options options;
  options.max_batch_rows = 4;  // two jobs of 2 rows
  Build(options);
  principal_ = "alice";
  Push("a1", 1, 2, 100);
  Push("a2", 1, 2, 100);
  Push("a3", 1, 2, 100);
  principal_ = "bob";
  Push("b1", 1, 2, -5);
  for (int i = 0; i < 3; ++i) scheduler_->Tick();
  EXPECT_EQ(started_, (Ids{"a1", "b1", "a2", "a3"}));
}

TEST_F(StepSchedulerTest, ACallThatRunsOutOfMemoryIsRetriedWithHalfItsJobs) {
  pipeline_.max_rows = 4;
  auto a = Push("a", 2, 2);
  auto b = Push("b", 2, 2);
  auto c = Push("c", 2, 2);
  scheduler_->Tick();
  EXPECT_EQ(observer_.batch_splits(), (std::vector<int>{6}));
  EXPECT_EQ(pipeline_.calls, (std::vector<Ids>{{"a"}, {"b", "c"}}));
  for (int i = 0; i < 4; ++i) scheduler_->Tick();
  for (const auto& l : {a, b, c}) EXPECT_TRUE(l->final_status().ok()) << l->final_status();
  // A single job that does not fit fails, alone.
  auto big = Push("big", 2, 6);
  auto small = Push("small", 2, 2);
  for (int i = 0; i < 6; ++i) scheduler_->Tick();
  EXPECT_EQ(big->final_status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(small->final_status().ok());
}

// Issue 14: a queued job holds its init image encoded; the worker decodes it when the job starts,
// and an undecodable one fails only its own job.
TEST_F(StepSchedulerTest, InitImagesAreDecodedWhenTheJobStarts) {
  RasterImage gray{32, 32, 1, std::vector<uint8_t>(32 * 32, 100)};
  absl::StatusOr<std::string> png = EncodePng(gray);
  ASSERT_TRUE(png.ok());
  auto good = Push("good", 2, 2);
  auto bad = Push("bad", 2, 2);
  jobs_["good"]->request.init_image_encoded = *png;
  jobs_["bad"]->request.init_image_encoded = png->substr(0, 60);  // the header, but no pixels
  scheduler_->Tick();
  EXPECT_EQ(pipeline_.starts, (std::vector<Ids>{{"good"}}));
  EXPECT_EQ(pipeline_.start_init_pixels, (std::vector<size_t>{32 * 32}));
  EXPECT_EQ(bad->final_status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(bad->final_status().message(), "init_image")) << bad->final_status();
  scheduler_->Tick();
  EXPECT_TRUE(good->final_status().ok());
}

// Rows of images larger than the model's default count more of the budget (Job::row_weight,
// RowWeight), so that a call of large images stays as short as a call of default ones.
TEST_F(StepSchedulerTest, LargeImagesTakeMoreOfTheRowBudget) {
  StepScheduler::Options options;
  options.max_batch_rows = 16;
  Build(options);
  Push("big1", 2, 2, 0, absl::InfiniteFuture(), 64);
  Push("big2", 2, 2, 0, absl::InfiniteFuture(), 64);
  jobs_["big1"]->row_weight = 8;  // 2 rows x 8 = 16: the whole budget of a call
  jobs_["big2"]->row_weight = 8;
  scheduler_->Tick();
  EXPECT_EQ(started_, (Ids{"big1", "big2"}));  // admission counts plain rows
  EXPECT_EQ(pipeline_.calls.back(), (Ids{"big1"}));
  scheduler_->Tick();
  EXPECT_EQ(pipeline_.calls.back(), (Ids{"big2"}));
}

TEST(RowWeight, IsTheImagesPixelsOverTheDefaultsRoundedUp) {
  const ModelConfig model = test::TinyModelConfig();  // 32x32
  JobRequest r = test::TinyJobRequest("w");
  EXPECT_EQ(RowWeight(r, model), 1);
  r.width = r.height = 16;
  EXPECT_EQ(RowWeight(r, model), 1);
  r.width = r.height = 40;
  EXPECT_EQ(RowWeight(r, model), 2);
  r.width = r.height = 256;
  EXPECT_EQ(RowWeight(r, model), 64);
}

}  // namespace
}  // namespace imagegen
