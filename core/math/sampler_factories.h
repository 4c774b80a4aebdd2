// The samplers' factories, for the registry (sampler_registry.cc) only. Each returns
// INVALID_ARGUMENT naming the config key and value it cannot run with.
#ifndef IMAGEGEN_CORE_MATH_SAMPLER_FACTORIES_H_
#define IMAGEGEN_CORE_MATH_SAMPLER_FACTORIES_H_

#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/math/noise_schedule.h"
#include "core/math/samplers.h"

namespace imagegen::internal {

// The error for a scheduler config value a sampler cannot run with, e.g.
// `sampler "pndm" does not support scheduler config "prediction_type": "sample"`.
inline absl::Status UnsupportedSetting(absl::string_view sampler, absl::string_view key,
                                       absl::string_view value, absl::string_view why = "") {
  return absl::InvalidArgumentError(absl::StrCat("sampler \"", sampler,
                                                 "\" does not support scheduler config \"", key,
                                                 "\": ", value, why.empty() ? "" : " (", why,
                                                 why.empty() ? "" : ")"));
}

// The factories of SamplerRegistry (sampler_registry.cc), one per entry; see SamplerFactory.
// samplers.cc
absl::StatusOr<std::unique_ptr<Sampler>> CreateDdpmSampler(const NoiseSchedule* schedule, int num_steps,
                                                           const SamplerOptions& options);
absl::StatusOr<std::unique_ptr<Sampler>> CreateDdimSampler(const NoiseSchedule* schedule, int num_steps,
                                                           const SamplerOptions& options);
absl::StatusOr<std::unique_ptr<Sampler>> CreatePndmSampler(const NoiseSchedule* schedule, int num_steps,
                                                           const SamplerOptions& options);
// k_diffusion_samplers.cc
absl::StatusOr<std::unique_ptr<Sampler>> CreateEulerSampler(const NoiseSchedule* schedule, int num_steps,
                                                            const SamplerOptions& options);
absl::StatusOr<std::unique_ptr<Sampler>> CreateEulerAncestralSampler(const NoiseSchedule* schedule, int num_steps,
                                                                     const SamplerOptions& options);
absl::StatusOr<std::unique_ptr<Sampler>> CreateHeunSampler(const NoiseSchedule* schedule, int num_steps,
                                                           const SamplerOptions& options);
// multistep_samplers.cc
absl::StatusOr<std::unique_ptr<Sampler>> CreateDpmSolverSampler(const NoiseSchedule* schedule, int num_steps,
                                                                const SamplerOptions& options);
absl::StatusOr<std::unique_ptr<Sampler>> CreateDpmSolverKarrasSampler(const NoiseSchedule* schedule, int num_steps,
                                                                      const SamplerOptions& options);
absl::StatusOr<std::unique_ptr<Sampler>> CreateUniPcSampler(const NoiseSchedule* schedule, int num_steps,
                                                            const SamplerOptions& options);

}  // namespace imagegen::internal

#endif  // IMAGEGEN_CORE_MATH_SAMPLER_FACTORIES_H_
