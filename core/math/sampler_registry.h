// The samplers imagegen offers, in one table: each entry names a sampler as the API does, the
// diffusers scheduler class it reproduces, and the factory that makes it. ListModels, request
// validation, the `imagegen-samplers` tool and the tests all read this table, so a new sampler is
// one file (its Sampler and factory, declared in sampler_factories.h) plus one line here.
//
// No LibTorch in this header: the server and request validation include it cheaply.
#ifndef IMAGEGEN_CORE_MATH_SAMPLER_REGISTRY_H_
#define IMAGEGEN_CORE_MATH_SAMPLER_REGISTRY_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace imagegen {

class NoiseSchedule;
class Sampler;
struct SamplerOptions;

// Makes one job's sampler. Called by CreateSampler (samplers.h) after the checks every sampler
// shares (1 <= num_steps <= num_train_timesteps, eta in [0, 1]); returns INVALID_ARGUMENT naming
// the scheduler config key and value it cannot run with.
using SamplerFactory = absl::StatusOr<std::unique_ptr<Sampler>> (*)(const NoiseSchedule* schedule, int num_steps,
                                                                     const SamplerOptions& options);

struct SamplerEntry {
  const char* name;             // the API's name: "ddpm", "dpmpp_2m_karras", ...
  const char* diffusers_class;  // the diffusers scheduler it reproduces
  // True when this entry is its class with use_karras_sigmas forced on (dpmpp_2m_karras).
  bool forces_karras_sigmas;
  // UNet calls per denoising step (heun: 2, a predictor and a corrector): the work bound's unit.
  int unet_calls_per_step;
  SamplerFactory create;
};

// Every sampler, in the order ListModels shows them. Immutable; thread-safe.
const std::vector<SamplerEntry>& SamplerRegistry();
// The entry of an API name; nullptr when there is none.
const SamplerEntry* FindSampler(absl::string_view name);
// The sampler that mirrors a diffusers scheduler class run with `use_karras_sigmas`; nullptr
// when imagegen has none.
const SamplerEntry* FindSamplerForScheduler(absl::string_view diffusers_class, bool use_karras_sigmas);
// The API names, in registry order.
std::vector<std::string> SamplerNames();

// Image to image (diffusers' img2img pipelines): the inference step the reverse process starts at
// for `strength` in (0, 1], i.e. num_steps - min(int(num_steps * strength), num_steps).
// num_steps means that no step is left (int(num_steps * strength) == 0, e.g. 30 steps at strength
// 0.01): the caller must refuse that request. Outside (0, 1]: strength <= 0 or NaN gives
// num_steps, strength > 1 gives 0.
int ImageToImageStartStep(int num_steps, double strength);

}  // namespace imagegen

#endif  // IMAGEGEN_CORE_MATH_SAMPLER_REGISTRY_H_
