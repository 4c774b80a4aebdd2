#include "tests/support/test_bundle.h"

#include <cstdlib>

#include "core/math/sampler_registry.h"

namespace imagegen::test {

std::string TestBundleDir() { return IMAGEGEN_TEST_BUNDLE_DIR; }

std::string FaultyBundleDir() { return IMAGEGEN_FAULTY_BUNDLE_DIR; }

std::string SdBundlesDir() {
  // The environment may point elsewhere (bundles converted by hand while working on the converter).
  const char* dir = std::getenv("IMAGEGEN_SD_BUNDLES_DIR");
  return dir != nullptr && *dir != '\0' ? dir : IMAGEGEN_SD_BUNDLES_DIR;
}

std::string SdReferenceDir() { return IMAGEGEN_SD_REFERENCE_DIR; }

ModelConfig TinyModelConfig() {
  ModelConfig model;
  model.name = kTinyModel;
  model.default_width = kTinySide;
  model.default_height = kTinySide;
  model.downsampling_factor = 4;
  model.size_multiple = 8;
  model.max_length = kTinyMaxLength;
  model.default_sampler = "ddim";
  model.default_steps = 30;
  model.default_guidance_scale = 3.0;
  // As ModelBundle::Load finds for a plain scheduler config: every sampler, from 1 step.
  model.num_train_timesteps = 1000;
  for (const std::string& name : SamplerNames()) model.samplers.push_back({name, 1, ""});
  return model;
}

JobRequest TinyJobRequest(const std::string& job_id, int steps) {
  JobRequest r;
  r.job_id = job_id;
  r.model = kTinyModel;
  r.prompt = "a photo of a pair of ankle boots";
  r.width = kTinySide;
  r.height = kTinySide;
  r.steps = steps;
  r.guidance_scale = 3.0;
  r.sampler = "ddim";
  r.seed = 7;
  r.num_images = 1;
  return r;
}

}  // namespace imagegen::test
