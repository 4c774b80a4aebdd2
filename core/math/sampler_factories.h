// Constructors of the samplers that live outside samplers.cc, for CreateSampler only. Each
// returns INVALID_ARGUMENT naming the config key and value it cannot run with.
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

// k_diffusion_samplers.cc
absl::StatusOr<std::unique_ptr<Sampler>> CreateEulerSampler(const NoiseSchedule* schedule, int num_steps);
absl::StatusOr<std::unique_ptr<Sampler>> CreateEulerAncestralSampler(const NoiseSchedule* schedule,
                                                                     int num_steps);
absl::StatusOr<std::unique_ptr<Sampler>> CreateHeunSampler(const NoiseSchedule* schedule, int num_steps);

// multistep_samplers.cc
absl::StatusOr<std::unique_ptr<Sampler>> CreateDpmSolverSampler(const NoiseSchedule* schedule, int num_steps,
                                                                bool force_karras_sigmas);
absl::StatusOr<std::unique_ptr<Sampler>> CreateUniPcSampler(const NoiseSchedule* schedule, int num_steps);

}  // namespace imagegen::internal

#endif  // IMAGEGEN_CORE_MATH_SAMPLER_FACTORIES_H_
