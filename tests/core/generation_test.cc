// Generation::DenoiseStep shares one UNet call among jobs with different samplers, step counts,
// guidance scales and image counts; each job's result must be what it gets alone.
#include "core/engine/generation.h"

#include <memory>
#include <vector>

#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include "tests/support/test_bundle.h"

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
  auto bundle = ModelBundle::Load(test::TestBundleDir());
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

}  // namespace
}  // namespace imagegen
