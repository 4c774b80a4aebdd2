#include "core/math/samplers.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace imagegen {

at::Tensor Sampler::PredictOriginal(const at::Tensor& model_output, const at::Tensor& sample,
                                    int64_t t) const {
  const float alpha_prod_t = schedule_->alpha_bar(static_cast<int>(t));
  const float beta_prod_t = 1.0f - alpha_prod_t;
  at::Tensor x0;
  switch (schedule_->config().prediction_type) {
    case PredictionType::kEpsilon:  // Ho et al. 2020, eq. 15
      x0 = (sample - std::sqrt(beta_prod_t) * model_output) / std::sqrt(alpha_prod_t);
      break;
    case PredictionType::kVPrediction:  // Salimans & Ho 2022, section 4
      x0 = std::sqrt(alpha_prod_t) * sample - std::sqrt(beta_prod_t) * model_output;
      break;
    case PredictionType::kSample:
      x0 = model_output;
      break;
  }
  if (schedule_->config().clip_sample) {
    const double r = schedule_->config().clip_sample_range;
    x0 = x0.clamp(-r, r);
  }
  return x0;
}

namespace {

// DDPM ancestral sampling (Ho et al. 2020): x_{t-1} drawn from the posterior
// q(x_{t-1} | x_t, x_0) with x_0 predicted by the model, eq. 6-7, and the posterior variance
// beta-tilde; with epsilon prediction this is eq. 11 plus sigma_t z. As diffusers' DDPMScheduler
// (variance_type "fixed_small"), skipping timesteps when fewer steps than training timesteps run.
class DdpmSampler : public Sampler {
 public:
  DdpmSampler(const NoiseSchedule* schedule, std::vector<int64_t> timesteps)
      : Sampler(schedule, std::move(timesteps)) {}

 protected:
  at::Tensor StepImpl(const at::Tensor& model_output, const at::Tensor& sample,
                      NoiseSource& noise) override {
    const int64_t t = current_timestep();
    const int64_t prev_t = index_ + 1 < num_calls() ? timesteps_[index_ + 1] : -1;
    const float alpha_prod_t = schedule_->alpha_bar(static_cast<int>(t));
    const float alpha_prod_t_prev = prev_t >= 0 ? schedule_->alpha_bar(static_cast<int>(prev_t)) : 1.0f;
    const float beta_prod_t = 1.0f - alpha_prod_t;
    const float beta_prod_t_prev = 1.0f - alpha_prod_t_prev;
    const float current_alpha_t = alpha_prod_t / alpha_prod_t_prev;
    const float current_beta_t = 1.0f - current_alpha_t;

    at::Tensor x0 = PredictOriginal(model_output, sample, t);
    // Posterior mean mu-tilde (Ho et al. 2020, eq. 7).
    const float x0_coeff = (std::sqrt(alpha_prod_t_prev) * current_beta_t) / beta_prod_t;
    const float xt_coeff = std::sqrt(current_alpha_t) * beta_prod_t_prev / beta_prod_t;
    at::Tensor prev = x0_coeff * x0 + xt_coeff * sample;
    if (t > 0) {
      at::Tensor z = noise.Draw(model_output.sizes());
      // Posterior variance beta-tilde_t = (1 - abar_{t-1}) / (1 - abar_t) * beta_t (eq. 7).
      const float variance =
          std::max((1.0f - alpha_prod_t_prev) / (1.0f - alpha_prod_t) * current_beta_t, 1e-20f);
      prev = prev + std::sqrt(variance) * z;
    }
    return prev;
  }
};

// DDIM (Song et al. 2021, eq. 12): deterministic for eta = 0, with eta * sigma_t of fresh noise
// otherwise. As diffusers' DDIMScheduler.
class DdimSampler : public Sampler {
 public:
  DdimSampler(const NoiseSchedule* schedule, std::vector<int64_t> timesteps, double eta, int num_steps)
      : Sampler(schedule, std::move(timesteps)),
        eta_(eta),
        stride_(schedule->num_train_timesteps() / num_steps),
        final_alpha_bar_(schedule->config().set_alpha_to_one ? 1.0f : schedule->alpha_bar(0)) {}

 protected:
  at::Tensor StepImpl(const at::Tensor& model_output, const at::Tensor& sample,
                      NoiseSource& noise) override {
    const int64_t t = current_timestep();
    const int64_t prev_t = t - stride_;
    const float alpha_prod_t = schedule_->alpha_bar(static_cast<int>(t));
    const float alpha_prod_t_prev =
        prev_t >= 0 ? schedule_->alpha_bar(static_cast<int>(prev_t)) : final_alpha_bar_;
    const float beta_prod_t = 1.0f - alpha_prod_t;
    const float beta_prod_t_prev = 1.0f - alpha_prod_t_prev;

    at::Tensor x0 = PredictOriginal(model_output, sample, t);
    at::Tensor eps;
    switch (schedule_->config().prediction_type) {
      case PredictionType::kEpsilon:
        eps = model_output;
        break;
      case PredictionType::kVPrediction:
        eps = std::sqrt(alpha_prod_t) * model_output + std::sqrt(beta_prod_t) * sample;
        break;
      case PredictionType::kSample:
        eps = (sample - std::sqrt(alpha_prod_t) * x0) / std::sqrt(beta_prod_t);
        break;
    }
    // sigma_t of Song et al. eq. 16, scaled by eta.
    const float variance =
        (beta_prod_t_prev / beta_prod_t) * (1.0f - alpha_prod_t / alpha_prod_t_prev);
    const float std_dev_t = static_cast<float>(eta_) * std::sqrt(variance);
    at::Tensor direction = std::sqrt(1.0f - alpha_prod_t_prev - std_dev_t * std_dev_t) * eps;
    at::Tensor prev = std::sqrt(alpha_prod_t_prev) * x0 + direction;
    if (eta_ > 0) prev = prev + std_dev_t * noise.Draw(model_output.sizes());
    return prev;
  }

 private:
  double eta_;
  int64_t stride_;
  float final_alpha_bar_;
};

}  // namespace

const std::vector<std::string>& SamplerNames() {
  static const auto* names = new std::vector<std::string>{"ddpm", "ddim"};
  return *names;
}

absl::StatusOr<std::unique_ptr<Sampler>> CreateSampler(absl::string_view name,
                                                       const NoiseSchedule* schedule,
                                                       int num_steps,
                                                       const SamplerOptions& options) {
  if (num_steps < 1 || num_steps > schedule->num_train_timesteps()) {
    return absl::InvalidArgumentError(absl::StrCat("steps is ", num_steps, "; allowed 1..",
                                                   schedule->num_train_timesteps()));
  }
  if (!(options.eta >= 0 && options.eta <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("eta is ", options.eta, "; allowed [0, 1]"));
  }
  std::vector<int64_t> ts = schedule->InferenceTimesteps(num_steps);
  if (name == "ddpm") return std::make_unique<DdpmSampler>(schedule, std::move(ts));
  if (name == "ddim") {
    return std::make_unique<DdimSampler>(schedule, std::move(ts), options.eta, num_steps);
  }
  return absl::InvalidArgumentError(absl::StrCat("sampler is \"", name, "\"; supported: ",
                                                 absl::StrJoin(SamplerNames(), ", ")));
}

at::Tensor ApplyGuidance(const at::Tensor& eps_cond, const at::Tensor& eps_uncond, double scale) {
  return eps_uncond + scale * (eps_cond - eps_uncond);
}

}  // namespace imagegen
