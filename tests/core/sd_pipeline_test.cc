// The converted Stable Diffusion reference checkpoints (the test_bundle fixture,
// models/convert/convert_sd.py) against what diffusers computed from them
// (tests/data/stable-diffusion/*/expected.safetensors): the bundle's tokenizer gives the text
// encoder's reference input ids, and the whole pipeline, started from the reference run's
// initial latents, gives its image: every pixel within 2 levels, 99% within 1 (REFERENCE.md).
#include <c10/core/InferenceMode.h>

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

namespace imagegen {
namespace {

// Hands the sampler the reference run's initial latents, once (DDIM draws nothing else).
class ReplayedLatents : public NoiseSource {
 public:
  explicit ReplayedLatents(at::Tensor latents) : latents_(std::move(latents)) {}
  at::Tensor Draw(at::IntArrayRef shape) override {
    EXPECT_EQ(draws_++, 0) << "the sampler drew noise after the initial latents";
    EXPECT_EQ(latents_.sizes(), shape);
    return latents_.clone();
  }

 private:
  at::Tensor latents_;
  int draws_ = 0;
};

at::Tensor ToTensor(const test::SafeTensor& t) {
  std::vector<float> values = test::Floats(t);
  return at::from_blob(values.data(), t.shape, at::kFloat).clone();
}

class SdPipelineTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto bundle = ModelBundle::Load(test::SdBundlesDir() + "/" + GetParam());
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

TEST_P(SdPipelineTest, WholePipelineFromTheReferenceLatentsGivesTheReferenceImage) {
  c10::InferenceMode inference;
  JobRequest r;
  r.job_id = "sd-pipeline";
  r.model = bundle_->config().name;
  r.prompt = settings_["prompt"];
  r.negative_prompt = settings_["negative_prompt"];
  r.width = settings_["width"];
  r.height = settings_["height"];
  r.steps = settings_["num_inference_steps"];
  r.guidance_scale = settings_["guidance_scale"];
  r.sampler = "ddim";  // the folder's DDIMScheduler, eta 0
  r.num_images = 1;
  auto generation =
      Generation::Start(bundle_.get(), r, std::make_unique<ReplayedLatents>(ToTensor(tensors_.at("pipeline.initial_latents"))));
  ASSERT_TRUE(generation.ok()) << generation.status();
  while (!(*generation)->done()) Generation::DenoiseStep({generation->get()});
  auto images = (*generation)->Decode();
  ASSERT_TRUE(images.ok()) << images.status();
  auto ours = DecodePng(images->front().data);
  ASSERT_TRUE(ours.ok()) << ours.status();
  const std::vector<float> reference = test::Floats(tensors_.at("pipeline.image"));  // [1, H, W, 3] in [0, 1]
  ASSERT_EQ(ours->pixels.size(), reference.size());
  int worst = 0;
  size_t off_by_more_than_one = 0;
  for (size_t i = 0; i < reference.size(); ++i) {
    // diffusers' numpy_to_pil: (image * 255).round() as uint8.
    const int expected = static_cast<int>(std::lround(std::clamp(reference[i], 0.0f, 1.0f) * 255.0f));
    const int diff = std::abs(static_cast<int>(ours->pixels[i]) - expected);
    worst = std::max(worst, diff);
    off_by_more_than_one += diff > 1;
  }
  EXPECT_LE(worst, 2);
  EXPECT_LE(off_by_more_than_one, reference.size() / 100) << "of " << reference.size();
}

INSTANTIATE_TEST_SUITE_P(ReferenceCheckpoints, SdPipelineTest, ::testing::Values("sd1-tiny", "sd2-tiny"));

}  // namespace
}  // namespace imagegen
