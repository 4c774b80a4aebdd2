// ToJobRequest: what the server resolves and checks before the engine sees a request. Every
// other field is the engine's to check (ValidateJobRequest, tests/core/engine_test.cc).
#include "server/request_mapper.h"

#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "core/image/png_codec.h"
#include "tests/support/fake_pipeline.h"
#include "tests/support/test_bundle.h"

namespace imagegen {
namespace {

class RequestMapperTest : public ::testing::Test {
 protected:
  RequestMapperTest()
      : model_(test::TinyModelConfig()),
        engine_(Engine::CreateForTest(Engine::Options{}, {model_}, {}, &clock_, nullptr)) {}

  absl::StatusOr<JobRequest> Map(const v1::GenerateRequest& request, bool with_previews = true) {
    return ToJobRequest(request, *engine_, model_.name, deadline_, with_previews);
  }

  void ExpectInvalid(const v1::GenerateRequest& request, const std::string& field) {
    auto job = Map(request);
    ASSERT_EQ(job.status().code(), absl::StatusCode::kInvalidArgument) << job.status();
    EXPECT_TRUE(absl::StartsWith(job.status().message(), field + " ")) << job.status();
  }

  test::FakeClock clock_;
  ModelConfig model_;
  std::unique_ptr<Engine> engine_;
  absl::Time deadline_ = absl::FromUnixSeconds(2'000'000);
};

TEST_F(RequestMapperTest, ZeroAndEmptyFieldsTakeTheModelsDefaults) {
  v1::GenerateRequest request;
  request.set_prompt("a dress");
  auto job = Map(request);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->model, model_.name);
  EXPECT_EQ(job->width, model_.default_width);
  EXPECT_EQ(job->height, model_.default_height);
  EXPECT_EQ(job->steps, model_.default_steps);
  EXPECT_EQ(job->sampler, model_.default_sampler);
  EXPECT_EQ(job->guidance_scale, model_.default_guidance_scale);
  EXPECT_EQ(job->num_images, 1);
  EXPECT_EQ(job->output_format, ImageFormat::kPng);
  EXPECT_EQ(job->output_quality, kDefaultOutputQuality);
  EXPECT_EQ(job->preview_quality, kDefaultPreviewQuality);
  EXPECT_EQ(job->deadline, deadline_);
  EXPECT_TRUE(absl::StartsWith(job->job_id, "job-")) << job->job_id;
  EXPECT_NE(Map(request)->job_id, job->job_id);  // a fresh id per request
}

TEST_F(RequestMapperTest, SetFieldsAreKept) {
  v1::GenerateRequest request;
  request.set_prompt("a dress");
  request.set_width(48);
  request.set_steps(12);
  request.set_sampler("heun");
  request.set_seed(99);
  request.set_num_images(2);
  request.set_output_format(v1::IMAGE_FORMAT_WEBP);
  request.set_quality(55);
  request.set_job_id("mine-1");
  request.mutable_preview()->set_every_n_steps(3);
  request.mutable_preview()->set_format(v1::IMAGE_FORMAT_JPEG);
  request.mutable_preview()->set_method(v1::PREVIEW_METHOD_VAE_DECODE);
  auto job = Map(request);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->width, 48);
  EXPECT_EQ(job->steps, 12);
  EXPECT_EQ(job->sampler, "heun");
  EXPECT_EQ(job->seed, 99u);
  EXPECT_EQ(job->num_images, 2);
  EXPECT_EQ(job->output_format, ImageFormat::kWebp);
  EXPECT_EQ(job->output_quality, 55);
  EXPECT_EQ(job->job_id, "mine-1");
  EXPECT_EQ(job->preview_every_n_steps, 3);
  EXPECT_EQ(job->preview_format, ImageFormat::kJpeg);
  EXPECT_TRUE(job->preview_vae_decode);
}

// GenerateImages sends no previews: its job is told to make none.
TEST_F(RequestMapperTest, WithoutPreviewsTheJobMakesNone) {
  v1::GenerateRequest request;
  request.set_prompt("a dress");
  request.mutable_preview()->set_every_n_steps(1);
  EXPECT_EQ(Map(request, /*with_previews=*/false)->preview_every_n_steps, 0);
}

TEST_F(RequestMapperTest, EnumValuesOutsideTheApiAreNamed) {
  v1::GenerateRequest request;
  request.set_prompt("a dress");
  request.set_output_format(static_cast<v1::ImageFormat>(9));
  ExpectInvalid(request, "output_format");
  request.clear_output_format();
  request.mutable_preview()->set_format(static_cast<v1::ImageFormat>(4));
  ExpectInvalid(request, "preview.format");
  request.mutable_preview()->clear_format();
  request.mutable_preview()->set_method(static_cast<v1::PreviewMethod>(3));
  ExpectInvalid(request, "preview.method");
}

TEST_F(RequestMapperTest, JobIdsAreShortAndPlain) {
  v1::GenerateRequest request;
  request.set_prompt("a dress");
  for (const std::string& bad : {std::string("has space"), std::string("../etc"), std::string(65, 'j'), std::string("nul\0id", 6)}) {
    request.set_job_id(bad);
    ExpectInvalid(request, "job_id");
  }
  request.set_job_id(std::string(64, 'j'));
  EXPECT_TRUE(Map(request).ok());
}

TEST_F(RequestMapperTest, UnknownModelIsNotFoundAndNamesTheLoadedOnes) {
  v1::GenerateRequest request;
  request.set_model(std::string(10000, 'm'));
  auto job = Map(request);
  ASSERT_EQ(job.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(job.status().message(), "loaded: " + model_.name)) << job.status();
  EXPECT_LT(job.status().message().size(), 300u);  // the client's string is cut, not echoed whole
}

TEST_F(RequestMapperTest, ImageToImageTakesItsSizeFromTheInitImage) {
  RasterImage raster{24, 16, 1, std::vector<uint8_t>(24 * 16, 100)};
  auto png = EncodePng(raster);
  ASSERT_TRUE(png.ok());
  v1::GenerateRequest request;
  request.set_prompt("a dress");
  request.set_init_image(*png);
  request.set_strength(0.5f);
  auto job = Map(request);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->width, 24);
  EXPECT_EQ(job->height, 16);
  // Issue 14: only the header is read here, on the RPC thread; the job holds the encoded bytes
  // and its worker decodes them when it starts.
  EXPECT_TRUE(job->init_image.pixels.empty());
  EXPECT_EQ(job->init_image_encoded, *png);
  EXPECT_EQ(job->init_image_width(), 24);
  EXPECT_EQ(job->init_image_height(), 16);
  request.set_init_image("not an image");
  ExpectInvalid(request, "init_image");
  // A header that declares a size is enough here, whatever follows it.
  request.set_init_image(png->substr(0, 40));
  EXPECT_TRUE(Map(request).ok());
}

}  // namespace
}  // namespace imagegen
