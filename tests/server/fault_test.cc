// Faults and overload through the real server (issue 8): model calls that fail, a client that
// goes away, a deadline that passes in the queue, a shutdown under load and a burst of ten times
// what the queue holds. Each ends every call with a status and leaves the engine idle.
//
// The failing model is tiny-faulty (tests/support/test_bundle.h), served beside tiny-random by
// one worker: a request chooses a fault by its size or prompt, and the scheduler batches only
// jobs of one model and size, so a failing call holds exactly the jobs a test means to fail.
// Jobs that must share an admission are queued behind a pinned worker (test::PinWorker) and let
// go together: the interleavings are the tests', not the timing's.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/client_callback.h>
#include <gtest/gtest.h>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "core/image/png_codec.h"
#include "imagegen/v1/imagegen.grpc.pb.h"
#include "server/server.h"
#include "tests/support/fake_job_listener.h"
#include "tests/support/http_get.h"
#include "tests/support/scratch_dir.h"
#include "tests/support/service_client.h"
#include "tests/support/test_bundle.h"
#include "tests/support/test_device.h"

// The allocating fault asks for 1 PiB. AddressSanitizer and ThreadSanitizer end the process on
// an allocation they cannot serve unless told to fail it as malloc does; the sanitizer builds
// tell them so (allocator_may_return_null in tests/sanitizers/asan_defaults.cc and
// tsan_defaults.cc), so these tests see the failure LibTorch sees without them.

namespace imagegen {
namespace {

using test::FakeJobListener;
using test::SmallRequest;
using test::StreamOutcome;
using test::SumSamples;

// A request to the faulty model that none of its faults touches: 32x32, a harmless prompt.
v1::GenerateRequest FaultyRequest() {
  v1::GenerateRequest r = SmallRequest();
  r.set_model(test::kFaultyModel);
  return r;
}

// The highest denoising step among `events`; 0 when the job never ran.
int LastStep(const std::vector<v1::GenerateEvent>& events) {
  int step = 0;
  for (const v1::GenerateEvent& e : events) {
    if (e.has_progress()) step = std::max(step, static_cast<int>(e.progress().step()));
  }
  return step;
}

// A Generate call read with the blocking API, a few events at a time.
struct OpenStream {
  std::unique_ptr<grpc::ClientContext> context;
  std::unique_ptr<grpc::ClientReader<v1::GenerateEvent>> reader;
  std::vector<v1::GenerateEvent> events;  // read so far

  // Reads one more event; false at the end of the stream.
  bool ReadOne() {
    v1::GenerateEvent event;
    if (!reader->Read(&event)) return false;
    events.push_back(std::move(event));
    return true;
  }
  // Reads until the job has made `step` steps; false if the stream ends first.
  bool ReadUntilStep(int step) {
    while (LastStep(events) < step) {
      if (!ReadOne()) return false;
    }
    return true;
  }
  // Every event of the call and its status.
  StreamOutcome Finish() {
    StreamOutcome out = test::ReadToEnd(*reader);
    out.events.insert(out.events.begin(), events.begin(), events.end());
    return out;
  }
};

// Counts calls that ended, for a test that waits for some of them.
class EndCounter {
 public:
  void Add() {
    absl::MutexLock lock(&mu_);
    ++ended_;
  }
  // False after kTestTimeout.
  bool WaitFor(int n) {
    absl::MutexLock lock(&mu_);
    auto reached = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return ended_ >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&reached), test::kTestTimeout);
  }

 private:
  absl::Mutex mu_;
  int ended_ ABSL_GUARDED_BY(mu_) = 0;
};

// How a callback-API call ends: once, with a status, counted. The owner's destructor cancels the
// call and waits for End (a reactor must outlive its call).
class CallEnd {
 public:
  explicit CallEnd(EndCounter* counter) : counter_(counter) {}

  bool WaitForEnd() { return done_.WaitForNotificationWithTimeout(test::kTestTimeout); }
  // True from before the call counts itself ended.
  bool ended() const {
    absl::MutexLock lock(&mu_);
    return ended_;
  }
  grpc::Status status() const {
    absl::MutexLock lock(&mu_);
    return status_;
  }

 protected:
  void End(grpc::Status status) {
    {
      absl::MutexLock lock(&mu_);
      status_ = std::move(status);
      ended_ = true;
    }
    if (counter_ != nullptr) counter_->Add();
    done_.Notify();
  }
  void WaitForEndForever() { done_.WaitForNotification(); }

  mutable absl::Mutex mu_;

 private:
  EndCounter* const counter_;
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  absl::Notification done_;
};

// A GenerateImages call with the callback API, so that a test holds many open without a thread
// each.
class UnaryCall : public CallEnd {
 public:
  UnaryCall(v1::ImageGenerator::Stub& stub, v1::GenerateRequest request, EndCounter* counter = nullptr)
      : CallEnd(counter), request_(std::move(request)) {
    context_.set_deadline(std::chrono::system_clock::now() + test::kCallTimeout);
    stub.async()->GenerateImages(&context_, &request_, &response_, [this](grpc::Status status) { End(status); });
  }
  ~UnaryCall() {
    context_.TryCancel();
    WaitForEndForever();
  }

  // REQUIRES: WaitForEnd() returned true.
  const v1::GenerateResponse& response() const { return response_; }

 private:
  grpc::ClientContext context_;
  const v1::GenerateRequest request_;
  v1::GenerateResponse response_;
};

// A Generate call with the callback API: keeps its events, ends once with its status.
class StreamCall : public grpc::ClientReadReactor<v1::GenerateEvent>, public CallEnd {
 public:
  StreamCall(v1::ImageGenerator::Stub& stub, v1::GenerateRequest request, EndCounter* counter = nullptr)
      : CallEnd(counter), request_(std::move(request)) {
    context_.set_deadline(std::chrono::system_clock::now() + test::kCallTimeout);
    stub.async()->Generate(&context_, &request_, this);
    StartRead(&event_);
    StartCall();
  }
  ~StreamCall() override {
    context_.TryCancel();
    WaitForEndForever();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // OnDone follows
    {
      absl::MutexLock lock(&mu_);
      events_.push_back(event_);
    }
    StartRead(&event_);
  }
  void OnDone(const grpc::Status& status) override { End(status); }

  std::vector<v1::GenerateEvent> events() const {
    absl::MutexLock lock(&mu_);
    return events_;
  }

 private:
  grpc::ClientContext context_;
  const v1::GenerateRequest request_;
  v1::GenerateEvent event_;  // the read in flight; only gRPC touches it until OnReadDone
  std::vector<v1::GenerateEvent> events_ ABSL_GUARDED_BY(mu_);
};

class FaultTest : public ::testing::Test {
 protected:
  // Serves tiny-random (the default) and tiny-faulty with one worker. `adjust` changes the
  // options first; the Prometheus endpoint is off unless it turns it on (it costs ~2 s per
  // shutdown). Call through ASSERT_NO_FATAL_FAILURE.
  void StartServer(const std::function<void(ServerOptions&)>& adjust = nullptr) {
    namespace fs = std::filesystem;
    fs::create_directory_symlink(test::TestBundleDir(), bundles_.path() / "tiny-random");
    fs::create_directory_symlink(test::FaultyBundleDir(), bundles_.path() / "tiny-faulty");
    ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.metrics_listen = "";
    options.model_dir = bundles_.path().string();
    options.engine.devices = {test::TestDevice()};  // IMAGEGEN_TEST_DEVICE (scripts/gpu_check.sh)
    options.default_model = test::kTinyModel;
    options.request_log = false;
    options.engine.intra_op_threads = 1;  // ctest runs two test processes on two cores
    if (adjust) adjust(options);
    auto server = ImageGenServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()), grpc::InsecureChannelCredentials());
    stub_ = v1::ImageGenerator::NewStub(channel_);
  }

  void TearDown() override {
    // A pinned worker must be let go before the server shuts its engine down.
    for (const auto& listener : pinned_) listener->Release();
    stub_.reset();
    channel_.reset();
    server_.reset();
  }

  Engine& engine() { return server_->engine(); }

  std::shared_ptr<FakeJobListener> PinWorker(const std::string& job_id) {
    pinned_.push_back(test::PinWorker(engine(), job_id));
    return pinned_.back();
  }

  // Opens a Generate call and reads its first event (JobAccepted for a queued job).
  OpenStream Open(const v1::GenerateRequest& request) {
    OpenStream stream;
    stream.context = test::NewCallContext();
    stream.reader = stub_->Generate(stream.context.get(), request);
    stream.ReadOne();
    return stream;
  }

  grpc::Status GenerateImages(const v1::GenerateRequest& request, v1::GenerateResponse* response) {
    auto context = test::NewCallContext();
    return stub_->GenerateImages(context.get(), request, response);
  }

  // Queues `requests` behind a pinned worker, so that the worker admits them all in one tick,
  // lets it go, and reads every stream to its end. The pinning job (tiny-random, 32x32) must
  // end OK: a fault never reaches a job outside its call.
  std::vector<StreamOutcome> RunTogether(const std::vector<v1::GenerateRequest>& requests) {
    auto pinned = PinWorker("pinned");
    std::vector<OpenStream> streams;
    for (const v1::GenerateRequest& request : requests) {
      streams.push_back(Open(request));
      const std::vector<v1::GenerateEvent>& events = streams.back().events;
      EXPECT_TRUE(!events.empty() && events.front().has_accepted()) << "request " << streams.size() << " was not queued";
    }
    pinned->Release();
    std::vector<StreamOutcome> outcomes;
    for (OpenStream& stream : streams) outcomes.push_back(stream.Finish());
    EXPECT_TRUE(pinned->WaitForEnd());
    EXPECT_TRUE(pinned->final_status().ok()) << pinned->final_status();
    return outcomes;
  }

  // For what a client cannot see (a unary call has no acceptance event; a server hears a
  // cancellation after its client): waits until the engine's queue holds `depth` jobs.
  bool WaitForQueueDepth(int depth) {
    const absl::Time give_up = absl::Now() + test::kTestTimeout;
    while (engine().queue_depth() != depth) {
      if (absl::Now() > give_up) return false;
      absl::SleepFor(absl::Milliseconds(1));
    }
    return true;
  }

  std::string ScrapeMetrics() {
    auto text = test::HttpGet(server_->metrics_port(), "/metrics");
    EXPECT_TRUE(text.ok()) << text.status();
    return text.ok() ? *text : std::string();
  }

  test::ScratchDir bundles_;  // links to both bundles: --model_dir
  std::unique_ptr<ImageGenServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::ImageGenerator::Stub> stub_;
  std::vector<std::shared_ptr<FakeJobListener>> pinned_;
};

void ExpectOk(const StreamOutcome& out) {
  EXPECT_TRUE(out.status.ok()) << out.status.error_message();
  ASSERT_FALSE(out.events.empty());
  EXPECT_TRUE(out.events.back().has_result());
}

void ExpectFailed(const StreamOutcome& out, grpc::StatusCode code, const std::vector<std::string>& words) {
  EXPECT_EQ(out.status.error_code(), code) << out.status.error_message();
  for (const std::string& word : words) {
    EXPECT_TRUE(absl::StrContains(out.status.error_message(), word)) << out.status.error_message() << " lacks " << word;
  }
  for (const v1::GenerateEvent& e : out.events) EXPECT_FALSE(e.has_result());
}

// ---- A failing model call fails only the jobs in it; the worker goes on ----

TEST_F(FaultTest, AThrowingUNetCallFailsItsJobsOnlyAndTheWorkerGoesOn) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  v1::GenerateRequest wide = FaultyRequest();
  wide.set_width(test::kFaultyThrowWidth);
  v1::GenerateRequest wide_too = wide;
  wide_too.set_seed(6);
  // The two wide jobs share the first UNet call of their group, which raises; the 32x32 job of
  // the other model runs in the next call of the same worker, with the pinning job.
  const std::vector<StreamOutcome> out = RunTogether({wide, wide_too, SmallRequest()});
  for (int i : {0, 1}) {
    SCOPED_TRACE(i);
    ExpectFailed(out[i], grpc::StatusCode::INTERNAL, {"model tiny-faulty failed", "this latent width always fails"});
    EXPECT_EQ(LastStep(out[i].events), 0) << "the failing call was its first step";
  }
  ExpectOk(out[2]);

  // The worker and the model go on: the next request of the faulty model succeeds.
  v1::GenerateResponse next;
  const grpc::Status status = GenerateImages(FaultyRequest(), &next);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(next.images_size(), 1);
}

TEST_F(FaultTest, AnAllocationPastMemoryIsResourceExhaustedAndTheWorkerGoesOn) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  v1::GenerateRequest tall = FaultyRequest();
  tall.set_height(test::kFaultyAllocHeight);
  const std::vector<StreamOutcome> out = RunTogether({tall, SmallRequest()});
  ExpectFailed(out[0], grpc::StatusCode::RESOURCE_EXHAUSTED, {"model tiny-faulty ran out of memory", "allocate"});
  ExpectOk(out[1]);

  // Unary alike, and the worker goes on.
  v1::GenerateResponse response;
  const grpc::Status unary = GenerateImages(tall, &response);
  EXPECT_EQ(unary.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << unary.error_message();
  const grpc::Status next = GenerateImages(FaultyRequest(), &response);
  EXPECT_TRUE(next.ok()) << next.error_message();
  EXPECT_EQ(response.images_size(), 1);
}

// New jobs of one model share one text encoder call: a raise there fails them (and only them),
// not the jobs of another model admitted in the same tick.
TEST_F(FaultTest, AThrowingTextEncoderFailsOnlyTheJobsOfItsCall) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  v1::GenerateRequest poisoned = FaultyRequest();
  poisoned.set_prompt(absl::StrCat("a pair of ", test::kFaultyWord, "s and a ", test::kFaultyWord));
  const std::vector<StreamOutcome> out = RunTogether({poisoned, FaultyRequest(), SmallRequest()});
  for (int i : {0, 1}) {
    SCOPED_TRACE(i);
    ExpectFailed(out[i], grpc::StatusCode::INTERNAL, {"model tiny-faulty failed", "text encoder"});
    EXPECT_EQ(LastStep(out[i].events), 0);
  }
  ExpectOk(out[2]);
}

// Image to image encodes each init image in a call of its own, and each job decodes alone: a
// failing VAE fails that job only, even beside a job of the same model admitted with it.
TEST_F(FaultTest, AFailingVaeFailsOnlyItsOwnJob) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  RasterImage init;
  init.width = test::kFaultyVaeWidth;
  init.height = test::kTinySide;
  init.channels = 1;
  init.pixels.assign(static_cast<size_t>(init.width) * init.height, 128);
  auto png = EncodePng(init);
  ASSERT_TRUE(png.ok()) << png.status();
  v1::GenerateRequest image_to_image = FaultyRequest();
  image_to_image.set_init_image(*png);
  image_to_image.set_strength(0.5f);
  image_to_image.set_steps(4);
  v1::GenerateRequest wide = FaultyRequest();
  wide.set_width(test::kFaultyVaeWidth);

  const std::vector<StreamOutcome> out = RunTogether({image_to_image, wide, FaultyRequest()});
  ExpectFailed(out[0], grpc::StatusCode::INTERNAL, {"model tiny-faulty failed", "VAE"});
  EXPECT_EQ(LastStep(out[0].events), 0) << "the encoder fails before the first step";
  ExpectFailed(out[1], grpc::StatusCode::INTERNAL, {"model tiny-faulty failed", "VAE"});
  EXPECT_EQ(LastStep(out[1].events), 3) << "the decoder fails after the last step";
  ExpectOk(out[2]);
}

// ---- Every open call ends with a status, and nothing is left running ----

TEST_F(FaultTest, ClientsThatDisconnectLeaveNothingRunningOrQueued) {
  // A row budget of 16: the running job's 16 rows keep the second one in the queue.
  ASSERT_NO_FATAL_FAILURE(StartServer([](ServerOptions& o) {
    o.metrics_listen = "127.0.0.1:0";
    o.engine.max_batch_rows = 16;
  }));
  OpenStream running = Open(test::LongRequest("walk-away"));
  ASSERT_TRUE(running.ReadUntilStep(1)) << "the job is running";
  v1::GenerateRequest queued_request = test::LongRequest("queued-walk-away");
  queued_request.set_steps(3);
  OpenStream queued = Open(queued_request);
  ASSERT_FALSE(queued.events.empty());
  ASSERT_TRUE(queued.events.front().has_accepted()) << "queued behind the running job";
  EXPECT_EQ(engine().queue_depth(), 1);

  queued.context->TryCancel();
  running.context->TryCancel();
  EXPECT_EQ(queued.Finish().status.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(running.Finish().status.error_code(), grpc::StatusCode::CANCELLED);

  // The server hears both disconnects: the queued job leaves at once, the running one at its
  // next step; then the engine holds nothing and the gauges are back to 0.
  ASSERT_TRUE(engine().WaitUntilIdle(absl::Now() + test::kTestTimeout)) << "a job outlived its client";
  EXPECT_EQ(engine().queue_depth(), 0);
  EXPECT_FALSE(engine().Cancel("", "walk-away"));
  const std::string metrics = ScrapeMetrics();
  EXPECT_EQ(SumSamples(metrics, "imagegen_requests_total", {"outcome=\"cancelled\""}), 2.0) << metrics;
  EXPECT_EQ(SumSamples(metrics, "imagegen_requests_total", {"outcome=\"ok\""}).value_or(0), 0.0) << metrics;
  EXPECT_EQ(SumSamples(metrics, "imagegen_active_jobs", {}), 0.0) << metrics;
  EXPECT_EQ(SumSamples(metrics, "imagegen_queue_depth", {}), 0.0) << metrics;
  EXPECT_LT(SumSamples(metrics, "imagegen_denoising_steps_total", {}).value_or(0), 200.0) << "the job ran to its end";
}

TEST_F(FaultTest, ADeadlineThatPassesInTheQueueEndsTheCallAndTheJobNeverRuns) {
  ASSERT_NO_FATAL_FAILURE(StartServer([](ServerOptions& o) { o.metrics_listen = "127.0.0.1:0"; }));
  auto pinned = PinWorker("pinned");
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(1));
  v1::GenerateRequest request = SmallRequest();
  request.set_job_id("late");
  auto reader = stub_->Generate(&context, request);
  const StreamOutcome out = test::ReadToEnd(*reader);
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << out.status.error_message();
  ASSERT_FALSE(out.events.empty());
  EXPECT_TRUE(out.events.front().has_accepted()) << "the job was queued";
  EXPECT_EQ(LastStep(out.events), 0) << "the job ran";
  // The server hears the deadline on its own clock (its deadline is the client's plus the
  // transit): the job leaves the queue while the worker is still held.
  EXPECT_TRUE(WaitForQueueDepth(0)) << "the late job stayed queued";

  pinned->Release();
  ASSERT_TRUE(pinned->WaitForEnd());
  EXPECT_TRUE(pinned->final_status().ok()) << pinned->final_status();
  ASSERT_TRUE(engine().WaitUntilIdle(absl::Now() + test::kTestTimeout));
  const std::string metrics = ScrapeMetrics();
  // deadline_exceeded when the server's own timer fires first, cancelled when the client's
  // cancel at its (slightly earlier) deadline arrives first: gRPC sends the time left, so the
  // server's deadline is the client's plus the transit.
  EXPECT_EQ(SumSamples(metrics, "imagegen_requests_total", {"outcome=\"deadline_exceeded\""}).value_or(0) +
                SumSamples(metrics, "imagegen_requests_total", {"outcome=\"cancelled\""}).value_or(0),
            1.0)
      << metrics;
  // Only the pinning job's 5 steps: the late job never reached the UNet.
  EXPECT_EQ(SumSamples(metrics, "imagegen_denoising_steps_total", {}), 5.0) << metrics;
  EXPECT_EQ(SumSamples(metrics, "imagegen_queue_depth", {}), 0.0) << metrics;
}

// Shutdown with streaming and unary calls both running and queued: the queued ones end
// UNAVAILABLE at once, the running ones at their next step boundary; every client call returns.
TEST_F(FaultTest, ShutdownUnderLoadEndsEveryCallWithAStatus) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  v1::GenerateRequest request = SmallRequest();
  request.set_steps(10);

  // Running: two streams and two unary calls, admitted with a second pinning job that holds the
  // worker in their first shared step.
  auto first_pin = PinWorker("first-pin");
  std::vector<OpenStream> running_streams;
  for (int i = 0; i < 2; ++i) running_streams.push_back(Open(request));
  std::vector<std::unique_ptr<UnaryCall>> running_unary;
  for (int i = 0; i < 2; ++i) running_unary.push_back(std::make_unique<UnaryCall>(*stub_, request));
  ASSERT_TRUE(WaitForQueueDepth(4));
  auto second_pin = std::make_shared<FakeJobListener>();
  pinned_.push_back(second_pin);
  second_pin->BlockAtStep(1);
  ASSERT_TRUE(engine().Submit(test::TinyJobRequest("second-pin", 5), second_pin).ok());
  first_pin->Release();
  ASSERT_TRUE(second_pin->WaitUntilBlocked());
  for (OpenStream& stream : running_streams) ASSERT_TRUE(stream.ReadUntilStep(1)) << "the stream's job runs";

  // Queued behind them: two streams and two unary calls.
  std::vector<OpenStream> queued_streams;
  for (int i = 0; i < 2; ++i) queued_streams.push_back(Open(request));
  std::vector<std::unique_ptr<UnaryCall>> queued_unary;
  for (int i = 0; i < 2; ++i) queued_unary.push_back(std::make_unique<UnaryCall>(*stub_, request));
  ASSERT_TRUE(WaitForQueueDepth(4));

  // Shutdown joins the held worker: call it from another thread. No ASSERT until the join.
  std::thread shutdown([this] { server_->Shutdown(); });
  for (OpenStream& stream : queued_streams) {
    const StreamOutcome out = stream.Finish();
    EXPECT_EQ(out.status.error_code(), grpc::StatusCode::UNAVAILABLE) << out.status.error_message();
    EXPECT_EQ(LastStep(out.events), 0);
  }
  for (const auto& call : queued_unary) {
    EXPECT_TRUE(call->WaitForEnd());
    EXPECT_EQ(call->status().error_code(), grpc::StatusCode::UNAVAILABLE) << call->status().error_message();
  }
  for (const auto& call : running_unary) EXPECT_FALSE(call->ended()) << "a running job ends at a step boundary";

  second_pin->Release();
  for (OpenStream& stream : running_streams) {
    const StreamOutcome out = stream.Finish();
    EXPECT_EQ(out.status.error_code(), grpc::StatusCode::UNAVAILABLE) << out.status.error_message();
    EXPECT_LT(LastStep(out.events), 10);
  }
  for (const auto& call : running_unary) {
    EXPECT_TRUE(call->WaitForEnd());
    EXPECT_EQ(call->status().error_code(), grpc::StatusCode::UNAVAILABLE) << call->status().error_message();
  }
  shutdown.join();
  EXPECT_TRUE(engine().WaitUntilIdle(absl::Now())) << "a job outlived the shutdown";
  EXPECT_EQ(engine().queue_depth(), 0);
  for (const auto& pin : {first_pin, second_pin}) {
    EXPECT_TRUE(pin->WaitForEnd());
    EXPECT_EQ(pin->final_status().code(), absl::StatusCode::kUnavailable) << pin->final_status();
  }
}

// ---- Overload ----

// Ten times what the queue holds, at once: the excess is refused RESOURCE_EXHAUSTED while the
// worker is still held (so before any accepted job could end), and every accepted job completes.
TEST_F(FaultTest, ABurstOfTenTimesTheQueueIsRefusedAtOnceAndEveryAcceptedJobCompletes) {
  constexpr int kQueue = 4;
  constexpr int kBurst = 10 * kQueue;
  ASSERT_NO_FATAL_FAILURE(StartServer([](ServerOptions& o) { o.engine.max_queue = kQueue; }));
  auto pinned = PinWorker("pinned");
  EndCounter ended;
  std::vector<std::unique_ptr<UnaryCall>> unary;
  std::vector<std::unique_ptr<StreamCall>> streams;
  for (int i = 0; i < kBurst / 2; ++i) {
    v1::GenerateRequest request = SmallRequest();
    request.set_steps(2);
    request.set_seed(i);
    unary.push_back(std::make_unique<UnaryCall>(*stub_, request, &ended));
    streams.push_back(std::make_unique<StreamCall>(*stub_, request, &ended));
  }
  ASSERT_TRUE(ended.WaitFor(kBurst - kQueue)) << "the excess was not refused at once";

  // While the worker is held, exactly the excess has ended, each call refused before any event.
  int ended_while_held = 0;
  for (const auto& call : unary) {
    if (!call->ended()) continue;
    ++ended_while_held;
    EXPECT_EQ(call->status().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << call->status().error_message();
    EXPECT_TRUE(absl::StrContains(call->status().error_message(), "queue is full")) << call->status().error_message();
  }
  for (const auto& call : streams) {
    if (!call->ended()) continue;
    ++ended_while_held;
    EXPECT_EQ(call->status().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << call->status().error_message();
    EXPECT_TRUE(call->events().empty()) << "a refused stream sent events";
  }
  EXPECT_EQ(ended_while_held, kBurst - kQueue);
  EXPECT_EQ(engine().queue_depth(), kQueue);

  pinned->Release();
  int ok = 0;
  int refused = 0;
  for (const auto& call : unary) {
    ASSERT_TRUE(call->WaitForEnd());
    const grpc::Status status = call->status();
    if (status.ok()) {
      ++ok;
      EXPECT_EQ(call->response().images_size(), 1);
    }
    refused += status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED;
  }
  for (const auto& call : streams) {
    ASSERT_TRUE(call->WaitForEnd());
    const grpc::Status status = call->status();
    if (status.ok()) {
      ++ok;
      const std::vector<v1::GenerateEvent> events = call->events();
      ASSERT_FALSE(events.empty());
      EXPECT_TRUE(events.back().has_result());
    }
    refused += status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED;
  }
  EXPECT_EQ(ok, kQueue);
  EXPECT_EQ(refused, kBurst - kQueue);  // and so no call ended any other way
  EXPECT_TRUE(pinned->WaitForEnd());
  EXPECT_TRUE(engine().WaitUntilIdle(absl::Now() + test::kTestTimeout));
}

}  // namespace
}  // namespace imagegen
