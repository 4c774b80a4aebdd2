// The noise schedule of a diffusion model and its closed-form forward process.
//
// SchedulerConfig holds the keys of a diffusers `scheduler_config.json` that imagegen's samplers
// use; NoiseSchedule turns them into betas, alpha-bar (alphas_cumprod) and the noise levels sigma,
// computed in float32 the way diffusers does so that sampler trajectories match its reference to
// float rounding.
//
// A model bundle has one scheduler_config.json and the request picks the sampler, as diffusers'
// `SomeScheduler.from_config(config)` swaps schedulers: a key a sampler does not know is ignored by
// that sampler, and a key the file leaves out takes the default of the sampler that runs (those
// defaults differ between diffusers' scheduler classes, hence the std::optional fields below).
#ifndef IMAGEGEN_CORE_MATH_NOISE_SCHEDULE_H_
#define IMAGEGEN_CORE_MATH_NOISE_SCHEDULE_H_

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace imagegen {

enum class BetaSchedule { kLinear, kScaledLinear, kSquaredCosCapV2 };
enum class PredictionType { kEpsilon, kVPrediction, kSample };
enum class TimestepSpacing { kLeading, kTrailing, kLinspace };
// DPM-Solver's `algorithm_type`: the data-prediction (++) or the noise-prediction formulation.
enum class DpmAlgorithm { kDpmSolverPlusPlus, kDpmSolver };
// `solver_type` as written; DPM-Solver reads midpoint/heun (others mean midpoint), UniPC reads
// bh1/bh2 (others mean bh2), as diffusers maps them.
enum class SolverType { kMidpoint, kHeun, kLogrho, kBh1, kBh2 };
// The noise level after the last step of DPM-Solver and UniPC: 0, or the last training sigma.
enum class FinalSigmas { kZero, kSigmaMin };

// The subset of diffusers' scheduler configuration imagegen implements. A key absent from the
// file takes diffusers' default (for the keys in std::optional, the default of the sampler that
// runs). A value imagegen does not implement is an error that names the key and the value, never a
// silent fallback; a key imagegen does not know at all (such as "_class_name") is ignored.
struct SchedulerConfig {
  // The training noise schedule, shared by every sampler.
  int num_train_timesteps = 1000;
  double beta_start = 0.0001;
  double beta_end = 0.02;
  BetaSchedule beta_schedule = BetaSchedule::kLinear;
  std::vector<double> trained_betas;  // Non-empty: these betas, in place of beta_schedule.
  PredictionType prediction_type = PredictionType::kEpsilon;
  int steps_offset = 0;

  // Keys whose diffusers default depends on the scheduler class; empty means that default.
  std::optional<TimestepSpacing> timestep_spacing;  // ddpm, ddim, pndm: leading; others: linspace
  std::optional<bool> clip_sample;                  // ddpm, ddim: true; heun: false
  std::optional<bool> set_alpha_to_one;             // ddim: true; pndm: false
  std::optional<SolverType> solver_type;            // dpmpp_2m: midpoint; unipc: bh2
  double clip_sample_range = 1.0;

  // Karras et al. 2022 noise levels for euler, heun, dpmpp_2m and unipc (diffusers' Euler
  // ancestral has no such option and ignores the key); dpmpp_2m_karras uses them regardless.
  bool use_karras_sigmas = false;
  std::optional<double> sigma_min;      // euler only: Karras endpoints in place of the schedule's
  std::optional<double> sigma_max;
  // PNDM.
  bool skip_prk_steps = false;          // false: 3 pseudo Runge-Kutta steps (12 calls) first
  // DPM-Solver and UniPC.
  DpmAlgorithm algorithm_type = DpmAlgorithm::kDpmSolverPlusPlus;
  int solver_order = 2;
  bool lower_order_final = true;
  bool euler_at_final = false;          // DPM-Solver
  FinalSigmas final_sigmas_type = FinalSigmas::kZero;
  double lambda_min_clipped = -std::numeric_limits<double>::infinity();  // DPM-Solver
  bool predict_x0 = true;               // UniPC
  std::vector<int> disable_corrector;   // UniPC: steps whose corrector is skipped

  // Parses the JSON text of a scheduler_config.json (Python's -Infinity, Infinity and NaN
  // accepted, as diffusers writes them). `source` (a file name) prefixes every error.
  static absl::StatusOr<SchedulerConfig> FromJson(absl::string_view json_text,
                                                  absl::string_view source);
};

// Betas, alpha-bar and sigma for t = 0 .. num_train_timesteps - 1. Immutable, thread-safe.
class NoiseSchedule {
 public:
  explicit NoiseSchedule(const SchedulerConfig& config);

  const SchedulerConfig& config() const { return config_; }
  int num_train_timesteps() const { return config_.num_train_timesteps; }
  float beta(int t) const { return betas_[t]; }
  // alpha-bar_t = prod_{s<=t} (1 - beta_s) (Ho et al. 2020, notation above eq. 4).
  float alpha_bar(int t) const { return alphas_cumprod_[t]; }
  // sigma_t = sqrt((1 - alpha-bar_t) / alpha-bar_t) in float32, and its natural log as NumPy's
  // float32 log computes it (NumpyLogF32 in sigmas.h).
  const std::vector<float>& sigmas() const { return sigmas_; }
  const std::vector<float>& log_sigmas() const { return log_sigmas_; }

  // The integer timesteps diffusers' DDPM/DDIM `set_timesteps` produce for `num_steps` steps under
  // `spacing` and steps_offset, from noisiest to cleanest. REQUIRES: 1 <= num_steps <= N.
  std::vector<int64_t> InferenceTimesteps(int num_steps, TimestepSpacing spacing) const;
  // The same with the configured spacing, leading when the file names none (DDPM's default).
  std::vector<int64_t> InferenceTimesteps(int num_steps) const {
    return InferenceTimesteps(num_steps, config_.timestep_spacing.value_or(TimestepSpacing::kLeading));
  }

  // The closed-form forward process q(x_t | x_0) (Ho et al. 2020, eq. 4):
  // x_t = sqrt(alpha-bar_t) x_0 + sqrt(1 - alpha-bar_t) noise. `t` holds one timestep per row.
  at::Tensor AddNoise(const at::Tensor& x0, const at::Tensor& noise, const at::Tensor& t) const;

 private:
  SchedulerConfig config_;
  std::vector<float> betas_;
  std::vector<float> alphas_cumprod_;
  std::vector<float> sigmas_;
  std::vector<float> log_sigmas_;
};

}  // namespace imagegen

#endif  // IMAGEGEN_CORE_MATH_NOISE_SCHEDULE_H_
