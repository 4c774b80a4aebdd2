#include "core/math/samplers.h"

#include <algorithm>
#include <cmath>
#include <deque>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/math/sampler_factories.h"

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
  if (schedule_->config().clip_sample.value_or(true)) {
    const double r = schedule_->config().clip_sample_range;
    x0 = x0.clamp(-r, r);
  }
  return x0;
}

void Sampler::StartAtStep(int step) {
  TORCH_CHECK(index_ == 0, "Sampler::StartAtStep after ", index_, " model calls");
  TORCH_CHECK(step >= 0 && step < num_steps_, "Sampler::StartAtStep(", step, ") with ", num_steps_, " steps");
  index_ = step * order();
  first_call_ = index_;
  start_step_ = step;
}

int Sampler::steps_done() const {
  const int calls = num_calls() - first_call_;
  const int done = index_ - first_call_;
  if (done >= calls) return steps_to_run();
  // diffusers: progress_bar.update() after call i (0-based) when i == len(timesteps) - 1 or
  // ((i + 1) > num_warmup_steps and (i + 1) % order == 0), num_warmup_steps = len(timesteps) -
  // num_inference_steps * order. Counted here for the calls 1..done.
  const int warmup = std::max(calls - steps_to_run() * order(), 0);
  return done > warmup ? done / order() - warmup / order() : 0;
}

at::Tensor Sampler::AddNoise(const at::Tensor& x0, const at::Tensor& noise) const {
  TORCH_CHECK(!done(), "Sampler::AddNoise after the last model call");
  // diffusers' DDPM/DDIM/PNDM add_noise at timesteps[:1] of the remaining ones (Ho et al. 2020, eq. 4).
  const int64_t t = static_cast<int64_t>(current_timestep());
  return schedule_->AddNoise(x0, noise, at::full({x0.size(0)}, t, at::kLong));
}

namespace {

std::vector<double> ToDouble(const std::vector<int64_t>& ts) { return {ts.begin(), ts.end()}; }

// DDPM ancestral sampling (Ho et al. 2020): x_{t-1} drawn from the posterior
// q(x_{t-1} | x_t, x_0) with x_0 predicted by the model, eq. 6-7, and the posterior variance
// beta-tilde; with epsilon prediction this is eq. 11 plus sigma_t z. As diffusers' DDPMScheduler
// (variance_type "fixed_small"), whose previous timestep is t - N // steps whatever the spacing.
class DdpmSampler : public Sampler {
 public:
  DdpmSampler(const NoiseSchedule* schedule, std::vector<int64_t> timesteps, int num_steps)
      : Sampler(schedule, num_steps, ToDouble(timesteps)), stride_(schedule->num_train_timesteps() / num_steps) {}

 protected:
  at::Tensor StepImpl(const at::Tensor& model_output, const at::Tensor& sample,
                      NoiseSource& noise) override {
    const int64_t t = static_cast<int64_t>(current_timestep());
    const int64_t prev_t = t - stride_;
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

 private:
  int64_t stride_;
};

// DDIM (Song et al. 2021, eq. 12): deterministic for eta = 0, with eta * sigma_t of fresh noise
// otherwise. As diffusers' DDIMScheduler.
class DdimSampler : public Sampler {
 public:
  DdimSampler(const NoiseSchedule* schedule, std::vector<int64_t> timesteps, double eta, int num_steps)
      : Sampler(schedule, num_steps, ToDouble(timesteps)),
        eta_(eta),
        stride_(schedule->num_train_timesteps() / num_steps),
        final_alpha_bar_(schedule->config().set_alpha_to_one.value_or(true) ? 1.0f
                                                                            : schedule->alpha_bar(0)) {}

 protected:
  at::Tensor StepImpl(const at::Tensor& model_output, const at::Tensor& sample,
                      NoiseSource& noise) override {
    const int64_t t = static_cast<int64_t>(current_timestep());
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

// PNDM (Liu et al. 2022): the pseudo linear multistep method (PLMS) on the DDIM-like transfer
// of eq. 9, with three pseudo Runge-Kutta steps (four model calls each) to warm up its history
// unless skip_prk_steps, in which case its first step is a second-order (Heun-like) step of two
// calls, as crowsonkb's PLMS. As diffusers' PNDMScheduler, model call by model call: its state
// machine runs on its own counter of calls (diffusers' `counter`), which equals call_index() except
// after StartAtStep, where it restarts from 0 (diffusers' PNDM has no set_begin_index).
class PndmSampler : public Sampler {
 public:
  PndmSampler(const NoiseSchedule* schedule, std::vector<int64_t> prk_timesteps,
              std::vector<int64_t> plms_timesteps, int num_steps)
      : Sampler(schedule, num_steps, Concat(prk_timesteps, plms_timesteps)),
        prk_timesteps_(std::move(prk_timesteps)),
        stride_(schedule->num_train_timesteps() / num_steps),
        final_alpha_bar_(schedule->config().set_alpha_to_one.value_or(false) ? 1.0f
                                                                             : schedule->alpha_bar(0)) {}

 protected:
  at::Tensor StepImpl(const at::Tensor& model_output, const at::Tensor& sample,
                      NoiseSource& noise) override {
    at::Tensor prev = counter_ < static_cast<int>(prk_timesteps_.size()) ? StepPrk(model_output, sample)
                                                                          : StepPlms(model_output, sample);
    ++counter_;
    return prev;
  }

 private:
  static std::vector<double> Concat(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
    std::vector<double> out(a.begin(), a.end());
    out.insert(out.end(), b.begin(), b.end());
    return out;
  }

  // Runge-Kutta 4 in four calls: at t, twice at t - stride/2, at t - stride (Liu et al. eq. 13).
  // As diffusers: the step's start t comes from the counter, its target from the call's timestep.
  at::Tensor StepPrk(at::Tensor model_output, const at::Tensor& sample) {
    const int c = counter_;
    const int64_t diff_to_prev = c % 2 ? 0 : stride_ / 2;
    const int64_t prev_t = static_cast<int64_t>(current_timestep()) - diff_to_prev;
    const int64_t t = prk_timesteps_[c / 4 * 4];
    switch (c % 4) {
      case 0:
        rk_sum_ = rk_sum_.defined() ? rk_sum_ + (1.0 / 6) * model_output : (1.0 / 6) * model_output;
        ets_.push_back(model_output);
        cur_sample_ = sample;
        break;
      case 1:
      case 2:
        rk_sum_ = rk_sum_ + (1.0 / 3) * model_output;
        break;
      case 3:
        model_output = rk_sum_ + (1.0 / 6) * model_output;
        rk_sum_ = at::Tensor();
        break;
    }
    const at::Tensor& start = cur_sample_.defined() ? cur_sample_ : sample;
    return PrevSample(start, t, prev_t, model_output);
  }

  // Adams-Bashforth combinations of the history (Liu et al. eq. 12).
  at::Tensor StepPlms(at::Tensor model_output, at::Tensor sample) {
    const int c = counter_;
    int64_t t = static_cast<int64_t>(current_timestep());
    int64_t prev_t = t - stride_;
    if (c != 1) {
      while (ets_.size() > 3) ets_.pop_front();
      ets_.push_back(model_output);
    } else {
      prev_t = t;
      t = t + stride_;
    }
    const size_t n = ets_.size();
    if (n == 1 && c == 0) {
      cur_sample_ = sample;
    } else if (n == 1 && c == 1) {
      model_output = (model_output + ets_[n - 1]) / 2;
      sample = cur_sample_;
      cur_sample_ = at::Tensor();
    } else if (n == 2) {
      model_output = (3 * ets_[n - 1] - ets_[n - 2]) / 2;
    } else if (n == 3) {
      model_output = (23 * ets_[n - 1] - 16 * ets_[n - 2] + 5 * ets_[n - 3]) / 12;
    } else {
      model_output = (1.0 / 24) * (55 * ets_[n - 1] - 59 * ets_[n - 2] + 37 * ets_[n - 3] - 9 * ets_[n - 4]);
    }
    return PrevSample(sample, t, prev_t, model_output);
  }

  // The transfer x_t -> x_{t - delta} of Liu et al. 2022, eq. 9 (diffusers' _get_prev_sample).
  at::Tensor PrevSample(const at::Tensor& sample, int64_t t, int64_t prev_t, at::Tensor model_output) const {
    const float alpha_prod_t = schedule_->alpha_bar(static_cast<int>(t));
    const float alpha_prod_t_prev =
        prev_t >= 0 ? schedule_->alpha_bar(static_cast<int>(prev_t)) : final_alpha_bar_;
    const float beta_prod_t = 1.0f - alpha_prod_t;
    const float beta_prod_t_prev = 1.0f - alpha_prod_t_prev;
    if (schedule_->config().prediction_type == PredictionType::kVPrediction) {
      model_output = std::sqrt(alpha_prod_t) * model_output + std::sqrt(beta_prod_t) * sample;
    }
    const float sample_coeff = std::sqrt(alpha_prod_t_prev / alpha_prod_t);
    const float model_output_denom_coeff =
        alpha_prod_t * std::sqrt(beta_prod_t_prev) + std::sqrt(alpha_prod_t * beta_prod_t * alpha_prod_t_prev);
    return sample_coeff * sample - (alpha_prod_t_prev - alpha_prod_t) * model_output / model_output_denom_coeff;
  }

  std::vector<int64_t> prk_timesteps_;
  int64_t stride_;
  float final_alpha_bar_;
  int counter_ = 0;             // model calls this sampler has stepped (diffusers' counter)
  std::deque<at::Tensor> ets_;  // model outputs of past steps, at most the last 4
  at::Tensor rk_sum_;           // weighted sum of the current Runge-Kutta step's outputs
  at::Tensor cur_sample_;       // the sample the current two- or four-call step started from
};

}  // namespace

namespace internal {

absl::StatusOr<std::unique_ptr<Sampler>> CreateDdpmSampler(const NoiseSchedule* schedule, int num_steps,
                                                           const SamplerOptions&) {
  return std::make_unique<DdpmSampler>(schedule, schedule->InferenceTimesteps(num_steps), num_steps);
}

absl::StatusOr<std::unique_ptr<Sampler>> CreateDdimSampler(const NoiseSchedule* schedule, int num_steps,
                                                           const SamplerOptions& options) {
  return std::make_unique<DdimSampler>(schedule, schedule->InferenceTimesteps(num_steps), options.eta, num_steps);
}

absl::StatusOr<std::unique_ptr<Sampler>> CreatePndmSampler(const NoiseSchedule* schedule, int num_steps,
                                                           const SamplerOptions&) {
  const SchedulerConfig& c = schedule->config();
  if (c.prediction_type == PredictionType::kSample) {
    return UnsupportedSetting("pndm", "prediction_type", "\"sample\"",
                                        "PNDM needs epsilon or v_prediction");
  }
  // diffusers' _timesteps, ascending.
  std::vector<int64_t> ts = schedule->InferenceTimesteps(num_steps);
  std::reverse(ts.begin(), ts.end());
  std::vector<int64_t> prk, plms;
  if (c.skip_prk_steps) {
    // concatenate([ts[:-1], ts[-2:-1], ts[-1:]])[::-1]: the second timestep twice.
    plms.assign(ts.begin(), ts.end() - 1);
    if (ts.size() >= 2) plms.push_back(ts[ts.size() - 2]);
    plms.push_back(ts.back());
    std::reverse(plms.begin(), plms.end());
  } else {
    constexpr int kOrder = 4;
    if (num_steps < kOrder) {
      return UnsupportedSetting(
          "pndm", "skip_prk_steps", "false",
          absl::StrCat("its Runge-Kutta warm-up needs at least 4 steps; got ", num_steps));
    }
    const int64_t half = schedule->num_train_timesteps() / num_steps / 2;
    // ts[-4:].repeat(2) + tile([0, half], 4), then [:-1].repeat(2)[1:-1][::-1].
    std::vector<int64_t> grid;
    for (int i = num_steps - kOrder; i < num_steps; ++i) {
      grid.push_back(ts[i]);
      grid.push_back(ts[i] + half);
    }
    grid.pop_back();
    std::vector<int64_t> doubled;
    for (int64_t v : grid) doubled.insert(doubled.end(), {v, v});
    prk.assign(doubled.begin() + 1, doubled.end() - 1);
    std::reverse(prk.begin(), prk.end());
    plms.assign(ts.begin(), ts.end() - 3);
    std::reverse(plms.begin(), plms.end());
  }
  return std::make_unique<PndmSampler>(schedule, std::move(prk), std::move(plms), num_steps);
}

}  // namespace internal

absl::StatusOr<std::unique_ptr<Sampler>> CreateSampler(absl::string_view name,
                                                       const NoiseSchedule* schedule,
                                                       int num_steps,
                                                       const SamplerOptions& options) {
  const SamplerEntry* entry = FindSampler(name);
  if (entry == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("sampler is \"", name, "\"; supported: ",
                                                   absl::StrJoin(SamplerNames(), ", ")));
  }
  if (num_steps < 1 || num_steps > schedule->num_train_timesteps()) {
    return absl::InvalidArgumentError(absl::StrCat("steps is ", num_steps, "; allowed 1..",
                                                   schedule->num_train_timesteps()));
  }
  if (!(options.eta >= 0 && options.eta <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("eta is ", options.eta, "; allowed [0, 1]"));
  }
  return entry->create(schedule, num_steps, options);
}

at::Tensor ApplyGuidance(const at::Tensor& eps_cond, const at::Tensor& eps_uncond, double scale) {
  return eps_uncond + scale * (eps_cond - eps_uncond);
}

}  // namespace imagegen
