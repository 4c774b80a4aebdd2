// Fuzz target: arbitrary bytes as a serialized imagegen.v1.GenerateRequest, through what the
// server does with a request before a worker sees it: protobuf parsing, ToJobRequest (model
// lookup, defaults, enums, init_image header, job id) and ValidateJobRequest (what
// Engine::Submit runs); then the init_image decoding that a worker does.
//
// Built two ways (tests/CMakeLists.txt): with libFuzzer in the clang AddressSanitizer build
// (generate_request_fuzzer; a short run is a CTest, a long run is in docs/TESTING.md), and with
// replay_main.cc in every build (generate_request_replay), which runs the seed corpus and every
// input the fuzzer ever crashed on (tests/fuzz/regressions/) as a plain test.
//
// Besides "no crash, no leak, no undefined behaviour", an accepted request must be one a worker
// can run within the server's limits: the checks below abort on a request that slipped through.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>

#include "absl/time/time.h"
#include "core/engine/engine.h"
#include "core/image/image_codec.h"
#include "core/math/sampler_registry.h"
#include "core/model/model_config.h"
#include "imagegen/v1/imagegen.pb.h"
#include "server/request_mapper.h"

namespace {

// The engine the requests are mapped against: the embedded default model's model.json, with
// small limits so that the fuzzer reaches them. No worker and no weights: nothing runs a job.
imagegen::Engine* engine = nullptr;

imagegen::Engine* MakeEngine() {
  const std::string path = std::string(IMAGEGEN_FUZZ_MODEL_DIR) + "/model.json";
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  auto config = imagegen::ModelConfig::FromJson(text.str(), path);
  if (!config.ok()) {
    std::cerr << "generate_request_fuzzer: " << config.status() << "\n";
    std::abort();
  }
  config->has_vae_encoder = true;  // image to image is reachable
  // What ModelBundle::Load finds for a plain scheduler config, without loading the weights:
  // every sampler from 1 step, pndm from 4 (its Runge-Kutta warm-up).
  config->num_train_timesteps = 1000;
  for (const std::string& name : imagegen::SamplerNames()) config->samplers.push_back({name, name == "pndm" ? 4 : 1, ""});
  imagegen::Engine::Options options;
  options.limits.max_steps = 50;
  options.limits.max_images = 4;
  options.limits.max_prompt_chars = 200;
  options.limits.max_image_side = 256;
  options.limits.max_pixels = 4 * 64 * 64;
  options.limits.max_init_image_bytes = 64 << 10;
  static imagegen::RealClock clock;
  return imagegen::Engine::CreateForTest(options, {*config}, {}, &clock, nullptr).release();
}

void Require(bool condition, const char* what) {
  if (!condition) {
    std::cerr << "generate_request_fuzzer: an accepted request breaks: " << what << "\n";
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  engine = MakeEngine();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  imagegen::v1::GenerateRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  const imagegen::ModelConfig& model = *engine->models().front();
  auto job = imagegen::ToJobRequest(request, *engine, model.name, absl::InfiniteFuture(), /*with_previews=*/true);
  if (!job.ok()) {
    Require(!job.status().message().empty(), "a refusal without a message");
    return 0;
  }
  const imagegen::RequestLimits& limits = engine->limits();
  if (absl::Status valid = imagegen::ValidateJobRequest(*job, model, limits); !valid.ok()) {
    Require(!valid.message().empty(), "a refusal without a message");
    return 0;
  }
  Require(job->width >= model.size_multiple && job->width <= limits.max_image_side, "width");
  Require(job->height >= model.size_multiple && job->height <= limits.max_image_side, "height");
  Require(job->width % model.size_multiple == 0 && job->height % model.size_multiple == 0, "size multiple");
  Require(int64_t{job->width} * job->height * job->num_images <= limits.max_pixels, "max_pixels");
  Require(job->steps >= model.FindSampler(job->sampler)->min_steps && job->steps <= limits.max_steps, "steps");
  Require(job->preview_every_n_steps >= 0 && job->preview_every_n_steps <= imagegen::StepsToRun(*job), "previews");
  Require(job->output_quality >= 1 && job->output_quality <= 100, "quality");
  Require(job->num_images >= 1 && job->num_images <= limits.max_images, "num_images");
  Require(static_cast<int>(job->prompt.size()) <= 4 * limits.max_prompt_chars, "prompt length");
  Require(!job->job_id.empty() && job->job_id.size() <= 64, "job_id");
  if (job->has_init_image()) {
    Require(job->init_image_width() == job->width && job->init_image_height() == job->height, "init_image size");
    Require(request.init_image().size() <= static_cast<size_t>(limits.max_init_image_bytes), "init_image bytes");
    // What a worker does with it (StepScheduler::Start): decode, bounded to the size that the
    // header declared (PeekImageHeader, in ToJobRequest). This is where the decoders meet the
    // fuzzed bytes; an image they decode must have the header's size.
    auto image = imagegen::DecodeImage(job->init_image_encoded,
                                       imagegen::DecodeLimits{std::max(job->width, job->height),
                                                              int64_t{job->width} * job->height});
    if (image.ok()) {
      Require(image->width == job->init_image_width() && image->height == job->init_image_height(),
              "init_image decodes to another size than its header declares");
    }
  }
  return 0;
}
