// The engine on the tiny exported bundle: admission, event order, previews, cancellation,
// deadlines, shutdown and determinism; and ValidateJobRequest's messages.
//
// Tests that need the worker to be inside a job at a known point pin it with
// FakeJobListener::BlockAtStep (tests/support/fake_job_listener.h), which deliberately breaks the
// listener's never-block contract. Nothing here sleeps or depends on how fast a step is.
#include "core/engine/engine.h"

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "core/image/png_codec.h"
#include "core/model/model_config.h"
#include "tests/support/fake_engine_observer.h"
#include "tests/support/fake_job_listener.h"
#include "tests/support/fake_pipeline.h"
#include "tests/support/test_bundle.h"
#include "tests/support/test_device.h"

namespace imagegen {
namespace {

using test::FakeEngineObserver;
using test::FakeJobListener;
using test::TinyJobRequest;
using Event = FakeJobListener::Event;

class EngineTest : public ::testing::Test {
 protected:
  virtual Engine::Options EngineOptions() {
    Engine::Options options;
    options.devices = {test::TestDevice()};  // IMAGEGEN_TEST_DEVICE (scripts/gpu_check.sh)
    options.intra_op_threads = 1;  // ctest runs two test processes on two cores
    return options;
  }

  void SetUp() override {
    auto engine = Engine::Create(EngineOptions(), {test::TestBundleDir()}, &observer_);
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = *std::move(engine);
  }

  void TearDown() override {
    // A pinned worker must be let go before the engine's destructor joins it.
    for (const auto& listener : listeners_) listener->Release();
    engine_.reset();
  }

  std::shared_ptr<FakeJobListener> NewListener() {
    listeners_.push_back(std::make_shared<FakeJobListener>());
    return listeners_.back();
  }

  // Submits a job that holds the worker in its OnProgress(`step`) until released, and waits
  // until it does.
  std::shared_ptr<FakeJobListener> PinWorker(const std::string& job_id, int step = 1, int steps = 5) {
    auto listener = NewListener();
    listener->BlockAtStep(step);
    EXPECT_TRUE(engine_->Submit(TinyJobRequest(job_id, steps), listener).ok());
    EXPECT_TRUE(listener->WaitUntilBlocked()) << "the worker never reached step " << step;
    return listener;
  }

  // Submits `request` and waits for its end. The listener holds every event.
  std::shared_ptr<FakeJobListener> Run(JobRequest request) {
    auto listener = NewListener();
    const absl::Status status = engine_->Submit(std::move(request), listener);
    EXPECT_TRUE(status.ok()) << status;
    if (status.ok()) {
      EXPECT_TRUE(listener->WaitForEnd()) << "the job did not end";
    }
    return listener;
  }

  FakeEngineObserver observer_;  // Outlives engine_.
  std::vector<std::shared_ptr<FakeJobListener>> listeners_;
  std::unique_ptr<Engine> engine_;
};

TEST_F(EngineTest, ListsItsModel) {
  ASSERT_EQ(engine_->models().size(), 1u);
  EXPECT_EQ(engine_->models()[0]->name, test::kTinyModel);
  EXPECT_NE(engine_->FindModel(test::kTinyModel), nullptr);
  EXPECT_EQ(engine_->FindModel("sdxl"), nullptr);
}

TEST_F(EngineTest, EventsArriveAcceptedThenEveryStepThenOneResult) {
  JobRequest request = TinyJobRequest("ordered", 4);
  request.num_images = 2;
  request.seed = 100;
  auto listener = Run(request);
  ASSERT_TRUE(listener->final_status().ok()) << listener->final_status();
  EXPECT_EQ(listener->events(), (std::vector<Event>{Event::kAccepted, Event::kProgress, Event::kProgress,
                                                    Event::kProgress, Event::kProgress, Event::kResult}));
  EXPECT_EQ(listener->accepted_job_id(), "ordered");
  EXPECT_EQ(listener->accepted_position(), 0);
  EXPECT_EQ(listener->progress_steps(), (std::vector<int>{1, 2, 3, 4}));
  for (const ProgressUpdate& p : listener->progress()) {
    EXPECT_EQ(p.total_steps, 4);
    EXPECT_TRUE(p.previews.empty()) << "previews were not asked for";
  }
  EXPECT_EQ(listener->terminal_events(), 1);

  const JobResult result = *listener->result();
  EXPECT_EQ(result.job_id, "ordered");
  ASSERT_EQ(result.images.size(), 2u);
  for (int i = 0; i < 2; ++i) {
    const EncodedImage& image = result.images[i];
    EXPECT_EQ(image.index, i);
    EXPECT_EQ(image.seed, 100u + i);
    EXPECT_EQ(image.width, test::kTinySide);
    EXPECT_EQ(image.height, test::kTinySide);
    auto raster = DecodePng(image.data);
    ASSERT_TRUE(raster.ok()) << raster.status();
    EXPECT_EQ(raster->width, test::kTinySide);
    EXPECT_EQ(raster->height, test::kTinySide);
    EXPECT_EQ(raster->channels, test::kTinyImageChannels);
  }
  EXPECT_GE(result.timings.total, result.timings.denoise);
  EXPECT_EQ(observer_.jobs_finished(JobOutcome::kOk), 1);
  EXPECT_EQ(observer_.jobs_started(), 1);
  EXPECT_EQ(observer_.images_finished(), 2);
}

TEST_F(EngineTest, ImagesHaveTheRequestedSize) {
  JobRequest request = TinyJobRequest("wide", 2);
  request.width = 48;
  request.height = 16;
  auto listener = Run(request);
  ASSERT_TRUE(listener->final_status().ok()) << listener->final_status();
  ASSERT_EQ(listener->result()->images.size(), 1u);
  auto raster = DecodePng(listener->result()->images[0].data);
  ASSERT_TRUE(raster.ok()) << raster.status();
  EXPECT_EQ(raster->width, 48);
  EXPECT_EQ(raster->height, 16);
}

TEST_F(EngineTest, PreviewsComeEveryNStepsOnePerImage) {
  JobRequest request = TinyJobRequest("previews", 6);
  request.num_images = 2;
  request.preview_every_n_steps = 2;
  auto listener = Run(request);
  ASSERT_TRUE(listener->final_status().ok()) << listener->final_status();
  const std::vector<ProgressUpdate> progress = listener->progress();
  ASSERT_EQ(progress.size(), 6u);
  for (const ProgressUpdate& p : progress) {
    if (p.step % 2 != 0) {
      EXPECT_TRUE(p.previews.empty()) << "step " << p.step;
      continue;
    }
    ASSERT_EQ(p.previews.size(), 2u) << "step " << p.step;
    for (int i = 0; i < 2; ++i) {
      EXPECT_EQ(p.previews[i].index, i);
      auto raster = DecodePng(p.previews[i].data);
      ASSERT_TRUE(raster.ok()) << raster.status();
      EXPECT_EQ(raster->width, test::kTinySide);
      EXPECT_EQ(raster->height, test::kTinySide);
      EXPECT_EQ(raster->channels, 3) << "previews are the RGB latent projection";
    }
  }
  EXPECT_EQ(observer_.first_previews(), 1);
}

TEST_F(EngineTest, SameSeedGivesIdenticalImagesAndAnotherSeedDoesNot) {
  // DDPM draws fresh noise every step, so it exercises the seeded generators throughout.
  JobRequest request = TinyJobRequest("first", 5);
  request.sampler = "ddpm";
  request.seed = 42;
  auto first = Run(request);
  request.job_id = "second";
  auto second = Run(request);
  request.job_id = "other-seed";
  request.seed = 43;
  auto other = Run(request);
  ASSERT_TRUE(first->result() && second->result() && other->result());
  EXPECT_EQ(first->result()->images[0].data, second->result()->images[0].data);
  EXPECT_NE(first->result()->images[0].data, other->result()->images[0].data);
}

TEST_F(EngineTest, AnImageDependsOnItsSeedNotItsBatch) {
  JobRequest pair = TinyJobRequest("pair", 3);
  pair.num_images = 2;
  pair.seed = 10;
  JobRequest single = TinyJobRequest("single", 3);
  single.seed = 11;
  auto a = Run(pair);
  auto b = Run(single);
  ASSERT_TRUE(a->result() && b->result());
  ASSERT_EQ(a->result()->images.size(), 2u);
  EXPECT_EQ(a->result()->images[1].seed, 11u);
  EXPECT_EQ(a->result()->images[1].data, b->result()->images[0].data);
}

TEST_F(EngineTest, GuidanceOneRunsOneRowPerImageAndGuidanceTwoRows) {
  JobRequest plain = TinyJobRequest("plain", 3);
  plain.num_images = 3;
  plain.guidance_scale = 1.0;
  JobRequest guided = TinyJobRequest("guided", 2);
  guided.num_images = 3;
  guided.guidance_scale = 7.5;
  auto a = Run(plain);
  auto b = Run(guided);
  EXPECT_TRUE(a->final_status().ok()) << a->final_status();
  EXPECT_TRUE(b->final_status().ok()) << b->final_status();
  EXPECT_EQ(observer_.model_call_rows(), (std::vector<int>{3, 3, 3, 6, 6}));
  EXPECT_EQ(observer_.jobs_finished(JobOutcome::kOk), 2);
  EXPECT_EQ(observer_.images_finished(), 6);
}

TEST_F(EngineTest, EmptyPromptWithoutGuidanceIsAnUnconditionalSample) {
  JobRequest request = TinyJobRequest("unconditional", 2);
  request.prompt = "";
  request.guidance_scale = 1.0;
  auto listener = Run(request);
  EXPECT_TRUE(listener->final_status().ok()) << listener->final_status();
}

TEST_F(EngineTest, PromptLongerThanTheEncoderIsTruncatedNotRefused) {
  JobRequest request = TinyJobRequest("long-prompt", 2);
  request.prompt.clear();
  for (int i = 0; i < 40; ++i) absl::StrAppend(&request.prompt, "a black ankle boot ");  // 160 words
  ASSERT_LE(static_cast<int>(request.prompt.size()), engine_->limits().max_prompt_chars);
  auto listener = Run(request);
  EXPECT_TRUE(listener->final_status().ok()) << listener->final_status();
}

TEST_F(EngineTest, InvalidRequestIsRefusedAndItsListenerHearsNothing) {
  auto listener = NewListener();
  JobRequest request = TinyJobRequest("bad", 3);
  request.width = 30;
  const absl::Status status = engine_->Submit(request, listener);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("width"), absl::string_view::npos) << status;
  EXPECT_TRUE(listener->events().empty());
}

TEST_F(EngineTest, UnknownModelIsNotFound) {
  auto listener = NewListener();
  JobRequest request = TinyJobRequest("lost", 3);
  request.model = "sdxl";
  const absl::Status status = engine_->Submit(request, listener);
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
  EXPECT_NE(status.message().find("sdxl"), absl::string_view::npos) << status;
  EXPECT_TRUE(listener->events().empty());
}

TEST_F(EngineTest, DeadlineInThePastEndsTheJobDeadlineExceeded) {
  JobRequest request = TinyJobRequest("late", 3);
  request.deadline = absl::Now() - absl::Seconds(1);
  auto listener = Run(request);
  EXPECT_EQ(listener->final_status().code(), absl::StatusCode::kDeadlineExceeded) << listener->final_status();
  EXPECT_EQ(listener->events(), (std::vector<Event>{Event::kAccepted, Event::kError}));
  EXPECT_EQ(observer_.jobs_finished(JobOutcome::kDeadlineExceeded), 1);
}

TEST_F(EngineTest, QueuePositionCountsTheJobsWaitingAhead) {
  auto running = PinWorker("running");
  EXPECT_EQ(running->accepted_position(), 0);
  auto second = NewListener();
  auto third = NewListener();
  ASSERT_TRUE(engine_->Submit(TinyJobRequest("second"), second).ok());
  ASSERT_TRUE(engine_->Submit(TinyJobRequest("third"), third).ok());
  EXPECT_EQ(second->accepted_position(), 0);  // the running job is not in the queue
  EXPECT_EQ(third->accepted_position(), 1);
  EXPECT_EQ(engine_->queue_depth(), 2);
  running->Release();
  // With step-level batching the jobs run together and may end in any order.
  ASSERT_TRUE(running->WaitForEnd() && second->WaitForEnd() && third->WaitForEnd());
  EXPECT_TRUE(running->final_status().ok()) << running->final_status();
  EXPECT_TRUE(second->final_status().ok()) << second->final_status();
  EXPECT_TRUE(third->final_status().ok()) << third->final_status();
}

TEST_F(EngineTest, DuplicateJobIdIsRefusedWhileTheJobRuns) {
  auto running = PinWorker("twin");
  auto twin = NewListener();
  const absl::Status status = engine_->Submit(TinyJobRequest("twin"), twin);
  EXPECT_EQ(status.code(), absl::StatusCode::kAlreadyExists) << status;
  EXPECT_NE(status.message().find("twin"), absl::string_view::npos) << status;
  EXPECT_TRUE(twin->events().empty());
  running->Release();
  ASSERT_TRUE(running->WaitForEnd());
  EXPECT_TRUE(running->final_status().ok()) << running->final_status();
}

TEST_F(EngineTest, JobIdIsFreeOnceItsJobHasEnded) {
  // A client that hears the result may reuse the id at once.
  auto first = Run(TinyJobRequest("reused", 1));
  ASSERT_TRUE(first->final_status().ok()) << first->final_status();
  auto second = Run(TinyJobRequest("reused", 1));
  EXPECT_TRUE(second->final_status().ok()) << second->final_status();
  EXPECT_FALSE(engine_->Cancel("", "reused")) << "an ended job can still be cancelled";
}

TEST_F(EngineTest, CancelOfAQueuedJobEndsItAtOnce) {
  auto running = PinWorker("running");
  auto queued = NewListener();
  ASSERT_TRUE(engine_->Submit(TinyJobRequest("queued"), queued).ok());
  EXPECT_TRUE(engine_->Cancel("", "queued"));
  // Ended inside Cancel, while the worker is still held: no waiting.
  EXPECT_TRUE(queued->ended());
  EXPECT_EQ(queued->final_status().code(), absl::StatusCode::kCancelled) << queued->final_status();
  EXPECT_EQ(queued->events(), (std::vector<Event>{Event::kAccepted, Event::kError}));
  EXPECT_EQ(engine_->queue_depth(), 0);
  EXPECT_FALSE(engine_->Cancel("", "queued")) << "cancelled twice";
  EXPECT_EQ(observer_.jobs_finished(JobOutcome::kCancelled), 1);
  running->Release();
  ASSERT_TRUE(running->WaitForEnd());
  EXPECT_TRUE(running->final_status().ok()) << running->final_status();
}

TEST_F(EngineTest, CancelOfARunningJobEndsItAtTheNextStep) {
  auto running = PinWorker("running", /*step=*/2, /*steps=*/10);
  EXPECT_TRUE(engine_->Cancel("", "running"));
  EXPECT_FALSE(running->ended());
  running->Release();
  ASSERT_TRUE(running->WaitForEnd());
  EXPECT_EQ(running->final_status().code(), absl::StatusCode::kCancelled) << running->final_status();
  EXPECT_EQ(running->progress_steps(), (std::vector<int>{1, 2}));
  EXPECT_EQ(running->terminal_events(), 1);
  EXPECT_EQ(observer_.jobs_finished(JobOutcome::kCancelled), 1);
}

TEST_F(EngineTest, CancelOfAnUnknownJobIsFalse) { EXPECT_FALSE(engine_->Cancel("", "never-submitted")); }

// A call cancels only its own job (the server passes the reactor as owner): not one whose id made
// it ALREADY_EXISTS, nor a later job that reused the id.
TEST_F(EngineTest, CancelWithAnOwnerCancelsOnlyThatListenersJob) {
  auto running = PinWorker("running", /*step=*/1, /*steps=*/10);
  auto queued = NewListener();
  ASSERT_TRUE(engine_->Submit(TinyJobRequest("queued"), queued).ok());
  auto stranger = NewListener();
  EXPECT_FALSE(engine_->Cancel("", "running", stranger.get()));
  EXPECT_FALSE(engine_->Cancel("", "queued", stranger.get()));
  EXPECT_EQ(engine_->queue_depth(), 1);
  EXPECT_TRUE(engine_->Cancel("", "queued", queued.get()));
  EXPECT_TRUE(engine_->Cancel("", "running", running.get()));
  running->Release();
  ASSERT_TRUE(running->WaitForEnd());
  EXPECT_EQ(running->final_status().code(), absl::StatusCode::kCancelled) << running->final_status();
  EXPECT_EQ(queued->final_status().code(), absl::StatusCode::kCancelled) << queued->final_status();
}

// Issue 14: job ids are per principal, and a principal cancels only its own jobs: another's job
// with the same id is neither in the way (ALREADY_EXISTS) nor reachable (Cancel is false).
TEST_F(EngineTest, JobIdsAndCancelAreScopedToThePrincipal) {
  auto running = PinWorker("running", /*step=*/1, /*steps=*/10);
  JobRequest alice = TinyJobRequest("render-42");
  alice.principal = "alice";
  JobRequest bob = TinyJobRequest("render-42");
  bob.principal = "bob";
  auto alices = NewListener();
  auto bobs = NewListener();
  ASSERT_TRUE(engine_->Submit(alice, alices).ok());
  ASSERT_TRUE(engine_->Submit(bob, bobs).ok());
  EXPECT_EQ(engine_->Submit(alice, NewListener()).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_FALSE(engine_->Cancel("mallory", "render-42"));
  EXPECT_FALSE(engine_->Cancel("", "render-42"));
  EXPECT_TRUE(engine_->Cancel("bob", "render-42"));
  EXPECT_EQ(engine_->queue_depth(), 1);
  running->Release();
  ASSERT_TRUE(alices->WaitForEnd());
  ASSERT_TRUE(bobs->WaitForEnd());
  EXPECT_TRUE(alices->final_status().ok()) << alices->final_status();
  EXPECT_EQ(bobs->final_status().code(), absl::StatusCode::kCancelled);
}

// CancelJob's OK promises CANCELLED: a cancel accepted during a model call that then fails still
// ends the job CANCELLED, and once a job's end is decided a cancel is refused.
TEST(EngineWithAFakePipeline, ACancelAcceptedBeforeAFailureWins) {
  const ModelConfig model = test::TinyModelConfig();
  test::FakePipeline pipeline;
  pipeline.poison_job_id = "doomed";
  auto engine = Engine::CreateForTest(Engine::Options{}, {model}, {&pipeline}, nullptr, nullptr);
  bool accepted = false;
  pipeline.during_step = [&] { accepted = engine->Cancel("", "doomed"); };  // on the worker, mid-call
  auto listener = std::make_shared<FakeJobListener>();
  ASSERT_TRUE(engine->Submit(TinyJobRequest("doomed"), listener).ok());
  ASSERT_TRUE(listener->WaitForEnd());
  EXPECT_TRUE(accepted);
  EXPECT_EQ(listener->final_status().code(), absl::StatusCode::kCancelled) << listener->final_status();
  EXPECT_FALSE(engine->Cancel("", "doomed"));
}

// A listener that calls the engine back from its callbacks (as a gRPC reaction run inline by
// StartWrite could): no engine lock is held when a listener is called (lock order, job.h), so
// cancelling from OnAccepted and submitting from OnQueuePosition work instead of deadlocking.
class CallsBackListener : public FakeJobListener {
 public:
  explicit CallsBackListener(Engine* engine) : engine_(engine) {}
  void OnAccepted(const std::string& job_id, int queue_position) override {
    FakeJobListener::OnAccepted(job_id, queue_position);
    cancelled_from_callback = engine_->Cancel("", job_id);
    queue_depth_seen = engine_->queue_depth();
  }
  bool cancelled_from_callback = false;
  int queue_depth_seen = -1;

 private:
  Engine* engine_;
};

TEST(EngineWithAFakePipeline, AListenerMayCallTheEngineFromItsCallbacks) {
  const ModelConfig model = test::TinyModelConfig();
  test::FakePipeline pipeline;
  absl::Notification in_step;
  absl::Notification release;
  pipeline.during_step = [&] {
    if (!in_step.HasBeenNotified()) in_step.Notify();
    release.WaitForNotificationWithTimeout(absl::Seconds(30));
  };
  auto engine = Engine::CreateForTest(Engine::Options{}, {model}, {&pipeline}, nullptr, nullptr);
  auto running = std::make_shared<FakeJobListener>();
  ASSERT_TRUE(engine->Submit(TinyJobRequest("running", 2), running).ok());
  ASSERT_TRUE(in_step.WaitForNotificationWithTimeout(absl::Seconds(30)));  // the worker is busy
  auto listener = std::make_shared<CallsBackListener>(engine.get());
  ASSERT_TRUE(engine->Submit(TinyJobRequest("self-cancelling"), listener).ok());
  ASSERT_TRUE(listener->WaitForEnd());
  EXPECT_TRUE(listener->cancelled_from_callback);
  EXPECT_EQ(listener->queue_depth_seen, 0);
  EXPECT_EQ(listener->final_status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(listener->events(), (std::vector<FakeJobListener::Event>{FakeJobListener::Event::kAccepted,
                                                                    FakeJobListener::Event::kError}));
  release.Notify();
  ASSERT_TRUE(running->WaitForEnd());
  EXPECT_TRUE(running->final_status().ok());
}

TEST_F(EngineTest, ShutdownEndsQueuedJobsAtOnceAndTheRunningOneAtItsNextStep) {
  auto running = PinWorker("running", /*step=*/1, /*steps=*/5);
  auto queued = NewListener();
  ASSERT_TRUE(engine_->Submit(TinyJobRequest("queued"), queued).ok());
  // Shutdown joins the worker, which is held: call it from another thread.
  std::thread shutdown([this] { engine_->Shutdown(); });
  // No ASSERT before the join: the thread must be joined on every path.
  EXPECT_TRUE(queued->WaitForEnd()) << "the queued job was not ended by Shutdown";
  EXPECT_EQ(queued->final_status().code(), absl::StatusCode::kUnavailable) << queued->final_status();
  EXPECT_FALSE(running->ended());
  running->Release();
  shutdown.join();
  ASSERT_TRUE(running->ended());
  EXPECT_EQ(running->final_status().code(), absl::StatusCode::kUnavailable) << running->final_status();
  EXPECT_EQ(running->progress_steps(), (std::vector<int>{1}));
  EXPECT_EQ(observer_.jobs_finished(JobOutcome::kUnavailable), 2);

  auto late = NewListener();
  EXPECT_EQ(engine_->Submit(TinyJobRequest("late"), late).code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(late->events().empty());
  engine_->Shutdown();  // idempotent
}

class EngineWithQueueOfOneTest : public EngineTest {
 protected:
  Engine::Options EngineOptions() override {
    Engine::Options options = EngineTest::EngineOptions();
    options.max_queue = 1;
    return options;
  }
};

TEST_F(EngineWithQueueOfOneTest, FullQueueIsRefusedAtOnce) {
  auto running = PinWorker("running");
  auto queued = NewListener();
  ASSERT_TRUE(engine_->Submit(TinyJobRequest("queued"), queued).ok());
  auto refused = NewListener();
  const absl::Status status = engine_->Submit(TinyJobRequest("refused"), refused);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_NE(status.message().find("queue is full"), absl::string_view::npos) << status;
  EXPECT_TRUE(refused->events().empty());
  EXPECT_EQ(observer_.jobs_rejected(), 1);

  running->Release();
  ASSERT_TRUE(queued->WaitForEnd() && running->WaitForEnd());
  EXPECT_TRUE(running->final_status().ok()) << running->final_status();
  EXPECT_TRUE(queued->final_status().ok()) << queued->final_status();
  // Room again once the queue drained.
  auto after = Run(TinyJobRequest("after", 1));
  EXPECT_TRUE(after->final_status().ok()) << after->final_status();
}

TEST(EngineCreate, RefusesBadOptionsAndBundles) {
  Engine::Options options;
  options.max_queue = 0;
  EXPECT_EQ(Engine::Create(options, {test::TestBundleDir()}, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Engine::Create(Engine::Options(), {}, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
  auto twice = Engine::Create(Engine::Options(), {test::TestBundleDir(), test::TestBundleDir()}, nullptr);
  ASSERT_FALSE(twice.ok());
  EXPECT_NE(twice.status().message().find("already used"), absl::string_view::npos) << twice.status();
}

// ValidateJobRequest against a model like the tiny one, with the default limits.
class ValidateJobRequestTest : public ::testing::Test {
 protected:
  ValidateJobRequestTest() : model_(test::TinyModelConfig()) { request_ = TinyJobRequest("valid", 30); }

  // Expects INVALID_ARGUMENT whose message starts with the field's name and holds each fragment.
  void ExpectInvalid(const JobRequest& request, const std::string& field, const std::vector<std::string>& fragments) {
    const absl::Status status = ValidateJobRequest(request, model_, limits_);
    ASSERT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    const std::string message(status.message());
    EXPECT_EQ(message.rfind(field + " ", 0), 0u) << "does not start with \"" << field << "\": " << message;
    for (const std::string& f : fragments) {
      EXPECT_NE(message.find(f), std::string::npos) << "no \"" << f << "\" in: " << message;
    }
  }

  ModelConfig model_;
  RequestLimits limits_;
  JobRequest request_;
};

TEST_F(ValidateJobRequestTest, AcceptsAValidRequest) {
  EXPECT_TRUE(ValidateJobRequest(request_, model_, limits_).ok());
}

TEST_F(ValidateJobRequestTest, WidthAndHeightMustBeMultiplesOfTheModelsSizeMultiple) {
  request_.width = 36;
  ExpectInvalid(request_, "width", {"36", "multiple of 8"});
  request_.width = 32;
  request_.height = 4;
  ExpectInvalid(request_, "height", {"4", "from 8"});
  request_.height = 264;
  ExpectInvalid(request_, "height", {"264", "to 256"});
}

TEST_F(ValidateJobRequestTest, StepsMustBeWithinTheLimit) {
  request_.steps = 201;
  ExpectInvalid(request_, "steps", {"201", "1 to 200"});
  request_.steps = 0;
  ExpectInvalid(request_, "steps", {"0"});
}

TEST_F(ValidateJobRequestTest, AllImagesTogetherMustBeWithinMaxPixels) {
  limits_.max_pixels = 3 * 32 * 32;
  request_.num_images = 3;
  EXPECT_TRUE(ValidateJobRequest(request_, model_, limits_).ok());
  request_.num_images = 4;
  ExpectInvalid(request_, "width x height x num_images", {"32x32x4 = 4096", "at most 3072 pixels"});
}

TEST_F(ValidateJobRequestTest, SamplerMustBeKnown) {
  request_.sampler = "no-such-sampler";
  ExpectInvalid(request_, "sampler", {"no-such-sampler", "ddpm", "ddim"});
}

TEST_F(ValidateJobRequestTest, EmptyPromptNeedsGuidanceOne) {
  request_.prompt = "  \t ";
  request_.guidance_scale = 3.0;
  ExpectInvalid(request_, "prompt", {"empty", "guidance_scale 1"});
  request_.guidance_scale = 1.0;
  EXPECT_TRUE(ValidateJobRequest(request_, model_, limits_).ok());
}

TEST_F(ValidateJobRequestTest, GuidanceScaleMustBeFromOneToThirty) {
  request_.guidance_scale = 0.5;
  ExpectInvalid(request_, "guidance_scale", {"0.5", "1 to 30"});
  request_.guidance_scale = 31;
  ExpectInvalid(request_, "guidance_scale", {"31"});
}

TEST_F(ValidateJobRequestTest, NumImagesMustBeWithinTheLimit) {
  request_.num_images = 9;
  ExpectInvalid(request_, "num_images", {"9", "1 to 8"});
  request_.num_images = 0;
  ExpectInvalid(request_, "num_images", {"0"});
}

TEST_F(ValidateJobRequestTest, PromptsMustFitTheCharacterLimit) {
  request_.prompt = std::string(1001, 'a');
  ExpectInvalid(request_, "prompt", {"1001 characters", "at most 1000"});
  request_.prompt = "a dress";
  request_.negative_prompt = std::string(1001, 'a');
  ExpectInvalid(request_, "negative_prompt", {"1001 characters"});
}

TEST_F(ValidateJobRequestTest, PromptLongerThanTheEncoderButWithinTheCharacterLimitIsAccepted) {
  request_.prompt.clear();
  for (int i = 0; i < 100; ++i) absl::StrAppend(&request_.prompt, "a dress ");  // 200 words, 800 chars
  ASSERT_GT(200, model_.max_length);
  EXPECT_TRUE(ValidateJobRequest(request_, model_, limits_).ok());
}

TEST_F(ValidateJobRequestTest, PreviewIntervalMustNotExceedTheStepsThatRun) {
  request_.preview_every_n_steps = 31;
  ExpectInvalid(request_, "preview.every_n_steps", {"31", "steps that run (30)"});
  // Image to image at strength 0.5 runs 15 of the 30 steps: previews count those.
  model_.has_vae_encoder = true;
  request_.init_image = RasterImage{32, 32, 1, std::vector<uint8_t>(32 * 32, 128)};
  request_.strength = 0.5;
  request_.preview_every_n_steps = 15;
  EXPECT_TRUE(ValidateJobRequest(request_, model_, limits_).ok());
  EXPECT_EQ(StepsToRun(request_), 15);
  request_.preview_every_n_steps = 16;
  ExpectInvalid(request_, "preview.every_n_steps", {"16", "steps that run (15)"});
}

// The model's scheduler config decides what each sampler accepts (ModelBundle::Load probes it),
// and admission checks exactly that, so the worker never refuses an accepted request.
TEST_F(ValidateJobRequestTest, SamplerAndStepsFollowWhatTheModelSupports) {
  for (ModelConfig::SamplerSupport& s : model_.samplers) {
    if (s.name == "pndm") s.min_steps = 4;
    if (s.name == "euler_a") s.refusal = "sampler \"euler_a\" does not support scheduler config \"prediction_type\"";
  }
  request_.sampler = "pndm";
  request_.steps = 3;
  ExpectInvalid(request_, "steps", {"3", "4 to 200 with sampler pndm"});
  request_.steps = 4;
  EXPECT_TRUE(ValidateJobRequest(request_, model_, limits_).ok());
  request_.sampler = "euler_a";
  ExpectInvalid(request_, "sampler", {"euler_a", "prediction_type"});
  // The model's num_train_timesteps bounds steps below --max_steps.
  model_.num_train_timesteps = 100;
  request_.sampler = "ddim";
  request_.steps = 101;
  ExpectInvalid(request_, "steps", {"101", "1 to 100"});
}

// Size limits of 0 are per model: at least 256 per side, and 1.5 times a larger model's own size
// (Stable Diffusion's 512 and 768 are accepted by default); set flags apply to every model.
TEST(ResolveLimits, ZeroMeansPerModelAndASetLimitAppliesToEveryModel) {
  ModelConfig tiny = test::TinyModelConfig();
  RequestLimits server;
  EXPECT_EQ(ResolveLimits(server, tiny).max_image_side, 256);
  EXPECT_EQ(ResolveLimits(server, tiny).max_pixels, 4 * 256 * 256);
  ModelConfig sd = tiny;
  sd.default_width = sd.default_height = 512;
  sd.size_multiple = 64;
  EXPECT_EQ(ResolveLimits(server, sd).max_image_side, 768);
  EXPECT_EQ(ResolveLimits(server, sd).max_pixels, 768 * 768);
  sd.default_width = sd.default_height = 768;
  EXPECT_EQ(ResolveLimits(server, sd).max_image_side, 1152);
  server.max_image_side = 512;
  server.max_pixels = 1000;
  EXPECT_EQ(ResolveLimits(server, sd).max_image_side, 512);
  EXPECT_EQ(ResolveLimits(server, sd).max_pixels, 1000);
}

TEST_F(ValidateJobRequestTest, QualitiesMustBeFromOneToOneHundred) {
  request_.output_quality = 101;
  ExpectInvalid(request_, "quality", {"101", "1 to 100"});
  request_.output_quality = 90;
  request_.preview_quality = 0;
  ExpectInvalid(request_, "preview.quality", {"0", "1 to 100"});
}

TEST_F(ValidateJobRequestTest, PromptLimitCountsCharactersNotBytes) {
  limits_.max_prompt_chars = 12;
  request_.prompt = "\u00e9t\u00e9 \u00e0 la mer";  // 15 bytes, 12 characters
  EXPECT_TRUE(ValidateJobRequest(request_, model_, limits_).ok());
  request_.prompt += "!";
  ExpectInvalid(request_, "prompt", {"13 characters", "at most 12"});
}

TEST_F(ValidateJobRequestTest, PriorityMustBeWithinRange) {
  request_.priority = 101;
  ExpectInvalid(request_, "priority", {"101", "-100 to 100"});
}

}  // namespace
}  // namespace imagegen
