// The gRPC service end to end in one process: a real ImageGenServer (gRPC, health, Prometheus
// endpoint) on loopback ports with the tiny exported bundle, called over a real channel.
//
// Where a test needs the worker busy at a known point it pins it through the server's engine
// with FakeJobListener::BlockAtStep (tests/support/fake_job_listener.h); the gRPC calls under
// test then queue behind that job deterministically. Two tests cancel a job that runs over gRPC;
// they rely only on a 200-step, 8-image job outlasting one loopback round trip (see there).
#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "core/image/jpeg_codec.h"
#include "core/image/png_codec.h"
#include "core/math/samplers.h"
#include "imagegen/v1/imagegen.grpc.pb.h"
#include "server/server.h"
#include "tests/support/fake_job_listener.h"
#include "tests/support/http_get.h"
#include "tests/support/service_client.h"
#include "tests/support/test_bundle.h"
#include "tests/support/test_device.h"

namespace imagegen {
namespace {

using test::FakeJobListener;

using test::LongRequest;
using test::SmallRequest;
using test::StreamOutcome;
using test::SumSamples;

class ImageGeneratorServiceTest : public ::testing::Test {
 protected:
  virtual int MaxQueue() { return 64; }

  void SetUp() override {
    ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.metrics_listen = "127.0.0.1:0";
    options.model_dir = test::TestBundleDir();
    options.engine.devices = {test::TestDevice()};  // IMAGEGEN_TEST_DEVICE (scripts/gpu_check.sh)
    options.engine.max_queue = MaxQueue();
    options.engine.intra_op_threads = 1;  // ctest runs two test processes on two cores
    auto server = ImageGenServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    ASSERT_GT(server_->port(), 0);
    ASSERT_GT(server_->metrics_port(), 0);
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

  static std::unique_ptr<grpc::ClientContext> NewContext() { return test::NewCallContext(); }

  StreamOutcome Generate(const v1::GenerateRequest& request) {
    auto context = NewContext();
    return test::ReadToEnd(*stub_->Generate(context.get(), request));
  }

  grpc::Status GenerateImages(const v1::GenerateRequest& request, v1::GenerateResponse* response) {
    auto context = NewContext();
    return stub_->GenerateImages(context.get(), request, response);
  }

  grpc::Status CancelJob(const std::string& job_id, v1::CancelJobResponse* response) {
    auto context = NewContext();
    v1::CancelJobRequest request;
    request.set_job_id(job_id);
    return stub_->CancelJob(context.get(), request, response);
  }

  // Holds the server's only worker inside an engine job (submitted in-process, not over gRPC)
  // until TearDown or Release.
  std::shared_ptr<FakeJobListener> PinWorker(const std::string& job_id) {
    pinned_.push_back(test::PinWorker(server_->engine(), job_id));
    return pinned_.back();
  }

  std::string ScrapeMetrics() {
    auto text = test::HttpGet(server_->metrics_port(), "/metrics");
    EXPECT_TRUE(text.ok()) << text.status();
    return text.ok() ? *text : std::string();
  }

  std::unique_ptr<ImageGenServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::ImageGenerator::Stub> stub_;
  std::vector<std::shared_ptr<FakeJobListener>> pinned_;
};

void ExpectPng(const v1::Image& image, int width, int height, int channels) {
  EXPECT_EQ(image.format(), v1::IMAGE_FORMAT_PNG);
  EXPECT_EQ(static_cast<int>(image.width()), width);
  EXPECT_EQ(static_cast<int>(image.height()), height);
  auto raster = DecodePng(image.data());
  ASSERT_TRUE(raster.ok()) << raster.status();
  EXPECT_EQ(raster->width, width);
  EXPECT_EQ(raster->height, height);
  EXPECT_EQ(raster->channels, channels);
}

TEST_F(ImageGeneratorServiceTest, GenerateStreamsAcceptedThenProgressThenOneResult) {
  v1::GenerateRequest request = SmallRequest();
  request.set_width(40);
  request.set_height(24);
  request.set_steps(6);
  request.set_num_images(2);
  request.mutable_preview()->set_every_n_steps(3);
  const StreamOutcome out = Generate(request);
  ASSERT_TRUE(out.status.ok()) << out.status.error_message();
  ASSERT_GE(out.events.size(), 3u);

  ASSERT_TRUE(out.events.front().has_accepted());
  const std::string job_id = out.events.front().accepted().job_id();
  EXPECT_TRUE(absl::StartsWith(job_id, "job-")) << job_id;
  EXPECT_EQ(out.events.front().accepted().queue_position(), 0u);

  // A client that reads slower than the worker steps sees only the newest progress (the server
  // replaces a pending one), so steps rise but may skip; the last step is always sent.
  int last_step = 0;
  for (size_t i = 1; i + 1 < out.events.size(); ++i) {
    const v1::GenerateEvent& e = out.events[i];
    ASSERT_TRUE(e.has_progress()) << "event " << i << ": " << e.ShortDebugString().substr(0, 200);
    EXPECT_GT(static_cast<int>(e.progress().step()), last_step);
    EXPECT_EQ(e.progress().total_steps(), 6u);
    last_step = static_cast<int>(e.progress().step());
    if (e.progress().previews_size() == 0) continue;
    EXPECT_EQ(last_step % 3, 0) << "a preview on step " << last_step;
    ASSERT_EQ(e.progress().previews_size(), 2);
    for (int k = 0; k < 2; ++k) {
      EXPECT_EQ(e.progress().previews(k).index(), static_cast<uint32_t>(k));
      ExpectPng(e.progress().previews(k), 40, 24, 3);
    }
  }
  EXPECT_EQ(last_step, 6);
  EXPECT_EQ(out.events[out.events.size() - 2].progress().previews_size(), 2) << "the last step had no previews";

  ASSERT_TRUE(out.events.back().has_result());
  const v1::GenerateResponse& result = out.events.back().result();
  EXPECT_EQ(result.job_id(), job_id);
  EXPECT_EQ(result.model(), test::kTinyModel);
  EXPECT_EQ(result.sampler(), "ddim");
  EXPECT_EQ(result.steps(), 6u);
  EXPECT_FLOAT_EQ(result.guidance_scale(), 3.0f);
  ASSERT_EQ(result.images_size(), 2);
  for (int k = 0; k < 2; ++k) {
    EXPECT_EQ(result.images(k).index(), static_cast<uint32_t>(k));
    EXPECT_EQ(result.images(k).seed(), 5u + k);
    ExpectPng(result.images(k), 40, 24, test::kTinyImageChannels);
  }
  EXPECT_GE(result.timings().total_seconds(), result.timings().denoise_seconds());
}

TEST_F(ImageGeneratorServiceTest, GenerateImagesAnswersWithTheResultOnly) {
  v1::GenerateRequest request = SmallRequest();
  request.set_job_id("unary-1");
  request.mutable_preview()->set_every_n_steps(1);  // ignored by GenerateImages
  v1::GenerateResponse response;
  const grpc::Status status = GenerateImages(request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.job_id(), "unary-1");
  EXPECT_EQ(response.model(), test::kTinyModel);
  EXPECT_EQ(response.steps(), 3u);
  ASSERT_EQ(response.images_size(), 1);
  EXPECT_EQ(response.images(0).seed(), 5u);
  ExpectPng(response.images(0), test::kTinySide, test::kTinySide, test::kTinyImageChannels);
  EXPECT_GT(response.timings().total_seconds(), 0);
}

TEST_F(ImageGeneratorServiceTest, BothMethodsMakeTheSameImageFromTheSameSeed) {
  v1::GenerateResponse unary;
  ASSERT_TRUE(GenerateImages(SmallRequest(), &unary).ok());
  const StreamOutcome stream = Generate(SmallRequest());
  ASSERT_TRUE(stream.status.ok()) << stream.status.error_message();
  ASSERT_TRUE(stream.events.back().has_result());
  ASSERT_EQ(unary.images_size(), 1);
  ASSERT_EQ(stream.events.back().result().images_size(), 1);
  EXPECT_EQ(unary.images(0).data(), stream.events.back().result().images(0).data());
}

TEST_F(ImageGeneratorServiceTest, ListModelsDescribesTheBundle) {
  auto context = NewContext();
  v1::ListModelsResponse response;
  const grpc::Status status = stub_->ListModels(context.get(), v1::ListModelsRequest(), &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.models_size(), 1);
  const v1::ModelInfo& m = response.models(0);
  EXPECT_EQ(m.name(), test::kTinyModel);
  EXPECT_TRUE(m.is_default());
  EXPECT_EQ(m.default_width(), static_cast<uint32_t>(test::kTinySide));
  EXPECT_EQ(m.default_height(), static_cast<uint32_t>(test::kTinySide));
  EXPECT_EQ(m.size_multiple(), 8u);
  EXPECT_EQ(m.default_sampler(), "ddim");
  EXPECT_EQ(m.default_steps(), 30u);
  EXPECT_FLOAT_EQ(m.default_guidance_scale(), 3.0f);
  const std::vector<std::string> samplers(m.samplers().begin(), m.samplers().end());
  EXPECT_EQ(samplers, SamplerNames());
  EXPECT_NE(std::find(samplers.begin(), samplers.end(), "ddpm"), samplers.end());
  EXPECT_NE(std::find(samplers.begin(), samplers.end(), "ddim"), samplers.end());
  EXPECT_EQ(m.max_prompt_tokens(), static_cast<uint32_t>(test::kTinyMaxLength));
  EXPECT_FALSE(m.description().empty());
}

TEST_F(ImageGeneratorServiceTest, CancelJobEndsARunningStreamCancelled) {
  auto context = NewContext();
  auto reader = stub_->Generate(context.get(), LongRequest("cancel-me"));
  v1::GenerateEvent event;
  ASSERT_TRUE(reader->Read(&event));
  ASSERT_TRUE(event.has_accepted());
  ASSERT_TRUE(reader->Read(&event));
  ASSERT_TRUE(event.has_progress()) << "the job is running";
  // From here the job has 199 steps of 16 rows to go: far longer than this round trip.
  v1::CancelJobResponse cancel;
  const grpc::Status cancel_status = CancelJob("cancel-me", &cancel);
  ASSERT_TRUE(cancel_status.ok()) << cancel_status.error_message();
  EXPECT_TRUE(cancel.cancelled());

  int last_step = static_cast<int>(event.progress().step());
  while (reader->Read(&event)) {
    ASSERT_TRUE(event.has_progress()) << "a cancelled job sent " << event.ShortDebugString().substr(0, 200);
    last_step = static_cast<int>(event.progress().step());
  }
  const grpc::Status status = reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED) << status.error_message();
  EXPECT_TRUE(absl::StrContains(status.error_message(), "cancel-me")) << status.error_message();
  EXPECT_LT(last_step, 200);

  // The job is gone: a second cancel finds nothing.
  const grpc::Status again = CancelJob("cancel-me", &cancel);
  EXPECT_EQ(again.error_code(), grpc::StatusCode::NOT_FOUND) << again.error_message();
}

TEST_F(ImageGeneratorServiceTest, CancelJobOfAnUnknownOrEmptyIdIsRefused) {
  v1::CancelJobResponse response;
  const grpc::Status unknown = CancelJob("no-such-job", &response);
  EXPECT_EQ(unknown.error_code(), grpc::StatusCode::NOT_FOUND) << unknown.error_message();
  EXPECT_TRUE(absl::StrContains(unknown.error_message(), "no-such-job")) << unknown.error_message();
  const grpc::Status empty = CancelJob("", &response);
  EXPECT_EQ(empty.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << empty.error_message();
  EXPECT_TRUE(absl::StrContains(empty.error_message(), "job_id")) << empty.error_message();
}

TEST_F(ImageGeneratorServiceTest, ClientCancelEndsTheRunningJobAndTheServerServesTheNext) {
  {
    auto context = NewContext();
    auto reader = stub_->Generate(context.get(), LongRequest("walk-away"));
    v1::GenerateEvent event;
    ASSERT_TRUE(reader->Read(&event));
    ASSERT_TRUE(event.has_accepted());
    ASSERT_TRUE(reader->Read(&event));
    ASSERT_TRUE(event.has_progress()) << "the job is running";
    context->TryCancel();
    while (reader->Read(&event)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  // The worker runs jobs in order, so this one starts only after "walk-away" has ended.
  v1::GenerateResponse response;
  const grpc::Status next = GenerateImages(SmallRequest(), &response);
  ASSERT_TRUE(next.ok()) << next.error_message();
  EXPECT_EQ(response.images_size(), 1);
  EXPECT_FALSE(server_->engine().Cancel("", "walk-away")) << "the abandoned job still runs";
  // And it ended cancelled, not by running to completion.
  const std::string metrics = ScrapeMetrics();
  EXPECT_EQ(SumSamples(metrics, "imagegen_requests_total", {"outcome=\"cancelled\""}), 1.0) << metrics;
  EXPECT_EQ(SumSamples(metrics, "imagegen_requests_total", {"outcome=\"ok\""}), 1.0) << metrics;
}

TEST_F(ImageGeneratorServiceTest, DuplicateJobIdIsAlreadyExists) {
  auto pinned = PinWorker("taken");
  v1::GenerateRequest request = SmallRequest();
  request.set_job_id("taken");
  v1::GenerateResponse response;
  const grpc::Status status = GenerateImages(request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::ALREADY_EXISTS) << status.error_message();
  EXPECT_TRUE(absl::StrContains(status.error_message(), "taken")) << status.error_message();
}

TEST_F(ImageGeneratorServiceTest, ShutdownEndsOpenStreamsUnavailable) {
  auto pinned = PinWorker("pinned");
  auto context = NewContext();
  auto reader = stub_->Generate(context.get(), SmallRequest());
  v1::GenerateEvent event;
  ASSERT_TRUE(reader->Read(&event));
  ASSERT_TRUE(event.has_accepted()) << "queued behind the pinned job";
  // Shutdown joins the engine's worker, which is held: call it from another thread.
  std::thread shutdown([this] { server_->Shutdown(); });
  // No ASSERT before the join: the thread must be joined on every path.
  EXPECT_FALSE(reader->Read(&event)) << "a queued job sent " << event.ShortDebugString().substr(0, 200);
  const grpc::Status status = reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  pinned->Release();
  shutdown.join();
  EXPECT_TRUE(pinned->WaitForEnd());
  EXPECT_EQ(pinned->final_status().code(), absl::StatusCode::kUnavailable) << pinned->final_status();
}

class ImageGeneratorServiceWithQueueOfOneTest : public ImageGeneratorServiceTest {
 protected:
  int MaxQueue() override { return 1; }
};

TEST_F(ImageGeneratorServiceWithQueueOfOneTest, FullQueueIsResourceExhaustedAtOnce) {
  auto pinned = PinWorker("pinned");
  auto context = NewContext();
  v1::GenerateRequest queued_request = SmallRequest();
  queued_request.set_job_id("queued");
  auto queued = stub_->Generate(context.get(), queued_request);
  v1::GenerateEvent event;
  ASSERT_TRUE(queued->Read(&event));
  ASSERT_TRUE(event.has_accepted());
  EXPECT_EQ(event.accepted().queue_position(), 0u);

  // The queue of one is full: both methods are refused at once.
  v1::GenerateResponse response;
  const grpc::Status unary = GenerateImages(SmallRequest(), &response);
  EXPECT_EQ(unary.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << unary.error_message();
  EXPECT_TRUE(absl::StrContains(unary.error_message(), "queue is full")) << unary.error_message();
  const StreamOutcome stream = Generate(SmallRequest());
  EXPECT_EQ(stream.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << stream.status.error_message();
  EXPECT_TRUE(stream.events.empty()) << "a refused stream sent events";

  pinned->Release();
  std::optional<v1::GenerateEvent> last;
  while (queued->Read(&event)) last = event;
  const grpc::Status status = queued->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  ASSERT_TRUE(last.has_value());
  EXPECT_TRUE(last->has_result());
  EXPECT_EQ(SumSamples(ScrapeMetrics(), "imagegen_requests_total", {"outcome=\"rejected\""}), 2.0);
}

// Each invalid field is answered with the code and a message that begins with the field's name.
TEST_F(ImageGeneratorServiceTest, InvalidFieldsAreNamed) {
  struct Case {
    std::string field;
    std::function<void(v1::GenerateRequest&)> spoil;
    grpc::StatusCode code = grpc::StatusCode::INVALID_ARGUMENT;
  };
  const std::vector<Case> cases = {
      {"width", [](auto& r) { r.set_width(36); }},
      {"height", [](auto& r) { r.set_height(264); }},
      {"steps", [](auto& r) { r.set_steps(201); }},
      {"sampler", [](auto& r) { r.set_sampler("no-such-sampler"); }},
      {"model", [](auto& r) { r.set_model("sdxl"); }, grpc::StatusCode::NOT_FOUND},
      {"prompt", [](auto& r) { r.set_prompt(""); }},  // with the model's default guidance 3
      {"prompt", [](auto& r) { r.set_prompt(std::string(1001, 'a')); }},
      {"negative_prompt", [](auto& r) { r.set_negative_prompt(std::string(1001, 'a')); }},
      {"num_images", [](auto& r) { r.set_num_images(9); }},
      {"guidance_scale", [](auto& r) { r.set_guidance_scale(31); }},
      {"job_id", [](auto& r) { r.set_job_id("has space"); }},
      {"job_id", [](auto& r) { r.set_job_id("../etc"); }},
      {"job_id", [](auto& r) { r.set_job_id(std::string(65, 'j')); }},
      {"output_format", [](auto& r) { r.set_output_format(static_cast<v1::ImageFormat>(7)); }},
      {"preview.format", [](auto& r) { r.mutable_preview()->set_format(static_cast<v1::ImageFormat>(-1)); }},
      {"preview.method", [](auto& r) { r.mutable_preview()->set_method(static_cast<v1::PreviewMethod>(7)); }},
      {"quality", [](auto& r) { r.set_quality(101); }},
      {"preview.quality", [](auto& r) { r.mutable_preview()->set_quality(1000); }},
      {"init_image", [](auto& r) { r.set_init_image("\x89PNG"); }},
      {"strength", [](auto& r) { r.set_strength(0.5f); }},
      {"priority", [](auto& r) { r.set_priority(101); }},
  };
  for (const Case& c : cases) {
    v1::GenerateRequest request = SmallRequest();
    c.spoil(request);
    SCOPED_TRACE(request.ShortDebugString().substr(0, 120));
    v1::GenerateResponse response;
    const grpc::Status status = GenerateImages(request, &response);
    EXPECT_EQ(status.error_code(), c.code) << status.error_message();
    EXPECT_TRUE(absl::StartsWith(status.error_message(), c.field + " "))
        << "\"" << status.error_message() << "\" does not begin with " << c.field;
  }
  // Labels stay bounded: a model that is not loaded is counted as "unknown", never by its name.
  const std::string metrics = ScrapeMetrics();
  EXPECT_EQ(SumSamples(metrics, "imagegen_requests_total", {"outcome=\"invalid\""}),
            static_cast<double>(cases.size()));
  EXPECT_EQ(SumSamples(metrics, "imagegen_requests_total", {"model=\"unknown\"", "outcome=\"invalid\""}), 1.0);
  EXPECT_FALSE(absl::StrContains(metrics, "sdxl"));
}

// ---- Formats, warnings, units and limits (issue 12) ----

TEST_F(ImageGeneratorServiceTest, JpegAndWebpImagesAndPreviewsAreReturnedAsAsked) {
  v1::GenerateRequest request = SmallRequest();
  request.set_output_format(v1::IMAGE_FORMAT_JPEG);
  request.set_quality(80);
  request.mutable_preview()->set_every_n_steps(1);
  request.mutable_preview()->set_format(v1::IMAGE_FORMAT_WEBP);
  const StreamOutcome out = Generate(request);
  ASSERT_TRUE(out.status.ok()) << out.status.error_message();
  int previews = 0;
  for (const v1::GenerateEvent& e : out.events) {
    if (!e.has_progress()) continue;
    for (const v1::Image& p : e.progress().previews()) {
      ++previews;
      EXPECT_EQ(p.format(), v1::IMAGE_FORMAT_WEBP);
      EXPECT_EQ(p.data().substr(0, 4), "RIFF");
      EXPECT_EQ(p.data().substr(8, 4), "WEBP");
    }
  }
  EXPECT_GT(previews, 0);
  const v1::GenerateResponse& result = out.events.back().result();
  ASSERT_EQ(result.images_size(), 1);
  EXPECT_EQ(result.images(0).format(), v1::IMAGE_FORMAT_JPEG);
  auto decoded = DecodeImage(result.images(0).data());  // a real JPEG of the requested size
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->width, test::kTinySide);
  EXPECT_EQ(decoded->height, test::kTinySide);
  // The same seed as PNG: the JPEG is a close approximation of the same picture.
  request.set_output_format(v1::IMAGE_FORMAT_PNG);
  v1::GenerateResponse png;
  ASSERT_TRUE(GenerateImages(request, &png).ok());
  auto exact = DecodePng(png.images(0).data());
  ASSERT_TRUE(exact.ok());
  ASSERT_EQ(exact->pixels.size() * decoded->channels, decoded->pixels.size() * exact->channels);
  double error = 0;
  for (size_t i = 0; i < exact->pixels.size() && exact->channels == decoded->channels; ++i) {
    error += std::abs(exact->pixels[i] - decoded->pixels[i]);
  }
  EXPECT_LT(error / exact->pixels.size(), 12.0);
}

TEST_F(ImageGeneratorServiceTest, WordsTheModelDoesNotKnowComeBackAsWarnings) {
  v1::GenerateRequest request = SmallRequest();
  request.set_prompt("a red dress");
  request.set_negative_prompt("blurry");
  v1::GenerateResponse response;
  ASSERT_TRUE(GenerateImages(request, &response).ok());
  const std::vector<std::string> warnings(response.warnings().begin(), response.warnings().end());
  EXPECT_EQ(warnings, (std::vector<std::string>{
                          "prompt: \"red\" is not in model tiny-random's vocabulary and was ignored",
                          "negative_prompt: \"blurry\" is not in model tiny-random's vocabulary and was ignored"}));
  request.set_prompt("a dress");
  request.clear_negative_prompt();
  ASSERT_TRUE(GenerateImages(request, &response).ok());
  EXPECT_EQ(response.warnings_size(), 0);
}

// Progress counts denoising steps for every sampler: heun's two calls per step and pndm's
// warm-up report `steps` steps, one Progress each, and previews come every N of those steps.
TEST_F(ImageGeneratorServiceTest, ProgressCountsStepsForEverySampler) {
  for (const char* sampler : {"heun", "pndm", "ddim"}) {
    SCOPED_TRACE(sampler);
    v1::GenerateRequest request = SmallRequest();
    request.set_sampler(sampler);
    request.set_steps(6);
    request.mutable_preview()->set_every_n_steps(2);
    auto context = NewContext();
    auto reader = stub_->Generate(context.get(), request);
    std::vector<int> steps, preview_steps;
    v1::GenerateEvent event;
    while (reader->Read(&event)) {
      if (!event.has_progress() || event.progress().step() == 0) continue;
      EXPECT_EQ(event.progress().total_steps(), 6u);
      steps.push_back(static_cast<int>(event.progress().step()));
      if (event.progress().previews_size() > 0) preview_steps.push_back(steps.back());
    }
    ASSERT_TRUE(reader->Finish().ok());
    // A slow reader may miss steps (the newest replaces a pending one), never the last.
    ASSERT_FALSE(steps.empty());
    EXPECT_TRUE(std::is_sorted(steps.begin(), steps.end()));
    EXPECT_EQ(steps.back(), 6);
    for (int s : preview_steps) EXPECT_EQ(s % 2, 0) << "a preview at step " << s;
  }
  // The metric counts the same unit: 6 steps per job, not heun's 11 or pndm's 7 model calls.
  EXPECT_EQ(SumSamples(ScrapeMetrics(), "imagegen_denoising_steps_total", {"model=\"tiny-random\""}), 18.0);
}

// GenerateImages sends no previews, so its job makes none (not even the cheap ones).
TEST_F(ImageGeneratorServiceTest, GenerateImagesComputesNoPreviews) {
  v1::GenerateRequest request = SmallRequest();
  request.mutable_preview()->set_every_n_steps(1);
  request.mutable_preview()->set_method(v1::PREVIEW_METHOD_VAE_DECODE);
  v1::GenerateResponse response;
  ASSERT_TRUE(GenerateImages(request, &response).ok());
  const std::string metrics = ScrapeMetrics();
  EXPECT_EQ(SumSamples(metrics, "imagegen_time_to_first_preview_seconds_count", {}).value_or(0.0), 0.0) << metrics;
  ASSERT_TRUE(Generate(request).status.ok());
  EXPECT_EQ(SumSamples(ScrapeMetrics(), "imagegen_time_to_first_preview_seconds_count", {}), 1.0);
}

TEST_F(ImageGeneratorServiceTest, ListModelsReportsWhatARequestMayAsk) {
  auto context = NewContext();
  v1::ListModelsResponse response;
  ASSERT_TRUE(stub_->ListModels(context.get(), v1::ListModelsRequest(), &response).ok());
  ASSERT_EQ(response.models_size(), 1);
  const v1::ModelInfo& m = response.models(0);
  const RequestLimits limits;
  // The default flags leave the size limits per model: 256 and 4 x 256 x 256 for a 32x32 model.
  EXPECT_EQ(m.max_image_side(), 256u);
  EXPECT_EQ(m.max_images(), static_cast<uint32_t>(limits.max_images));
  EXPECT_EQ(m.max_pixels(), 4u * 256 * 256);
  EXPECT_EQ(m.max_steps(), static_cast<uint32_t>(limits.max_steps));
  EXPECT_EQ(m.max_prompt_chars(), static_cast<uint32_t>(limits.max_prompt_chars));
  // A request at the reported limits is accepted; one past them is not.
  v1::GenerateRequest request = SmallRequest();
  request.set_steps(m.max_steps());
  request.set_sampler("euler");
  request.set_guidance_scale(1);
  v1::GenerateResponse result;
  EXPECT_TRUE(GenerateImages(request, &result).ok());
  request.set_steps(m.max_steps() + 1);
  EXPECT_EQ(GenerateImages(request, &result).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ImageGeneratorServiceTest, InvalidRequestEndsTheStreamWithoutEvents) {
  v1::GenerateRequest request = SmallRequest();
  request.set_steps(100000);
  const StreamOutcome out = Generate(request);
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << out.status.error_message();
  EXPECT_TRUE(absl::StartsWith(out.status.error_message(), "steps ")) << out.status.error_message();
  EXPECT_TRUE(out.events.empty());
  // Previews are the stream's: their interval is checked there (GenerateImages ignores it).
  request = SmallRequest();
  request.mutable_preview()->set_every_n_steps(4);
  const StreamOutcome previews = Generate(request);
  EXPECT_EQ(previews.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StartsWith(previews.status.error_message(), "preview.every_n_steps "))
      << previews.status.error_message();
}

TEST_F(ImageGeneratorServiceTest, PromptWithMoreTokensThanTheEncoderTakesIsAccepted) {
  v1::GenerateRequest request = SmallRequest();
  std::string prompt;
  for (int i = 0; i < 100; ++i) absl::StrAppend(&prompt, "a bag ");  // 200 known words, 600 characters
  request.set_prompt(prompt);
  v1::GenerateResponse response;
  const grpc::Status status = GenerateImages(request, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.images_size(), 1);
}

TEST_F(ImageGeneratorServiceTest, HealthReportsServing) {
  const test::HealthOutcome health = test::CheckHealth(channel_);
  ASSERT_TRUE(health.status.ok()) << health.status.error_message();
  EXPECT_EQ(health.reply, test::kServingReply);
}

TEST_F(ImageGeneratorServiceTest, MetricsCountRequestsByOutcome) {
  v1::GenerateRequest request = SmallRequest();
  request.set_num_images(2);
  v1::GenerateResponse response;
  ASSERT_TRUE(GenerateImages(request, &response).ok());
  request.set_width(7);
  EXPECT_FALSE(GenerateImages(request, &response).ok());

  const std::string metrics = ScrapeMetrics();
  EXPECT_EQ(SumSamples(metrics, "imagegen_requests_total", {"model=\"tiny-random\"", "outcome=\"ok\""}), 1.0)
      << metrics;
  EXPECT_EQ(SumSamples(metrics, "imagegen_requests_total", {"model=\"tiny-random\"", "outcome=\"invalid\""}), 1.0)
      << metrics;
  EXPECT_EQ(SumSamples(metrics, "imagegen_images_generated_total", {"model=\"tiny-random\""}), 2.0) << metrics;
  EXPECT_EQ(SumSamples(metrics, "imagegen_denoising_steps_total", {"model=\"tiny-random\""}), 3.0) << metrics;
  EXPECT_EQ(SumSamples(metrics, "imagegen_step_duration_seconds_count", {"model=\"tiny-random\""}), 3.0) << metrics;
  EXPECT_EQ(SumSamples(metrics, "imagegen_queue_depth", {}), 0.0) << metrics;
}

// ---- Samplers, seeds and image to image through the real gRPC path (issue 4) ----

TEST_F(ImageGeneratorServiceTest, EverySamplerIsSelectableAndListed) {
  auto context = NewContext();
  v1::ListModelsResponse models;
  ASSERT_TRUE(stub_->ListModels(context.get(), v1::ListModelsRequest(), &models).ok());
  ASSERT_EQ(models.models_size(), 1);
  const auto& listed = models.models(0).samplers();
  EXPECT_EQ(std::vector<std::string>(listed.begin(), listed.end()), SamplerNames());
  for (const std::string& sampler : SamplerNames()) {
    v1::GenerateRequest request = SmallRequest();
    request.set_steps(5);
    request.set_sampler(sampler);
    v1::GenerateResponse response;
    const grpc::Status status = GenerateImages(request, &response);
    EXPECT_TRUE(status.ok()) << sampler << ": " << status.error_message();
    EXPECT_EQ(response.sampler(), sampler);
    ASSERT_EQ(response.images_size(), 1) << sampler;
  }
}

// The largest difference between two 8-bit images of the same size, in levels of 255.
int MaxPixelDifference(const std::string& png_a, const std::string& png_b) {
  auto a = DecodePng(png_a);
  auto b = DecodePng(png_b);
  EXPECT_TRUE(a.ok() && b.ok());
  if (!a.ok() || !b.ok() || a->pixels.size() != b->pixels.size()) return 256;
  int worst = 0;
  for (size_t i = 0; i < a->pixels.size(); ++i) worst = std::max(worst, std::abs(a->pixels[i] - b->pixels[i]));
  return worst;
}

// Image i of a request uses seed + i through its own generator: the same seed gives the same
// image alone, or at another position of a larger batch (the UNet's batched arithmetic may move
// a pixel by one level).
TEST_F(ImageGeneratorServiceTest, SeedGivesTheSameImageAloneOrInsideABatch) {
  for (const std::string& sampler : {std::string("ddim"), std::string("euler_a"), std::string("ddpm")}) {
    SCOPED_TRACE(sampler);
    v1::GenerateRequest alone = SmallRequest();
    alone.set_sampler(sampler);
    alone.set_seed(100);
    v1::GenerateRequest batch = alone;
    batch.set_seed(98);
    batch.set_num_images(4);
    v1::GenerateResponse alone_response, batch_response;
    ASSERT_TRUE(GenerateImages(alone, &alone_response).ok());
    ASSERT_TRUE(GenerateImages(batch, &batch_response).ok());
    ASSERT_EQ(batch_response.images_size(), 4);
    EXPECT_EQ(batch_response.images(2).seed(), 100u);
    EXPECT_LE(MaxPixelDifference(alone_response.images(0).data(), batch_response.images(2).data()), 1);
    // And a different seed gives a different image.
    EXPECT_GT(MaxPixelDifference(alone_response.images(0).data(), batch_response.images(1).data()), 1);
  }
}

// A 32x32 picture: a bright rectangle on black, like the default model's images.
RasterImage InitRaster(int channels) {
  RasterImage image;
  image.width = 32;
  image.height = 32;
  image.channels = channels;
  image.pixels.assign(32 * 32 * channels, 0);
  for (int y = 6; y < 26; ++y) {
    for (int x = 10; x < 22; ++x) {
      for (int c = 0; c < channels; ++c) image.pixels[(y * 32 + x) * channels + c] = 230;
    }
  }
  return image;
}

TEST_F(ImageGeneratorServiceTest, ImageToImageFromPngRunsTheLastStepsOnly) {
  auto png = EncodePng(InitRaster(1));
  ASSERT_TRUE(png.ok());
  v1::GenerateRequest request = SmallRequest();
  request.set_steps(10);
  request.set_init_image(*png);
  request.set_strength(0.5f);
  const StreamOutcome out = Generate(request);
  ASSERT_TRUE(out.status.ok()) << out.status.error_message();
  ASSERT_GE(out.events.size(), 3u);
  const v1::GenerateEvent& last_progress = out.events[out.events.size() - 2];
  ASSERT_TRUE(last_progress.has_progress());
  EXPECT_EQ(last_progress.progress().total_steps(), 5u);  // the last int(10 * 0.5) steps
  EXPECT_EQ(last_progress.progress().step(), 5u);
  const v1::GenerateResponse& result = out.events.back().result();
  ASSERT_EQ(result.images_size(), 1);
  auto decoded = DecodePng(result.images(0).data());
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->width, 32);
  EXPECT_EQ(decoded->height, 32);
}

TEST_F(ImageGeneratorServiceTest, ImageToImageDependsOnTheInitImageAndItsSeed) {
  auto rgb_jpeg = EncodeJpeg(InitRaster(3));
  RasterImage dark = InitRaster(1);
  std::fill(dark.pixels.begin(), dark.pixels.end(), 20);
  auto dark_png = EncodePng(dark);
  ASSERT_TRUE(rgb_jpeg.ok() && dark_png.ok());
  auto run = [&](const std::string& init) {
    v1::GenerateRequest request = SmallRequest();
    request.set_steps(10);
    request.set_init_image(init);
    request.set_strength(0.3f);
    v1::GenerateResponse response;
    const grpc::Status status = GenerateImages(request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.images_size() == 1 ? response.images(0).data() : std::string();
  };
  const std::string from_jpeg = run(*rgb_jpeg);
  EXPECT_EQ(run(*rgb_jpeg), from_jpeg);  // same init image, same seed: the same picture
  EXPECT_GT(MaxPixelDifference(from_jpeg, run(*dark_png)), 8);
}

TEST_F(ImageGeneratorServiceTest, ImageToImageTakesItsSizeFromTheInitImage) {
  RasterImage big = InitRaster(1);
  big.width = 16;  // 16x32 pixels
  big.pixels.resize(16 * 32);
  auto png = EncodePng(big);
  ASSERT_TRUE(png.ok());
  v1::GenerateRequest request = SmallRequest();
  request.set_init_image(*png);
  request.set_strength(0.8f);
  v1::GenerateResponse response;
  const grpc::Status status = GenerateImages(request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.images(0).width(), 16u);
  EXPECT_EQ(response.images(0).height(), 32u);
}

TEST_F(ImageGeneratorServiceTest, InvalidImageToImageFieldsAreNamed) {
  auto png = EncodePng(InitRaster(1));
  ASSERT_TRUE(png.ok());
  struct Case {
    std::string field;
    std::function<void(v1::GenerateRequest&)> spoil;
  };
  const std::vector<Case> cases = {
      {"init_image", [&](auto& r) { r.set_init_image("GIF89a not an image"); r.set_strength(0.5f); }},
      {"init_image", [&](auto& r) { r.set_init_image(png->substr(0, 40)); r.set_strength(0.5f); }},
      {"init_image", [&](auto& r) { r.set_init_image(*png); r.set_strength(0.5f); r.set_width(64); }},
      // Above --max_init_image_bytes (4 MiB): refused before decoding.
      {"init_image", [&](auto& r) { r.set_init_image(*png + std::string(4 << 20, '\0')); r.set_strength(0.5f); }},
      {"strength", [&](auto& r) { r.set_init_image(*png); r.set_strength(1.5f); }},
      {"strength", [&](auto& r) { r.set_init_image(*png); r.set_strength(-0.5f); }},
      {"strength", [&](auto& r) { r.set_init_image(*png); }},  // 0 with an init image
      {"strength", [&](auto& r) { r.set_init_image(*png); r.set_strength(0.2f); }},  // 3 steps * 0.2 < 1
  };
  for (const Case& c : cases) {
    v1::GenerateRequest request = SmallRequest();
    c.spoil(request);
    v1::GenerateResponse response;
    const grpc::Status status = GenerateImages(request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.field << ": " << status.error_message();
    EXPECT_TRUE(absl::StartsWith(status.error_message(), c.field + " "))
        << "\"" << status.error_message() << "\" does not begin with " << c.field;
  }
}

// gRPC itself refuses a message above --max_message_bytes (8 MiB), before any of it is parsed.
TEST_F(ImageGeneratorServiceTest, MessagesAboveMaxMessageBytesAreResourceExhausted) {
  v1::GenerateRequest request = SmallRequest();
  request.set_init_image(std::string(9 << 20, 'x'));
  v1::GenerateResponse response;
  const grpc::Status status = GenerateImages(request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  EXPECT_NE(status.error_message().find("larger than max"), std::string::npos) << status.error_message();
}

// ---- Streaming under load (issue 5) ----

TEST_F(ImageGeneratorServiceTest, VaeDecodePreviewsAreFullSizeDecodes) {
  v1::GenerateRequest request = SmallRequest();
  request.mutable_preview()->set_every_n_steps(3);
  request.mutable_preview()->set_method(v1::PREVIEW_METHOD_VAE_DECODE);
  const StreamOutcome out = Generate(request);
  ASSERT_TRUE(out.status.ok()) << out.status.error_message();
  const v1::GenerateEvent& last_progress = out.events[out.events.size() - 2];
  ASSERT_EQ(last_progress.progress().previews_size(), 1);
  // At the last step the latents are final: the preview is the result itself.
  EXPECT_EQ(last_progress.progress().previews(0).data(), out.events.back().result().images(0).data());
}

// One client opens a long stream with a preview at every step and never reads it; the server
// keeps only its newest event (counting replaced previews) and the others finish meanwhile.
TEST_F(ImageGeneratorServiceTest, AClientThatNeverReadsDoesNotSlowTheOthers) {
  grpc::ClientContext stalled_context;
  v1::GenerateRequest stalled = LongRequest("never-reads");
  stalled.mutable_preview()->set_every_n_steps(1);
  stalled.mutable_preview()->set_method(v1::PREVIEW_METHOD_VAE_DECODE);
  // Large noisy previews (8 PNGs of 96x96 per step, 15 MB in all) overflow gRPC's flow-control window.
  stalled.set_width(96);
  stalled.set_height(96);
  std::unique_ptr<grpc::ClientReader<v1::GenerateEvent>> reader = stub_->Generate(&stalled_context, stalled);

  std::vector<std::thread> clients;
  std::vector<grpc::Status> statuses(3);
  for (int i = 0; i < 3; ++i) {
    clients.emplace_back([this, i, &statuses] {
      v1::GenerateRequest request = SmallRequest();
      request.set_seed(1000 + i);
      request.mutable_preview()->set_every_n_steps(1);
      statuses[i] = Generate(request).status;
    });
  }
  for (std::thread& t : clients) t.join();
  for (const grpc::Status& status : statuses) EXPECT_TRUE(status.ok()) << status.error_message();

  // The stalled stream's job keeps running without waiting for its client: its previews pile
  // up as replacements, never as a backlog.
  bool replaced = false;
  for (int i = 0; i < 300 && !replaced; ++i) {
    replaced = SumSamples(ScrapeMetrics(), "imagegen_previews_replaced_total", {}).value_or(0) > 0;
    if (!replaced) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(replaced);
  stalled_context.TryCancel();
  v1::GenerateEvent event;
  while (reader->Read(&event)) {
  }
  const grpc::Status status = reader->Finish();
  EXPECT_TRUE(status.ok() || status.error_code() == grpc::StatusCode::CANCELLED) << status.error_message();
}

}  // namespace
}  // namespace imagegen
