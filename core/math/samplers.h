// Samplers: the reverse process of a diffusion model, one model call at a time.
//
// A Sampler holds the state of one job's reverse process (its timesteps, its noise levels, its
// position, any history a multistep method keeps). It never calls the model: the engine gathers
// the rows of many jobs, makes one batched model call with a per-row timestep, and hands each
// job's slice of the output back to that job's Sampler::Step. So jobs with different samplers,
// step counts and guidance scales can share one UNet call.
//
// Each sampler reproduces the diffusers scheduler it is named after, in float32 with diffusers'
// order of operations (tests/data/sampler_vectors.json):
//   ddpm             DDPMScheduler                   Ho et al. 2020
//   ddim             DDIMScheduler (eta)             Song et al. 2021
//   pndm             PNDMScheduler                   Liu et al. 2022 (PLMS; PRK warm-up unless
//                                                    skip_prk_steps)
//   euler            EulerDiscreteScheduler          Karras et al. 2022, Algorithm 2 without churn
//   euler_a          EulerAncestralDiscreteScheduler k-diffusion's sample_euler_ancestral
//   heun             HeunDiscreteScheduler           Karras et al. 2022, Algorithm 1
//   dpmpp_2m         DPMSolverMultistepScheduler     Lu et al. 2022 (DPM-Solver++)
//   dpmpp_2m_karras  the same with use_karras_sigmas forced on
//   unipc            UniPCMultistepScheduler         Zhao et al. 2023
// Every sampler reads the model's one SchedulerConfig, as diffusers' `from_config` does. The
// table of names, diffusers classes and factories is SamplerRegistry (sampler_registry.h).
#ifndef IMAGEGEN_CORE_MATH_SAMPLERS_H_
#define IMAGEGEN_CORE_MATH_SAMPLERS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/math/noise_schedule.h"
#include "core/math/sampler_registry.h"

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

  // The timestep of every model call, in order (diffusers' `timesteps`). Samplers that call the
  // model twice per step (heun, and pndm's first step) repeat entries. The Euler family's
  // timesteps are fractional (float32 values). Always the whole text-to-image list, also after
  // StartAtStep.
  const std::vector<double>& timesteps() const { return timesteps_; }
  // The noise level sigma of every model call plus the final one (diffusers' `sigmas`); empty
  // for ddpm, ddim and pndm, which step on alpha-bar.
  const std::vector<float>& sigmas() const { return sigmas_; }
  // The inference steps requested (diffusers' num_inference_steps); not the model calls.
  int num_steps() const { return num_steps_; }
  // Model calls per inference step as diffusers counts them (its scheduler's `order`): 2 for
  // heun, 1 for the others (pndm's extra warm-up calls are not counted in its order).
  virtual int order() const { return 1; }
  // The length of timesteps(): the position after the last model call.
  int num_calls() const { return static_cast<int>(timesteps_.size()); }
  // The position in timesteps() of the next model call: the calls done so far plus first_call().
  int call_index() const { return index_; }
  // The position the reverse process started at: 0, or step * order() after StartAtStep(step).
  // This job makes num_calls() - first_call() model calls, call_index() - first_call() of them
  // so far.
  int first_call() const { return first_call_; }
  // Progress in denoising steps, the one unit the API reports (imagegen.proto, Progress): the
  // steps this run makes (num_steps(), less the steps StartAtStep skipped), and how many of them
  // are complete, as diffusers' pipelines advance their progress bar: after model call i (from
  // 1) when i is the last call, or when i exceeds the warm-up calls (calls - steps * order()) and
  // is a multiple of order(). Heun completes a step every second call, PNDM after its warm-up.
  int steps_to_run() const { return num_steps_ - start_step_; }
  int steps_done() const;
  bool done() const { return index_ >= num_calls(); }
  // The timestep to pass to the model for the next call. REQUIRES: !done().
  double current_timestep() const { return timesteps_[index_]; }

  // Image to image (diffusers' img2img pipelines): the inference step the reverse process starts
  // at for `strength` in (0, 1], i.e. num_steps - min(int(num_steps * strength), num_steps).
  // num_steps means that no step is left (int(num_steps * strength) == 0, e.g. 30 steps at
  // strength 0.01): the caller must refuse that request, since StartAtStep(num_steps) is not
  // allowed. Outside (0, 1]: strength <= 0 or NaN gives num_steps, strength > 1 gives 0.
  static int ImageToImageStartStep(int num_steps, double strength) {
    return imagegen::ImageToImageStartStep(num_steps, strength);
  }
  // Positions a fresh sampler at inference step `step` (0 <= step < num_steps), skipping the
  // model calls of the earlier steps, as diffusers does with timesteps[step * order:] and
  // set_begin_index. REQUIRES: call_index() == 0.
  // Afterwards call_index() == first_call() == step * order(), timesteps() is unchanged, the
  // remaining calls are timesteps()[step * order():], and the sampler steps as diffusers' does
  // from there: no multistep history (DPM-Solver and UniPC warm up with lower orders again, UniPC
  // has no corrector on its first call, Heun starts with its first-order half at position 2k,
  // the second copy of its step-k timestep). PNDM has no set_begin_index in diffusers: its call
  // counter restarts at 0 on timesteps()[step:], and that is reproduced as is. With
  // skip_prk_steps and step >= 2 its two-call warm-up step goes from timesteps()[step] to
  // timesteps()[step + 1] and the next call is at timesteps()[step + 2], so one noise level is
  // skipped (diffusers' img2img with PNDMScheduler does the same); without skip_prk_steps its
  // first 12 calls are Runge-Kutta calls that start from the timesteps of a full run's first
  // three steps. Throws c10::Error (TORCH_CHECK) when a requirement does not hold.
  virtual void StartAtStep(int step);
  // The forward process q(x_t | x_0) to the timestep of the next model call: diffusers' add_noise
  // of this scheduler (alpha-bar based for ddpm/ddim/pndm: sqrt(abar) x0 + sqrt(1-abar) noise;
  // sigma based for the Euler family, DPM-Solver++ and UniPC as diffusers defines each).
  // REQUIRES: !done().
  // Euler family: x0 + sigma noise, which is already in its scaled coordinates: the result is
  // the sample itself, never multiplied by init_noise_sigma(). DPM-Solver and UniPC:
  // alpha x0 + sigma_t noise with alpha = 1 / sqrt(sigma^2 + 1), sigma_t = sigma alpha.
  // The coefficients are float32 values converted to x0's dtype; x0 and noise are
  // [images, ...] tensors of one shape on any device.
  virtual at::Tensor AddNoise(const at::Tensor& x0, const at::Tensor& noise) const;

  // What the initial standard-normal latent is multiplied by.
  virtual double init_noise_sigma() const { return 1.0; }
  // The model input for the next call: the sample divided by sqrt(sigma^2 + 1) for the Euler
  // family, the sample itself for the others. REQUIRES: !done().
  virtual at::Tensor ScaleModelInput(const at::Tensor& sample) const { return sample; }
  // Consumes the model's output for the current call and returns the next sample.
  // REQUIRES: !done(); `model_output` and `sample` have the same shape.
  at::Tensor Step(const at::Tensor& model_output, const at::Tensor& sample, NoiseSource& noise) {
    at::Tensor next = StepImpl(model_output, sample, noise);
    ++index_;
    return next;
  }

 protected:
  Sampler(const NoiseSchedule* schedule, int num_steps, std::vector<double> timesteps,
          std::vector<float> sigmas = {})
      : schedule_(schedule), num_steps_(num_steps), timesteps_(std::move(timesteps)), sigmas_(std::move(sigmas)) {}
  virtual at::Tensor StepImpl(const at::Tensor& model_output, const at::Tensor& sample,
                              NoiseSource& noise) = 0;

  // x_0 predicted from the model output at timestep t, per prediction_type, clipped when the
  // config says so (DDPM/DDIM's default: clip).
  at::Tensor PredictOriginal(const at::Tensor& model_output, const at::Tensor& sample,
                             int64_t t) const;

  const NoiseSchedule* schedule_;  // Not owned; outlives the sampler.
  int num_steps_;
  std::vector<double> timesteps_;
  std::vector<float> sigmas_;
  int index_ = 0;       // position in timesteps_ of the next model call
  int first_call_ = 0;  // where this run started (StartAtStep)
  int start_step_ = 0;  // the inference step it started at (StartAtStep)
};

// Creates the state of one job's reverse process with the registry's factory of `name`
// (sampler_registry.h). INVALID_ARGUMENT names an unknown sampler, a
// step count outside 1..num_train_timesteps, or a setting of the model's scheduler config that
// this sampler does not support (key and value). `schedule` must outlive the sampler.
absl::StatusOr<std::unique_ptr<Sampler>> CreateSampler(absl::string_view name,
                                                       const NoiseSchedule* schedule,
                                                       int num_steps,
                                                       const SamplerOptions& options = {});

// Classifier-free guidance (Ho & Salimans 2022): eps_uncond + s * (eps_cond - eps_uncond).
at::Tensor ApplyGuidance(const at::Tensor& eps_cond, const at::Tensor& eps_uncond, double scale);

}  // namespace imagegen

#endif  // IMAGEGEN_CORE_MATH_SAMPLERS_H_
