// The converted Stable Diffusion reference checkpoints (the test_bundle fixture,
// models/convert/convert_sd.py) against what diffusers computed from them
// (tests/data/stable-diffusion/*/expected.safetensors): the bundle's tokenizer gives the text
// encoder's reference input ids, and the whole pipeline, started from the reference run's
// initial latents, gives its image: every pixel within 2 levels, 99% within 1 (REFERENCE.md).
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/engine/generation.h"
#include "core/image/png_codec.h"
#include "core/model/model_bundle.h"
#include "tests/support/safetensors.h"
#include "tests/support/test_bundle.h"
#include "tests/support/test_device.h"

namespace imagegen {
namespace {

// Hands the sampler the reference run's initial latents, once (DDIM draws nothing else), on the
// bundle's device.
class ReplayedLatents : public NoiseSource {
 public:
  ReplayedLatents(at::Tensor latents, at::Device device) : latents_(std::move(latents)), device_(device) {}
  at::Tensor Draw(at::IntArrayRef shape) override {
    EXPECT_EQ(draws_++, 0) << "the sampler drew noise after the initial latents";
    EXPECT_EQ(latents_.sizes(), shape);
    return latents_.clone().to(device_);
  }

 private:
  at::Tensor latents_;
  at::Device device_;
  int draws_ = 0;
};

// The bounds off the CPU or in reduced precision, in 8-bit levels, for the tiny random-weight
// checkpoints (see the test). Calibrated on the CPU with bfloat16 modules (LoadForTest): mean
// 2.9 and 8.6 levels, worst 21 and 81 (sd1-tiny, sd2-tiny). float16 keeps 3 bits more, and
// cuDNN's TF32 as many as float16 in the convolutions alone.
struct Bounds {
  double mean;
  int worst;
};
Bounds BoundsFor(Precision precision) {
  switch (precision) {
    case Precision::kFloat32: return {2.0, 32};
    case Precision::kFloat16: return {3.0, 48};
    case Precision::kBfloat16: return {16.0, 128};
  }
  return {0, 0};
}

at::Tensor ToTensor(const test::SafeTensor& t) {
  std::vector<float> values = test::Floats(t);
  return at::from_blob(values.data(), t.shape, at::kFloat).clone();
}

class SdPipelineTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto bundle =
        ModelBundle::Load(test::SdBundlesDir() + "/" + GetParam(), test::TestDevice(), test::TestPrecision());
    ASSERT_TRUE(bundle.ok()) << bundle.status();
    bundle_ = *std::move(bundle);
    auto tensors = test::ReadSafetensors(test::SdReferenceDir() + "/" + GetParam() + "/expected.safetensors");
    ASSERT_TRUE(tensors.ok()) << tensors.status();
    tensors_ = *std::move(tensors);
    std::ifstream in(test::SdReferenceDir() + "/" + GetParam() + "/expected.json");
    settings_ = nlohmann::json::parse(in)["pipeline"];
  }

  std::unique_ptr<ModelBundle> bundle_;
  std::map<std::string, test::SafeTensor> tensors_;
  nlohmann::json settings_;
};

TEST_P(SdPipelineTest, TokenizerGivesTheReferenceInputIds) {
  const test::SafeTensor& ids = tensors_.at("text_encoder.input_ids");
  ASSERT_EQ(ids.dtype, "I64");
  std::vector<int64_t> expected(ids.data.size() / sizeof(int64_t));
  std::memcpy(expected.data(), ids.data.data(), ids.data.size());
  std::vector<int64_t> ours = bundle_->tokenizer().Encode("a photograph of an astronaut riding a horse");
  const std::vector<int64_t> empty = bundle_->tokenizer().Encode("");
  ours.insert(ours.end(), empty.begin(), empty.end());
  EXPECT_EQ(ours, expected);
}

// How far our 8-bit image is from the reference's.
struct ImageDifference {
  int worst = 0;
  size_t off_by_more_than_one = 0;
  double mean = 0;  // levels
};

ImageDifference Compare(const RasterImage& ours, const std::vector<float>& reference) {
  ImageDifference d;
  for (size_t i = 0; i < reference.size(); ++i) {
    // diffusers' numpy_to_pil: (image * 255).round() as uint8.
    const int expected = static_cast<int>(std::lround(std::clamp(reference[i], 0.0f, 1.0f) * 255.0f));
    const int diff = std::abs(static_cast<int>(ours.pixels[i]) - expected);
    d.worst = std::max(d.worst, diff);
    d.off_by_more_than_one += diff > 1;
    d.mean += diff;
  }
  d.mean /= static_cast<double>(reference.size());
  return d;
}

// Runs the reference request from the reference latents on `bundle`: its PNG, decoded.
absl::StatusOr<RasterImage> RunReference(ModelBundle* bundle, const nlohmann::json& settings, at::Tensor latents) {
  JobRequest r;
  r.job_id = "sd-pipeline";
  r.model = bundle->config().name;
  r.prompt = settings["prompt"];
  r.negative_prompt = settings["negative_prompt"];
  r.width = settings["width"];
  r.height = settings["height"];
  r.steps = settings["num_inference_steps"];
  r.guidance_scale = settings["guidance_scale"];
  r.sampler = "ddim";  // the folder's DDIMScheduler, eta 0
  r.num_images = 1;
  auto generation =
      Generation::Start(bundle, r, std::make_unique<ReplayedLatents>(std::move(latents), bundle->device()));
  if (!generation.ok()) return generation.status();
  while (!(*generation)->done()) Generation::DenoiseStep({generation->get()});
  auto images = (*generation)->Decode();
  if (!images.ok()) return images.status();
  return DecodePng(images->front().data);
}

TEST_P(SdPipelineTest, WholePipelineFromTheReferenceLatentsGivesTheReferenceImage) {
  c10::InferenceMode inference;
  auto ours = RunReference(bundle_.get(), settings_, ToTensor(tensors_.at("pipeline.initial_latents")));
  ASSERT_TRUE(ours.ok()) << ours.status();
  const std::vector<float> reference = test::Floats(tensors_.at("pipeline.image"));  // [1, H, W, 3] in [0, 1]
  ASSERT_EQ(ours->pixels.size(), reference.size());
  const ImageDifference d = Compare(*ours, reference);
  if (test::TestDeviceIsCpu() && test::TestPrecision() == Precision::kFloat32) {
    EXPECT_LE(d.worst, 2);
    EXPECT_LE(d.off_by_more_than_one, reference.size() / 100) << "of " << reference.size();
    return;
  }
  // On a GPU even float32 convolutions round differently (cuDNN's TF32, LibTorch's default), and
  // float16 keeps 11 bits: every step moves the latents a little, which the random-weight VAE
  // magnifies in places. Bounded on average, with a loose worst case.
  const Bounds bounds = BoundsFor(test::TestPrecision());
  EXPECT_LE(d.mean, bounds.mean) << "worst " << d.worst << " on " << test::TestDevice();
  EXPECT_LE(d.worst, bounds.worst) << "mean " << d.mean << " on " << test::TestDevice();
}

INSTANTIATE_TEST_SUITE_P(ReferenceCheckpoints, SdPipelineTest, ::testing::Values("sd1-tiny", "sd2-tiny"));

}  // namespace
}  // namespace imagegen
