// The noise schedule of a diffusion model and its closed-form forward process.
//
// SchedulerConfig holds the keys of a diffusers `scheduler_config.json` that the samplers use;
// NoiseSchedule turns them into betas and alpha-bar (alphas_cumprod), computed in float32 the way
// diffusers does so that sampler trajectories match its reference to float rounding.
#ifndef IMAGEGEN_CORE_MATH_NOISE_SCHEDULE_H_
#define IMAGEGEN_CORE_MATH_NOISE_SCHEDULE_H_

#include <cstdint>
#include <optional>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"

namespace imagegen {

enum class BetaSchedule { kLinear, kScaledLinear };
enum class PredictionType { kEpsilon, kVPrediction, kSample };
enum class TimestepSpacing { kLeading, kTrailing, kLinspace };

// The subset of diffusers' scheduler configuration imagegen implements. Absent keys take
// diffusers' defaults for DDPMScheduler/DDIMScheduler. A value imagegen does not implement is an
// error that names the key, never a silent fallback.
struct SchedulerConfig {
  int num_train_timesteps = 1000;
  double beta_start = 0.0001;
  double beta_end = 0.02;
  BetaSchedule beta_schedule = BetaSchedule::kLinear;
  PredictionType prediction_type = PredictionType::kEpsilon;
  bool clip_sample = true;
  double clip_sample_range = 1.0;
  bool set_alpha_to_one = true;
  int steps_offset = 0;
  TimestepSpacing timestep_spacing = TimestepSpacing::kLeading;

  // Parses the JSON text of a scheduler_config.json. `source` (a file name) prefixes every error.
  static absl::StatusOr<SchedulerConfig> FromJson(absl::string_view json_text,
                                                  absl::string_view source);
};

// Betas and alpha-bar for t = 0 .. num_train_timesteps - 1. Immutable, thread-safe.
class NoiseSchedule {
 public:
  explicit NoiseSchedule(const SchedulerConfig& config);

  const SchedulerConfig& config() const { return config_; }
  int num_train_timesteps() const { return config_.num_train_timesteps; }
  float beta(int t) const { return betas_[t]; }
  // alpha-bar_t = prod_{s<=t} (1 - beta_s) (Ho et al. 2020, notation above eq. 4).
  float alpha_bar(int t) const { return alphas_cumprod_[t]; }

  // The inference timesteps diffusers' DDPM/DDIM `set_timesteps` produce for `num_steps` steps
  // under the configured timestep_spacing and steps_offset, from noisiest to cleanest.
  // REQUIRES: 1 <= num_steps <= num_train_timesteps.
  std::vector<int64_t> InferenceTimesteps(int num_steps) const;

  // The closed-form forward process q(x_t | x_0) (Ho et al. 2020, eq. 4):
  // x_t = sqrt(alpha-bar_t) x_0 + sqrt(1 - alpha-bar_t) noise. `t` holds one timestep per row.
  at::Tensor AddNoise(const at::Tensor& x0, const at::Tensor& noise, const at::Tensor& t) const;

 private:
  SchedulerConfig config_;
  std::vector<float> betas_;
  std::vector<float> alphas_cumprod_;
};

}  // namespace imagegen

#endif  // IMAGEGEN_CORE_MATH_NOISE_SCHEDULE_H_
