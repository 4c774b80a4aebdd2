#include "core/math/sampler_registry.h"

#include <algorithm>

#include "core/math/sampler_factories.h"

namespace imagegen {

const std::vector<SamplerEntry>& SamplerRegistry() {
  using namespace internal;  // the factories
  static const auto* registry = new std::vector<SamplerEntry>{
      {"ddpm", "DDPMScheduler", false, 1, &CreateDdpmSampler},
      {"ddim", "DDIMScheduler", false, 1, &CreateDdimSampler},
      {"pndm", "PNDMScheduler", false, 1, &CreatePndmSampler},
      {"euler", "EulerDiscreteScheduler", false, 1, &CreateEulerSampler},
      {"euler_a", "EulerAncestralDiscreteScheduler", false, 1, &CreateEulerAncestralSampler},
      {"heun", "HeunDiscreteScheduler", false, 2, &CreateHeunSampler},
      {"dpmpp_2m", "DPMSolverMultistepScheduler", false, 1, &CreateDpmSolverSampler},
      {"dpmpp_2m_karras", "DPMSolverMultistepScheduler", true, 1, &CreateDpmSolverKarrasSampler},
      {"unipc", "UniPCMultistepScheduler", false, 1, &CreateUniPcSampler},
  };
  return *registry;
}

const SamplerEntry* FindSampler(absl::string_view name) {
  for (const SamplerEntry& e : SamplerRegistry()) {
    if (name == e.name) return &e;
  }
  return nullptr;
}

const SamplerEntry* FindSamplerForScheduler(absl::string_view diffusers_class, bool use_karras_sigmas) {
  const SamplerEntry* found = nullptr;
  for (const SamplerEntry& e : SamplerRegistry()) {
    if (diffusers_class != e.diffusers_class) continue;
    // A class with a forced-Karras twin maps by the flag; otherwise the class's one entry.
    if (found == nullptr || e.forces_karras_sigmas == use_karras_sigmas) found = &e;
  }
  return found;
}

std::vector<std::string> SamplerNames() {
  std::vector<std::string> names;
  for (const SamplerEntry& e : SamplerRegistry()) names.push_back(e.name);
  return names;
}

int ImageToImageStartStep(int num_steps, double strength) {
  if (num_steps <= 0) return 0;
  if (!(strength > 0)) return num_steps;  // NaN too
  if (strength >= 1) return 0;
  // init_timestep = min(int(num_inference_steps * strength), num_inference_steps): the product in
  // float64 and truncated, as Python's int() (100 steps at 0.29 is 28.999999999999996: 28).
  const int init_steps = std::min(static_cast<int>(num_steps * strength), num_steps);
  return std::max(num_steps - init_steps, 0);
}

}  // namespace imagegen
