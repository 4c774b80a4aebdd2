// The samplers of the k-diffusion family (Karras et al. 2022): they integrate the probability
// flow ODE dx/dsigma = (x - D(x; sigma)) / sigma over noise levels sigma, with the model input
// scaled by 1 / sqrt(sigma^2 + 1). As diffusers' EulerDiscreteScheduler,
// EulerAncestralDiscreteScheduler and HeunDiscreteScheduler: float32 sigmas interpolated in
// float64 from the training schedule, float32 coefficients, diffusers' order of operations.
#include <algorithm>
#include <cmath>

#include "core/math/sampler_factories.h"
#include "core/math/sigmas.h"

namespace imagegen::internal {
namespace {

// The fractional timesteps and float64 noise levels the Euler family's set_timesteps produce,
// noisiest first, before the final sigma 0 is appended.
struct SigmaGrid {
  std::vector<double> timesteps;  // float32 values
  std::vector<double> sigmas;     // float64, one per timestep
};

SigmaGrid MakeSigmaGrid(const NoiseSchedule* schedule, int num_steps, bool karras,
                        std::optional<double> sigma_min, std::optional<double> sigma_max) {
  const SchedulerConfig& c = schedule->config();
  const int n = c.num_train_timesteps;
  SigmaGrid g;
  switch (c.timestep_spacing.value_or(TimestepSpacing::kLinspace)) {
    case TimestepSpacing::kLinspace: {
      // np.linspace(0, N - 1, steps, dtype=np.float32)[::-1]
      std::vector<double> grid = Linspace(0, n - 1, num_steps);
      for (auto it = grid.rbegin(); it != grid.rend(); ++it) g.timesteps.push_back(static_cast<float>(*it));
      break;
    }
    case TimestepSpacing::kLeading: {
      // (np.arange(0, steps) * (N // steps)).round()[::-1].astype(np.float32) + steps_offset
      const int64_t ratio = n / num_steps;
      for (int i = num_steps - 1; i >= 0; --i) {
        g.timesteps.push_back(static_cast<float>(static_cast<float>(i * ratio) + static_cast<float>(c.steps_offset)));
      }
      break;
    }
    case TimestepSpacing::kTrailing: {
      // np.arange(N, 0, -N / steps).round().astype(np.float32) - 1
      for (double v : Arange(n, 0, -static_cast<double>(n) / num_steps)) {
        g.timesteps.push_back(static_cast<float>(static_cast<float>(RoundHalfEven(v)) - 1.0f));
      }
      break;
    }
  }
  g.sigmas = InterpolateAtTimesteps(g.timesteps, schedule->sigmas());
  if (karras) {
    g.sigmas = KarrasSigmas(sigma_min.value_or(g.sigmas.back()), sigma_max.value_or(g.sigmas.front()),
                            num_steps);
    g.timesteps.clear();
    for (double s : g.sigmas) {
      g.timesteps.push_back(static_cast<float>(SigmaToTimestep(s, schedule->log_sigmas())));
    }
  }
  return g;
}

std::vector<float> ToFloat(const std::vector<double>& v) { return {v.begin(), v.end()}; }

// Common to the three: the scaled model input and the initial noise level.
class KDiffusionSampler : public Sampler {
 public:
  KDiffusionSampler(const NoiseSchedule* schedule, int num_steps, std::vector<double> timesteps,
                    std::vector<float> sigmas)
      : Sampler(schedule, num_steps, std::move(timesteps), std::move(sigmas)) {}

  // diffusers' init_noise_sigma: the largest sigma, or sqrt(sigma_max^2 + 1) under leading
  // spacing (whose first timestep is not the noisiest).
  double init_noise_sigma() const override {
    const float max_sigma = *std::max_element(sigmas_.begin(), sigmas_.end());
    const TimestepSpacing spacing = schedule_->config().timestep_spacing.value_or(TimestepSpacing::kLinspace);
    if (spacing == TimestepSpacing::kLeading) return std::sqrt(max_sigma * max_sigma + 1.0f);
    return max_sigma;
  }

  // x / sqrt(sigma^2 + 1): the variance-preserving input the model was trained on.
  at::Tensor ScaleModelInput(const at::Tensor& sample) const override {
    const float sigma = sigmas_[index_];
    return sample / std::sqrt(sigma * sigma + 1.0f);
  }

  // diffusers' add_noise with begin_index (or step_index) set: x0 + noise * sigma of the next call,
  // sigma in x0's dtype.
  at::Tensor AddNoise(const at::Tensor& x0, const at::Tensor& noise) const override {
    TORCH_CHECK(!done(), "Sampler::AddNoise after the last model call");
    const at::Tensor sigma = at::scalar_tensor(sigmas_[index_], at::TensorOptions().dtype(x0.scalar_type()));
    return x0 + noise * sigma;
  }

 protected:
  // The denoised estimate D(x; sigma) from the model output at noise level `sigma`.
  at::Tensor Denoised(const at::Tensor& model_output, const at::Tensor& sample, float sigma) const {
    switch (schedule_->config().prediction_type) {
      case PredictionType::kEpsilon:
        return sample - sigma * model_output;
      case PredictionType::kVPrediction:  // c_out * output + c_skip * input
        return model_output * (-sigma / std::sqrt(sigma * sigma + 1.0f)) + (sample / (sigma * sigma + 1.0f));
      case PredictionType::kSample:
        break;
    }
    return model_output;
  }
};

// Euler's method on the ODE (Karras et al. 2022, Algorithm 2 with S_churn = 0).
class EulerSampler : public KDiffusionSampler {
 public:
  using KDiffusionSampler::KDiffusionSampler;

 protected:
  at::Tensor StepImpl(const at::Tensor& model_output, const at::Tensor& sample, NoiseSource&) override {
    const float sigma_hat = sigmas_[index_];  // sigma * (gamma + 1) with gamma = 0
    at::Tensor x0 = Denoised(model_output, sample, sigma_hat);
    at::Tensor derivative = (sample - x0) / sigma_hat;
    const float dt = sigmas_[index_ + 1] - sigma_hat;
    return sample + derivative * dt;
  }
};

// Ancestral Euler (k-diffusion's sample_euler_ancestral, eta = 1): an Euler step down to
// sigma_down, then fresh noise of standard deviation sigma_up, with
// sigma_up^2 = sigma_to^2 (sigma_from^2 - sigma_to^2) / sigma_from^2 and
// sigma_down^2 = sigma_to^2 - sigma_up^2. One draw per step, the last one included.
class EulerAncestralSampler : public KDiffusionSampler {
 public:
  using KDiffusionSampler::KDiffusionSampler;

 protected:
  at::Tensor StepImpl(const at::Tensor& model_output, const at::Tensor& sample, NoiseSource& noise) override {
    const float sigma = sigmas_[index_];
    at::Tensor x0 = Denoised(model_output, sample, sigma);
    const float sigma_from = sigma;
    const float sigma_to = sigmas_[index_ + 1];
    const float sigma_up =
        std::sqrt(sigma_to * sigma_to * (sigma_from * sigma_from - sigma_to * sigma_to) / (sigma_from * sigma_from));
    // sigma_to^2 - sigma_up^2 = sigma_to^4 / sigma_from^2 can round below zero when sigma_from is
    // huge (the cosine schedule's last timestep); diffusers then takes sqrt of a negative (NaN).
    const float sigma_down = std::sqrt(std::max(sigma_to * sigma_to - sigma_up * sigma_up, 0.0f));
    at::Tensor derivative = (sample - x0) / sigma;
    const float dt = sigma_down - sigma;
    at::Tensor prev = sample + derivative * dt;
    return prev + noise.Draw(model_output.sizes()) * sigma_up;
  }
};

// Heun's second-order method (Karras et al. 2022, Algorithm 1 with S_churn = 0): an Euler
// step to sigma_next, a second model call there, and the average of the two slopes from the
// first point. Two calls per step except the last, which is an Euler step to sigma = 0.
// sigmas_ and timesteps_ hold one entry per call: s0, s1, s1, s2, s2, ..., plus the final 0.
// After StartAtStep(k) the first call is at position 2k, the second copy of s_k (diffusers'
// begin_index = k * order): a first-order call from s_k to s_{k+1}, so the pairing shifts by one
// entry and every step still goes s_k -> s_{k+1}.
class HeunSampler : public KDiffusionSampler {
 public:
  using KDiffusionSampler::KDiffusionSampler;
  int order() const override { return 2; }  // diffusers' HeunDiscreteScheduler.order

 protected:
  at::Tensor StepImpl(const at::Tensor& model_output, const at::Tensor& sample, NoiseSource&) override {
    const bool first_order = !dt_.has_value();
    const float sigma = first_order ? sigmas_[index_] : sigmas_[index_ - 1];
    const float sigma_next = first_order ? sigmas_[index_ + 1] : sigmas_[index_];
    const float sigma_hat = sigma;  // gamma = 0
    at::Tensor x0 = Denoised(model_output, sample, first_order ? sigma_hat : sigma_next);
    if (schedule_->config().clip_sample.value_or(false)) {
      const double r = schedule_->config().clip_sample_range;
      x0 = x0.clamp(-r, r);
    }
    if (first_order) {
      at::Tensor derivative = (sample - x0) / sigma_hat;
      const float dt = sigma_next - sigma_hat;
      prev_derivative_ = derivative;
      dt_ = dt;
      first_sample_ = sample;
      return sample + derivative * dt;
    }
    at::Tensor derivative = (sample - x0) / sigma_next;
    derivative = (prev_derivative_ + derivative) / 2;
    const float dt = *dt_;
    at::Tensor start = first_sample_;
    prev_derivative_ = at::Tensor();
    dt_.reset();
    first_sample_ = at::Tensor();
    return start + derivative * dt;
  }

 private:
  at::Tensor prev_derivative_;
  std::optional<float> dt_;  // set between the two calls of a step
  at::Tensor first_sample_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Sampler>> CreateEulerSampler(const NoiseSchedule* schedule, int num_steps,
                                                            const SamplerOptions&) {
  const SchedulerConfig& c = schedule->config();
  SigmaGrid g = MakeSigmaGrid(schedule, num_steps, c.use_karras_sigmas, c.sigma_min, c.sigma_max);
  std::vector<float> sigmas = ToFloat(g.sigmas);
  sigmas.push_back(0.0f);
  return std::unique_ptr<Sampler>(new EulerSampler(schedule, num_steps, std::move(g.timesteps), std::move(sigmas)));
}

absl::StatusOr<std::unique_ptr<Sampler>> CreateEulerAncestralSampler(const NoiseSchedule* schedule, int num_steps,
                                                                     const SamplerOptions&) {
  // diffusers' EulerAncestralDiscreteScheduler has no Karras option: use_karras_sigmas is not
  // one of its keys and is ignored, as from_config ignores it.
  if (schedule->config().prediction_type == PredictionType::kSample) {
    return UnsupportedSetting("euler_a", "prediction_type", "\"sample\"",
                              "diffusers' Euler ancestral implements epsilon and v_prediction");
  }
  SigmaGrid g = MakeSigmaGrid(schedule, num_steps, /*karras=*/false, std::nullopt, std::nullopt);
  std::vector<float> sigmas = ToFloat(g.sigmas);
  sigmas.push_back(0.0f);
  return std::unique_ptr<Sampler>(new EulerAncestralSampler(schedule, num_steps, std::move(g.timesteps), std::move(sigmas)));
}

absl::StatusOr<std::unique_ptr<Sampler>> CreateHeunSampler(const NoiseSchedule* schedule, int num_steps,
                                                           const SamplerOptions&) {
  // Heun's config has no sigma_min/sigma_max keys: Karras endpoints come from the schedule.
  SigmaGrid g = MakeSigmaGrid(schedule, num_steps, schedule->config().use_karras_sigmas, std::nullopt,
                              std::nullopt);
  // cat([s[:1], s[1:].repeat_interleave(2)]) for the timesteps and
  // cat([s[:1], s[1:-1].repeat_interleave(2), s[-1:]]) for the sigmas with 0 appended.
  std::vector<double> timesteps{g.timesteps.front()};
  std::vector<float> sigmas{static_cast<float>(g.sigmas.front())};
  for (size_t i = 1; i < g.timesteps.size(); ++i) {
    timesteps.insert(timesteps.end(), {g.timesteps[i], g.timesteps[i]});
    const float s = static_cast<float>(g.sigmas[i]);
    sigmas.insert(sigmas.end(), {s, s});
  }
  sigmas.push_back(0.0f);
  return std::unique_ptr<Sampler>(new HeunSampler(schedule, num_steps, std::move(timesteps), std::move(sigmas)));
}

}  // namespace imagegen::internal
