// Samplers: the reverse process of a diffusion model, one step at a time.
//
// A Sampler holds the state of one job's reverse process (its timesteps, its position, any
// history a multistep method keeps). It never calls the model: the engine gathers the rows of
// many jobs, makes one batched model call with a per-row timestep, and hands each job's slice of
// the output back to that job's Sampler::Step. So jobs with different samplers, step counts and
// guidance scales can share one UNet call.
//
// Each sampler reproduces the diffusers scheduler of the same name to float rounding
// (tests/data/sampler_vectors.json).
#ifndef IMAGEGEN_CORE_MATH_SAMPLERS_H_
#define IMAGEGEN_CORE_MATH_SAMPLERS_H_

#include <cstdint>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "core/math/noise_schedule.h"

namespace imagegen {

// Where a stochastic sampler's standard-normal draws come from. The engine draws each image row
// from that image's own generator (seed + index), so an image does not depend on its batch; tests
// replay recorded draws. Not thread-safe; owned by the job.
class NoiseSource {
 public:
  virtual ~NoiseSource() = default;
  // A standard-normal tensor of `shape` (the job's whole latent, all its images).
  virtual at::Tensor Draw(at::IntArrayRef shape) = 0;
};

struct SamplerOptions {
  // DDIM's eta: 0 is deterministic DDIM, 1 has DDPM's variance (Song et al. 2021, eq. 16).
  double eta = 0.0;
};

// The reverse-process state of one job. Not thread-safe: one worker steps it at a time.
class Sampler {
 public:
  virtual ~Sampler() = default;

  // The timestep of every model call, in order (diffusers' `timesteps`).
  const std::vector<int64_t>& timesteps() const { return timesteps_; }
  int num_calls() const { return static_cast<int>(timesteps_.size()); }
  // Model calls done so far.
  int call_index() const { return index_; }
  bool done() const { return index_ >= num_calls(); }
  // The timestep of the next model call. REQUIRES: !done().
  int64_t current_timestep() const { return timesteps_[index_]; }

  // What the initial Gaussian latent is multiplied by.
  virtual double init_noise_sigma() const { return 1.0; }
  // The model input for the current call (identity for DDPM and DDIM).
  virtual at::Tensor ScaleModelInput(const at::Tensor& sample) const { return sample; }
  // Consumes the model's output for the current call and returns the next sample.
  // REQUIRES: !done(); `model_output` and `sample` have the same shape.
  at::Tensor Step(const at::Tensor& model_output, const at::Tensor& sample, NoiseSource& noise) {
    at::Tensor next = StepImpl(model_output, sample, noise);
    ++index_;
    return next;
  }

 protected:
  Sampler(const NoiseSchedule* schedule, std::vector<int64_t> timesteps)
      : schedule_(schedule), timesteps_(std::move(timesteps)) {}
  virtual at::Tensor StepImpl(const at::Tensor& model_output, const at::Tensor& sample,
                              NoiseSource& noise) = 0;

  // x_0 predicted from the model output at timestep t, per prediction_type, clipped when the
  // config says so.
  at::Tensor PredictOriginal(const at::Tensor& model_output, const at::Tensor& sample,
                             int64_t t) const;

  const NoiseSchedule* schedule_;  // Not owned; outlives the sampler.
  std::vector<int64_t> timesteps_;
  int index_ = 0;
};

// The sampler names imagegen accepts, in the order ListModels shows them.
const std::vector<std::string>& SamplerNames();

// Creates the state of one job's reverse process. INVALID_ARGUMENT names an unknown sampler or a
// step count outside 1..num_train_timesteps. `schedule` must outlive the sampler.
absl::StatusOr<std::unique_ptr<Sampler>> CreateSampler(absl::string_view name,
                                                       const NoiseSchedule* schedule,
                                                       int num_steps,
                                                       const SamplerOptions& options = {});

// Classifier-free guidance (Ho & Salimans 2022): eps_uncond + s * (eps_cond - eps_uncond).
at::Tensor ApplyGuidance(const at::Tensor& eps_cond, const at::Tensor& eps_uncond, double scale);

}  // namespace imagegen

#endif  // IMAGEGEN_CORE_MATH_SAMPLERS_H_
