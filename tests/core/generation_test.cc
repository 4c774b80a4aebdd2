// Generation::DenoiseStep shares one UNet call among jobs with different samplers, step counts,
// guidance scales and image counts; each job's result must be what it gets alone. A bundle in
// another precision casts at the model boundaries only, and redoes a decode that overflows.
#include "core/engine/generation.h"

#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include "tests/support/test_bundle.h"
#include "tests/support/test_device.h"

namespace imagegen {
namespace {

using test::TinyJobRequest;

std::vector<std::string> RunToPngs(std::vector<Generation*> batch) {
  // Steps all unfinished generations together until every one is done.
  while (true) {
    std::vector<Generation*> running;
    for (Generation* g : batch) {
      if (!g->done()) running.push_back(g);
    }
    if (running.empty()) break;
    Generation::DenoiseStep(running);
  }
  std::vector<std::string> pngs;
  for (Generation* g : batch) {
    auto images = g->Decode();
    EXPECT_TRUE(images.ok()) << images.status();
    if (!images.ok()) continue;
    for (const EncodedImage& image : *images) pngs.push_back(image.data);
  }
  return pngs;
}

int MaxDifference(const std::string& png_a, const std::string& png_b) {
  auto a = DecodePng(png_a);
  auto b = DecodePng(png_b);
  if (!a.ok() || !b.ok() || a->pixels.size() != b->pixels.size()) return 256;
  int worst = 0;
  for (size_t i = 0; i < a->pixels.size(); ++i) worst = std::max(worst, std::abs(a->pixels[i] - b->pixels[i]));
  return worst;
}

TEST(Generation, JobsOfDifferentSettingsShareOneUnetCallAndGetTheirOwnImages) {
  c10::InferenceMode guard;
  // float32 whatever IMAGEGEN_TEST_DTYPE says: tiny-random's modules (models/train/ldm.py)
  // compute in float32 whatever their input.
  auto bundle = ModelBundle::Load(test::TestBundleDir(), test::TestDevice());
  ASSERT_TRUE(bundle.ok()) << bundle.status();

  std::vector<JobRequest> requests;
  requests.push_back(TinyJobRequest("ddim", 6));
  JobRequest euler_a = TinyJobRequest("euler_a", 4);
  euler_a.sampler = "euler_a";
  euler_a.guidance_scale = 1.0;  // one row per image
  euler_a.num_images = 2;
  euler_a.seed = 11;
  requests.push_back(euler_a);
  JobRequest dpm = TinyJobRequest("dpm", 9);
  dpm.sampler = "dpmpp_2m_karras";
  dpm.guidance_scale = 7.5;
  dpm.prompt = "a sneaker";
  requests.push_back(dpm);
  JobRequest heun = TinyJobRequest("heun", 3);
  heun.sampler = "heun";
  heun.num_images = 3;
  requests.push_back(heun);

  std::vector<std::string> alone;
  for (const JobRequest& r : requests) {
    auto g = Generation::Start(bundle->get(), r);
    ASSERT_TRUE(g.ok()) << g.status();
    for (std::string& png : RunToPngs({g->get()})) alone.push_back(std::move(png));
  }

  std::vector<std::unique_ptr<Generation>> owned;
  std::vector<Generation*> batch;
  for (const JobRequest& r : requests) {
    auto g = Generation::Start(bundle->get(), r);
    ASSERT_TRUE(g.ok()) << g.status();
    batch.push_back(g->get());
    owned.push_back(*std::move(g));
  }
  // The first shared call carries every row: 2 + 2 + 2 + 6 (guidance doubles a job's images).
  EXPECT_EQ(Generation::DenoiseStep(batch), 2 + 2 + 2 + 6);
  const std::vector<std::string> together = RunToPngs(batch);

  ASSERT_EQ(together.size(), alone.size());
  ASSERT_EQ(alone.size(), 1u + 2u + 1u + 3u);
  for (size_t i = 0; i < alone.size(); ++i) {
    EXPECT_LE(MaxDifference(alone[i], together[i]), 1) << "image " << i;
  }
}

// diffusers' force_upcast, on the CPU with fakes: a decode whose output is not finite is redone
// with the float32 decoder; the result is float32 either way.
TEST(DecodeWithUpcast, NonFiniteOutputIsDecodedAgainInFloat32) {
  const at::Tensor latents = at::ones({2, 4, 2, 2});
  int half_calls = 0, float_calls = 0;
  const DecodeFn overflowing = [&](const at::Tensor& z) {
    ++half_calls;
    at::Tensor out = z.to(at::kDouble).clone();
    out[1][0][0][0] = std::numeric_limits<double>::quiet_NaN();
    return out;
  };
  const DecodeFn float32 = [&](const at::Tensor& z) {
    ++float_calls;
    EXPECT_EQ(z.scalar_type(), at::kFloat);
    return z * 2;
  };
  bool upcast = false;
  at::Tensor images = DecodeWithUpcast(latents, overflowing, float32, &upcast);
  EXPECT_TRUE(upcast);
  EXPECT_EQ(half_calls, 1);
  EXPECT_EQ(float_calls, 1);
  EXPECT_EQ(images.scalar_type(), at::kFloat);
  EXPECT_TRUE(images.equal(latents * 2));

  const DecodeFn infinite = [](const at::Tensor& z) { return z / 0.0; };
  images = DecodeWithUpcast(latents, infinite, float32, &upcast);
  EXPECT_TRUE(upcast);
  EXPECT_TRUE(images.equal(latents * 2));
}

TEST(DecodeWithUpcast, FiniteOutputIsKeptAndCastToFloat32) {
  const at::Tensor latents = at::full({1, 4, 2, 2}, 0.5);
  int float_calls = 0;
  const DecodeFn reduced = [](const at::Tensor& z) { return z.to(at::kDouble) - 1; };
  const DecodeFn float32 = [&](const at::Tensor& z) {
    ++float_calls;
    return z;
  };
  bool upcast = true;
  at::Tensor images = DecodeWithUpcast(latents, reduced, float32, &upcast);
  EXPECT_FALSE(upcast);
  EXPECT_EQ(float_calls, 0);
  EXPECT_EQ(images.scalar_type(), at::kFloat);
  EXPECT_TRUE(images.equal(at::full({1, 4, 2, 2}, -0.5)));
}

TEST(DecodeWithUpcast, WithoutAFloat32DecoderNothingIsChecked) {
  // A float32 bundle: its decode is the only one, NaN or not.
  const DecodeFn nan = [](const at::Tensor& z) { return z * std::numeric_limits<float>::quiet_NaN(); };
  bool upcast = true;
  at::Tensor images = DecodeWithUpcast(at::ones({1, 1, 1, 1}), nan, DecodeFn(), &upcast);
  EXPECT_FALSE(upcast);
  EXPECT_TRUE(std::isnan(images.item<float>()));
}

// A request for the SD reference bundle sd1-tiny (64x64, CLIP tokenizer).
JobRequest SdRequest(const std::string& job_id, const std::string& sampler, int steps) {
  JobRequest r;
  r.job_id = job_id;
  r.model = "sd1-tiny";
  r.prompt = "a photograph of an astronaut riding a horse";
  r.negative_prompt = "blurry";
  r.width = r.height = 64;
  r.steps = steps;
  r.guidance_scale = 7.5;
  r.sampler = sampler;
  r.seed = 3;
  return r;
}

// Every PNG (results, then previews) of `requests` run together to the end, with a preview
// after the first step (previews ask for one).
std::vector<std::string> RunWithPreviews(ModelBundle* bundle, const std::vector<JobRequest>& requests,
                                         std::vector<int>* upcasts) {
  std::vector<std::unique_ptr<Generation>> owned;
  std::vector<Generation*> batch;
  for (const JobRequest& r : requests) {
    auto g = Generation::Start(bundle, r);
    EXPECT_TRUE(g.ok()) << g.status();
    if (!g.ok()) return {};
    batch.push_back(g->get());
    owned.push_back(*std::move(g));
  }
  Generation::DenoiseStep(batch);
  std::vector<std::string> previews;
  for (Generation* g : batch) {
    auto images = g->Preview();
    EXPECT_TRUE(images.ok()) << images.status();
    if (!images.ok()) continue;
    for (const EncodedImage& image : *images) previews.push_back(image.data);
  }
  std::vector<std::string> pngs = RunToPngs(batch);
  pngs.insert(pngs.end(), previews.begin(), previews.end());
  for (Generation* g : batch) upcasts->push_back(g->vae_upcasts());
  return pngs;
}

// The casts at the model boundaries, on the CPU: the SD reference bundle cast to float64 must
// give the float32 bundle's images (text encoder, UNet with guidance, a stochastic sampler,
// image to image through the VAE encoder, both preview kinds, the decode), and keep its latents
// in float32 (else the float32 decoder copy, which takes them as they are, would refuse them).
TEST(Generation, ModulesInAnotherPrecisionGiveTheFloat32Images) {
  c10::InferenceMode guard;
  const std::string dir = test::SdBundlesDir() + "/sd1-tiny";
  auto float32 = ModelBundle::Load(dir);
  ASSERT_TRUE(float32.ok()) << float32.status();
  auto float64 = ModelBundle::LoadForTest(dir, at::kDouble);
  ASSERT_TRUE(float64.ok()) << float64.status();
  EXPECT_EQ((*float64)->dtype(), at::kDouble);
  ASSERT_NE((*float64)->vae_decoder_float32(), nullptr);
  EXPECT_EQ((*float32)->vae_decoder_float32(), nullptr);

  std::vector<JobRequest> requests;
  requests.push_back(SdRequest("ddim", "ddim", 3));
  requests.back().preview_vae_decode = true;
  requests.push_back(SdRequest("euler_a", "euler_a", 3));
  requests.back().num_images = 2;
  requests.back().guidance_scale = 1.0;
  JobRequest img2img = SdRequest("img2img", "ddim", 4);
  img2img.strength = 0.5;
  img2img.init_image.width = img2img.init_image.height = 64;
  img2img.init_image.channels = 3;
  for (int i = 0; i < 64 * 64 * 3; ++i) img2img.init_image.pixels.push_back(static_cast<uint8_t>(i * 7));
  img2img.preview_vae_decode = true;
  requests.push_back(img2img);

  std::vector<int> upcasts32, upcasts64;
  const std::vector<std::string> want = RunWithPreviews(float32->get(), requests, &upcasts32);
  const std::vector<std::string> got = RunWithPreviews(float64->get(), requests, &upcasts64);
  ASSERT_EQ(want.size(), 2u * (1 + 2 + 1));
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_LE(MaxDifference(want[i], got[i]), 1) << "image " << i;
  EXPECT_EQ(upcasts32, std::vector<int>(3, 0));
  EXPECT_EQ(upcasts64, std::vector<int>(3, 0));

  // The float32 decoder copy decodes what the job keeps: float32 latents, scaled.
  at::Tensor z = at::randn({1, 4, 8, 8});
  at::Tensor a = (*float32)->vae_decoder().forward({z}).toTensor();
  at::Tensor b = (*float64)->vae_decoder_float32()->forward({z}).toTensor();
  EXPECT_TRUE(at::allclose(a, b, 1e-5, 1e-6));
}

// bfloat16, a real reduced precision, runs on LibTorch's CPU kernels too: the whole job goes
// through (the images of random weights are not compared: bfloat16 keeps 8 bits).
TEST(Generation, Bfloat16ModulesRunAWholeJob) {
  c10::InferenceMode guard;
  auto bundle = ModelBundle::LoadForTest(test::SdBundlesDir() + "/sd1-tiny", at::kBFloat16);
  ASSERT_TRUE(bundle.ok()) << bundle.status();
  EXPECT_EQ((*bundle)->precision(), Precision::kBfloat16);
  std::vector<JobRequest> requests = {SdRequest("dpm", "dpmpp_2m_karras", 3)};
  requests.back().preview_vae_decode = true;
  std::vector<int> upcasts;
  const std::vector<std::string> pngs = RunWithPreviews(bundle->get(), requests, &upcasts);
  ASSERT_EQ(pngs.size(), 2u);
  for (const std::string& png : pngs) {
    auto image = DecodePng(png);
    ASSERT_TRUE(image.ok()) << image.status();
    EXPECT_EQ(image->width, 64);
  }
}

}  // namespace
}  // namespace imagegen
