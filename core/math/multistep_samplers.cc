// Multistep exponential integrators over lambda = log(alpha_t / sigma_t), the half log-SNR:
// DPM-Solver / DPM-Solver++ (Lu et al. 2022) and UniPC (Zhao et al. 2023). Each keeps the
// converted model outputs of its last steps. As diffusers' DPMSolverMultistepScheduler and
// UniPCMultistepScheduler: float32 noise levels from the training schedule (interpolated in
// float64), float32 0-d coefficients, diffusers' order of operations.
#include <algorithm>
#include <cmath>
#include <limits>

#include "core/math/sampler_factories.h"
#include "core/math/sigmas.h"

namespace imagegen::internal {
namespace {

// alpha_t, sigma_t and lambda_t of the variance-preserving process whose variance-exploding noise
// level is `sigma`: alpha = 1 / sqrt(sigma^2 + 1), sigma_t = sigma * alpha, in float32.
struct NoiseLevel {
  float alpha;
  float sigma;
  float lambda;
};

// diffusers evaluates log, exp and expm1 of its coefficients on 0-d float32 tensors, whose LibTorch
// kernels (SLEEF) round differently from libm in the last bit; evaluate them the same way.
// (+, -, *, / and sqrt are correctly rounded either way.)
float TorchLog(float x) { return at::log(at::scalar_tensor(x, at::kFloat)).item<float>(); }
float TorchExp(float x) { return at::exp(at::scalar_tensor(x, at::kFloat)).item<float>(); }
float TorchExpm1(float x) { return at::expm1(at::scalar_tensor(x, at::kFloat)).item<float>(); }

NoiseLevel AtSigma(float sigma) {
  const float alpha = 1.0f / std::sqrt(sigma * sigma + 1.0f);
  const float sigma_t = sigma * alpha;
  return {alpha, sigma_t, TorchLog(alpha) - TorchLog(sigma_t)};
}

// The integer timesteps of DPM-Solver's and UniPC's set_timesteps (which, unlike DDIM's, space
// num_steps + 1 points and drop the last), noisiest first. `last_timestep` is N unless
// lambda_min_clipped cuts the schedule short.
std::vector<int64_t> MultistepTimesteps(const SchedulerConfig& c, int num_steps, int64_t last_timestep) {
  std::vector<int64_t> ts;
  switch (c.timestep_spacing.value_or(TimestepSpacing::kLinspace)) {
    case TimestepSpacing::kLinspace: {
      // np.linspace(0, last - 1, steps + 1).round()[::-1][:-1]
      const std::vector<double> grid = Linspace(0, static_cast<double>(last_timestep - 1), num_steps + 1);
      for (int i = num_steps; i >= 1; --i) ts.push_back(static_cast<int64_t>(RoundHalfEven(grid[i])));
      break;
    }
    case TimestepSpacing::kLeading: {
      // (np.arange(0, steps + 1) * (last // (steps + 1))).round()[::-1][:-1] + steps_offset
      const int64_t ratio = last_timestep / (num_steps + 1);
      for (int i = num_steps; i >= 1; --i) ts.push_back(i * ratio + c.steps_offset);
      break;
    }
    case TimestepSpacing::kTrailing: {
      // np.arange(last, 0, -N / steps).round() - 1
      const double ratio = static_cast<double>(c.num_train_timesteps) / num_steps;
      for (double v : Arange(static_cast<double>(last_timestep), 0, -ratio)) {
        ts.push_back(static_cast<int64_t>(RoundHalfEven(v)) - 1);
      }
      break;
    }
  }
  return ts;
}

// Karras et al. 2022 noise levels between the schedule's ends, and the rounded timesteps the model
// sees for them (diffusers' multistep schedulers round them; the Euler family does not).
void KarrasGrid(const NoiseSchedule* schedule, int num_steps, std::vector<double>* sigmas,
                std::vector<int64_t>* timesteps) {
  const std::vector<float>& full = schedule->sigmas();
  *sigmas = KarrasSigmas(full.front(), full.back(), num_steps);
  timesteps->clear();
  for (double s : *sigmas) {
    timesteps->push_back(static_cast<int64_t>(RoundHalfEven(SigmaToTimestep(s, schedule->log_sigmas()))));
  }
}

std::vector<double> ToDouble(const std::vector<int64_t>& v) { return {v.begin(), v.end()}; }

class MultistepSampler : public Sampler {
 public:
  MultistepSampler(const NoiseSchedule* schedule, int num_steps, std::vector<int64_t> timesteps,
                   std::vector<float> sigmas)
      : Sampler(schedule, num_steps, ToDouble(timesteps), std::move(sigmas)),
        model_outputs_(schedule->config().solver_order) {}

  // diffusers' add_noise with begin_index (or step_index) set: alpha_t x0 + sigma_t noise at the
  // sigma of the next call (_sigma_to_alpha_sigma_t). After StartAtStep the history is empty and
  // lower_order_nums_ 0, as after diffusers' set_timesteps, so the first steps warm up again.
  at::Tensor AddNoise(const at::Tensor& x0, const at::Tensor& noise) const override {
    TORCH_CHECK(!done(), "Sampler::AddNoise after the last model call");
    const NoiseLevel level = AtSigma(sigmas_[index_]);
    const at::TensorOptions opts = at::TensorOptions().dtype(x0.scalar_type());
    return at::scalar_tensor(level.alpha, opts) * x0 + at::scalar_tensor(level.sigma, opts) * noise;
  }

 protected:
  // The converted outputs of the last solver_order calls, oldest first (diffusers'
  // model_outputs); `back(k)` is the k-th most recent, 0 the newest.
  void PushModelOutput(const at::Tensor& m) {
    std::rotate(model_outputs_.begin(), model_outputs_.begin() + 1, model_outputs_.end());
    model_outputs_.back() = m;
  }
  const at::Tensor& back(int k) const { return model_outputs_[model_outputs_.size() - 1 - k]; }

  std::vector<at::Tensor> model_outputs_;
  int lower_order_nums_ = 0;  // calls so far, capped at solver_order (the warm-up)
};

// DPM-Solver++ (Lu et al. 2022, "DPM-Solver++", Algorithms 1-2: data prediction, multistep) or
// DPM-Solver (Lu et al. 2022, noise prediction), orders 1-3.
class DpmSolverSampler : public MultistepSampler {
 public:
  DpmSolverSampler(const NoiseSchedule* schedule, int num_steps, std::vector<int64_t> timesteps,
                   std::vector<float> sigmas, bool heun)
      : MultistepSampler(schedule, num_steps, std::move(timesteps), std::move(sigmas)), heun_(heun) {}

 protected:
  at::Tensor StepImpl(const at::Tensor& model_output, const at::Tensor& sample, NoiseSource&) override {
    const SchedulerConfig& c = schedule_->config();
    const int n = num_calls();
    const int i = index_;
    // Lower orders at the end stabilise few-step runs; a final sigma of 0 needs a first-order
    // last step (the higher orders divide by lambda = infinity there).
    const bool lower_order_final =
        i == n - 1 && (c.euler_at_final || (c.lower_order_final && n < 15) ||
                       c.final_sigmas_type == FinalSigmas::kZero);
    const bool lower_order_second = i == n - 2 && c.lower_order_final && n < 15;

    PushModelOutput(Convert(model_output, sample));
    at::Tensor prev;
    if (sigmas_[i + 1] == sigmas_[i]) {
      // A step to the same noise level (Karras sigmas ending on sigma_min with final_sigmas_type
      // sigma_min) is the identity. diffusers' first-order and midpoint updates return the sample
      // there too; its Heun-type and third-order updates divide 0 by h = 0 and return NaN.
      prev = sample;
    } else if (c.solver_order == 1 || lower_order_nums_ < 1 || lower_order_final) {
      prev = FirstOrder(back(0), sample);
    } else if (c.solver_order == 2 || lower_order_nums_ < 2 || lower_order_second) {
      prev = SecondOrder(sample);
    } else {
      prev = ThirdOrder(sample);
    }
    lower_order_nums_ = std::min(lower_order_nums_ + 1, c.solver_order);
    return prev;
  }

 private:
  bool plus_plus() const { return schedule_->config().algorithm_type == DpmAlgorithm::kDpmSolverPlusPlus; }

  // The data prediction x0 (DPM-Solver++) or the noise prediction eps (DPM-Solver).
  at::Tensor Convert(const at::Tensor& model_output, const at::Tensor& sample) const {
    const NoiseLevel s = AtSigma(sigmas_[index_]);
    switch (schedule_->config().prediction_type) {
      case PredictionType::kEpsilon:
        return plus_plus() ? (sample - s.sigma * model_output) / s.alpha : model_output;
      case PredictionType::kSample:
        return plus_plus() ? model_output : (sample - s.alpha * model_output) / s.sigma;
      case PredictionType::kVPrediction:
        return plus_plus() ? s.alpha * sample - s.sigma * model_output : s.alpha * model_output + s.sigma * sample;
    }
    return model_output;
  }

  // DPM-Solver-1, which is DDIM (Lu et al. 2022, eq. 3.7; DPM-Solver++ eq. 5).
  at::Tensor FirstOrder(const at::Tensor& m, const at::Tensor& sample) const {
    const NoiseLevel t = AtSigma(sigmas_[index_ + 1]);
    const NoiseLevel s = AtSigma(sigmas_[index_]);
    const float h = t.lambda - s.lambda;
    if (plus_plus()) return (t.sigma / s.sigma) * sample - (t.alpha * (TorchExp(-h) - 1.0f)) * m;
    return (t.alpha / s.alpha) * sample - (t.sigma * (TorchExp(h) - 1.0f)) * m;
  }

  // Multistep second order (DPM-Solver++(2M), Lu et al. 2022 "DPM-Solver++", Algorithm 2).
  at::Tensor SecondOrder(const at::Tensor& sample) const {
    const NoiseLevel t = AtSigma(sigmas_[index_ + 1]);
    const NoiseLevel s0 = AtSigma(sigmas_[index_]);
    const NoiseLevel s1 = AtSigma(sigmas_[index_ - 1]);
    const at::Tensor& m0 = back(0);
    const at::Tensor& m1 = back(1);
    const float h = t.lambda - s0.lambda;
    const float h_0 = s0.lambda - s1.lambda;
    const float r0 = h_0 / h;
    const at::Tensor& d0 = m0;
    at::Tensor d1 = (1.0f / r0) * (m0 - m1);
    if (plus_plus()) {
      const float phi = t.alpha * (TorchExp(-h) - 1.0f);
      if (!heun_) return (t.sigma / s0.sigma) * sample - phi * d0 - (0.5f * phi) * d1;
      return (t.sigma / s0.sigma) * sample - phi * d0 + (t.alpha * ((TorchExp(-h) - 1.0f) / h + 1.0f)) * d1;
    }
    const float phi = t.sigma * (TorchExp(h) - 1.0f);
    if (!heun_) return (t.alpha / s0.alpha) * sample - phi * d0 - (0.5f * phi) * d1;
    return (t.alpha / s0.alpha) * sample - phi * d0 - (t.sigma * ((TorchExp(h) - 1.0f) / h - 1.0f)) * d1;
  }

  // Multistep third order (Lu et al. 2022, DPM-Solver-3 in multistep form).
  at::Tensor ThirdOrder(const at::Tensor& sample) const {
    const NoiseLevel t = AtSigma(sigmas_[index_ + 1]);
    const NoiseLevel s0 = AtSigma(sigmas_[index_]);
    const NoiseLevel s1 = AtSigma(sigmas_[index_ - 1]);
    const NoiseLevel s2 = AtSigma(sigmas_[index_ - 2]);
    const at::Tensor& m0 = back(0);
    const at::Tensor& m1 = back(1);
    const at::Tensor& m2 = back(2);
    const float h = t.lambda - s0.lambda;
    const float h_0 = s0.lambda - s1.lambda;
    const float h_1 = s1.lambda - s2.lambda;
    const float r0 = h_0 / h;
    const float r1 = h_1 / h;
    const at::Tensor& d0 = m0;
    at::Tensor d1_0 = (1.0f / r0) * (m0 - m1);
    at::Tensor d1_1 = (1.0f / r1) * (m1 - m2);
    at::Tensor d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1);
    at::Tensor d2 = (1.0f / (r0 + r1)) * (d1_0 - d1_1);
    if (plus_plus()) {
      const float e = TorchExp(-h);
      return (t.sigma / s0.sigma) * sample - (t.alpha * (e - 1.0f)) * d0 +
             (t.alpha * ((e - 1.0f) / h + 1.0f)) * d1 - (t.alpha * ((e - 1.0f + h) / (h * h) - 0.5f)) * d2;
    }
    const float e = TorchExp(h);
    return (t.alpha / s0.alpha) * sample - (t.sigma * (e - 1.0f)) * d0 -
           (t.sigma * ((e - 1.0f) / h - 1.0f)) * d1 - (t.sigma * ((e - 1.0f - h) / (h * h) - 0.5f)) * d2;
  }

  bool heun_;  // solver_type heun; midpoint otherwise
};

// UniPC (Zhao et al. 2023): the UniP predictor of order p and the UniC corrector, which refines
// each step's result with the model output the next step computes anyway, with the B(h) of
// variant bh1 (B(h) = h) or bh2 (B(h) = e^h - 1). Algorithms 1-2 of the paper.
class UniPcSampler : public MultistepSampler {
 public:
  UniPcSampler(const NoiseSchedule* schedule, int num_steps, std::vector<int64_t> timesteps,
               std::vector<float> sigmas, bool bh1)
      : MultistepSampler(schedule, num_steps, std::move(timesteps), std::move(sigmas)), bh1_(bh1) {}

 protected:
  at::Tensor StepImpl(const at::Tensor& model_output, const at::Tensor& sample_in, NoiseSource&) override {
    const SchedulerConfig& c = schedule_->config();
    const int i = index_;
    at::Tensor sample = sample_in;
    const bool use_corrector =
        i > 0 && last_sample_.defined() &&
        std::find(c.disable_corrector.begin(), c.disable_corrector.end(), i - 1) == c.disable_corrector.end();
    at::Tensor converted = Convert(model_output, sample);
    if (use_corrector) sample = Correct(converted, last_sample_, this_order_);
    PushModelOutput(converted);

    int order = c.lower_order_final ? std::min(c.solver_order, num_calls() - i) : c.solver_order;
    this_order_ = std::min(order, lower_order_nums_ + 1);  // warm-up
    last_sample_ = sample;
    // As in DpmSolverSampler: a step to the same noise level is the identity (diffusers: NaN for
    // orders above 2).
    at::Tensor prev = sigmas_[i + 1] == sigmas_[i] ? sample : Predict(sample, this_order_);
    lower_order_nums_ = std::min(lower_order_nums_ + 1, c.solver_order);
    return prev;
  }

 private:
  bool predict_x0() const { return schedule_->config().predict_x0; }

  at::Tensor Convert(const at::Tensor& model_output, const at::Tensor& sample) const {
    const NoiseLevel s = AtSigma(sigmas_[index_]);
    switch (schedule_->config().prediction_type) {
      case PredictionType::kEpsilon:
        return predict_x0() ? (sample - s.sigma * model_output) / s.alpha : model_output;
      case PredictionType::kSample:
        return predict_x0() ? model_output : (sample - s.alpha * model_output) / s.sigma;
      case PredictionType::kVPrediction:
        return predict_x0() ? s.alpha * sample - s.sigma * model_output : s.alpha * model_output + s.sigma * sample;
    }
    return model_output;
  }

  // The coefficients shared by predictor and corrector: h_phi_1 = e^{hh} - 1, B(h), and the
  // right-hand side b and matrix R (rows rks^0 .. rks^{order-1}) of the order conditions.
  struct Coefficients {
    float h_phi_1;
    float b_h;
    at::Tensor r;  // [order, order]
    at::Tensor b;  // [order]
  };

  Coefficients Solve(float h, const std::vector<float>& rks_in, int order) const {
    std::vector<float> rks = rks_in;
    rks.push_back(1.0f);
    const float hh = predict_x0() ? -h : h;
    const float h_phi_1 = TorchExpm1(hh);
    float h_phi_k = h_phi_1 / hh - 1.0f;
    int64_t factorial = 1;
    const float b_h = bh1_ ? hh : TorchExpm1(hh);
    std::vector<float> r, b;
    for (int k = 1; k <= order; ++k) {
      for (float rk : rks) r.push_back(k == 1 ? 1.0f : k == 2 ? rk : k == 3 ? rk * rk : rk * rk * rk);
      b.push_back(h_phi_k * static_cast<float>(factorial) / b_h);
      factorial *= k + 1;
      h_phi_k = h_phi_k / hh - static_cast<float>(1.0 / static_cast<double>(factorial));
    }
    return {h_phi_1, b_h, at::tensor(r, at::kFloat).view({order, static_cast<int64_t>(rks.size())}),
            at::tensor(b, at::kFloat)};
  }

  // sum_k rhos[k] * d1s[k], as diffusers' einsum("k,bkc...->bc..."). `rhos` (solved on the CPU)
  // moves to the latents' device.
  static at::Tensor Combine(const at::Tensor& rhos, const std::vector<at::Tensor>& d1s) {
    return at::einsum("k,bkc...->bc...", {rhos.to(d1s.front().device()), at::stack(d1s, 1)});
  }

  // UniP-p (Zhao et al. 2023, Algorithm 1) from sigma_i to sigma_{i+1}.
  at::Tensor Predict(const at::Tensor& x, int order) const {
    const at::Tensor& m0 = back(0);
    const NoiseLevel t = AtSigma(sigmas_[index_ + 1]);
    const NoiseLevel s0 = AtSigma(sigmas_[index_]);
    const float h = t.lambda - s0.lambda;
    std::vector<float> rks;
    std::vector<at::Tensor> d1s;
    for (int k = 1; k < order; ++k) {
      const NoiseLevel si = AtSigma(sigmas_[index_ - k]);
      const float rk = (si.lambda - s0.lambda) / h;
      rks.push_back(rk);
      d1s.push_back((back(k) - m0) / rk);
    }
    const Coefficients co = Solve(h, rks, order);
    at::Tensor x_t = predict_x0() ? (t.sigma / s0.sigma) * x - (t.alpha * co.h_phi_1) * m0
                                  : (t.alpha / s0.alpha) * x - (t.sigma * co.h_phi_1) * m0;
    if (d1s.empty()) return x_t;
    at::Tensor rhos_p = order == 2 ? at::tensor({0.5f}, at::kFloat)
                                   : at::linalg_solve(co.r.slice(0, 0, order - 1).slice(1, 0, order - 1),
                                                      co.b.slice(0, 0, order - 1));
    const float scale = (predict_x0() ? t.alpha : t.sigma) * co.b_h;
    return x_t - scale * Combine(rhos_p, d1s);
  }

  // UniC-p (Zhao et al. 2023, Algorithm 2): recomputes the last step, from `last_sample` at
  // sigma_{i-1} to sigma_i, with `model_t`, the converted model output at its prediction. The
  // result replaces that prediction.
  at::Tensor Correct(const at::Tensor& model_t, const at::Tensor& last_sample, int order) const {
    const at::Tensor& m0 = back(0);
    const NoiseLevel t = AtSigma(sigmas_[index_]);
    const NoiseLevel s0 = AtSigma(sigmas_[index_ - 1]);
    const float h = t.lambda - s0.lambda;
    std::vector<float> rks;
    std::vector<at::Tensor> d1s;
    for (int k = 1; k < order; ++k) {
      const NoiseLevel si = AtSigma(sigmas_[index_ - (k + 1)]);
      const float rk = (si.lambda - s0.lambda) / h;
      rks.push_back(rk);
      d1s.push_back((back(k) - m0) / rk);
    }
    const Coefficients co = Solve(h, rks, order);
    at::Tensor rhos_c = order == 1 ? at::tensor({0.5f}, at::kFloat) : at::linalg_solve(co.r, co.b);
    at::Tensor x_t = predict_x0() ? (t.sigma / s0.sigma) * last_sample - (t.alpha * co.h_phi_1) * m0
                                  : (t.alpha / s0.alpha) * last_sample - (t.sigma * co.h_phi_1) * m0;
    at::Tensor d1_t = model_t - m0;
    at::Tensor last_term = rhos_c[order - 1].item<float>() * d1_t;
    at::Tensor corr = d1s.empty() ? last_term : Combine(rhos_c.slice(0, 0, order - 1), d1s) + last_term;
    const float scale = (predict_x0() ? t.alpha : t.sigma) * co.b_h;
    return x_t - scale * corr;
  }

  bool bh1_;
  int this_order_ = 1;      // the order of the last predictor step, used by the next corrector
  at::Tensor last_sample_;  // the sample the last predictor step started from
};

}  // namespace

namespace {

absl::StatusOr<std::unique_ptr<Sampler>> CreateDpmSolver(const NoiseSchedule* schedule, int num_steps,
                                                         bool force_karras_sigmas) {
  const SchedulerConfig& c = schedule->config();
  const char* name = force_karras_sigmas ? "dpmpp_2m_karras" : "dpmpp_2m";
  if (c.algorithm_type == DpmAlgorithm::kDpmSolver && c.final_sigmas_type == FinalSigmas::kZero) {
    // diffusers refuses this pair too: the noise-prediction update divides by sigma = 0.
    return UnsupportedSetting(name, "final_sigmas_type", "\"zero\"",
                              "with algorithm_type dpmsolver; use \"sigma_min\" or dpmsolver++");
  }
  const int n = c.num_train_timesteps;
  // lambda_min_clipped cuts off the timesteps whose lambda is below it (Lu et al. 2022, for the
  // cosine schedule): searchsorted(flip(lambda_t), lambda_min_clipped).
  int64_t clipped = 0;
  if (c.lambda_min_clipped > -std::numeric_limits<double>::infinity()) {
    std::vector<float> ab(n);
    for (int t = 0; t < n; ++t) ab[t] = schedule->alpha_bar(t);
    at::Tensor alphas_cumprod = at::tensor(ab, at::kFloat);
    at::Tensor lambda = at::log(at::sqrt(alphas_cumprod)) - at::log(at::sqrt(1 - alphas_cumprod));
    clipped = (lambda < c.lambda_min_clipped).sum().item<int64_t>();
  }
  std::vector<int64_t> timesteps = MultistepTimesteps(c, num_steps, n - clipped);
  std::vector<double> sigmas;
  if (c.use_karras_sigmas || force_karras_sigmas) {
    KarrasGrid(schedule, num_steps, &sigmas, &timesteps);
  } else {
    sigmas = InterpolateAtTimesteps(ToDouble(timesteps), schedule->sigmas());
  }
  std::vector<float> sigmas32(sigmas.begin(), sigmas.end());
  sigmas32.push_back(c.final_sigmas_type == FinalSigmas::kZero ? 0.0f : schedule->sigmas().front());
  const SolverType solver = c.solver_type.value_or(SolverType::kMidpoint);
  return std::unique_ptr<Sampler>(
      new DpmSolverSampler(schedule, num_steps, std::move(timesteps), std::move(sigmas32), solver == SolverType::kHeun));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Sampler>> CreateDpmSolverSampler(const NoiseSchedule* schedule, int num_steps,
                                                                const SamplerOptions&) {
  return CreateDpmSolver(schedule, num_steps, /*force_karras_sigmas=*/false);
}

absl::StatusOr<std::unique_ptr<Sampler>> CreateDpmSolverKarrasSampler(const NoiseSchedule* schedule, int num_steps,
                                                                      const SamplerOptions&) {
  return CreateDpmSolver(schedule, num_steps, /*force_karras_sigmas=*/true);
}

absl::StatusOr<std::unique_ptr<Sampler>> CreateUniPcSampler(const NoiseSchedule* schedule, int num_steps,
                                                            const SamplerOptions&) {
  const SchedulerConfig& c = schedule->config();
  // Settings under which diffusers' last step to sigma = 0 is NaN or a singular solve.
  if (c.final_sigmas_type == FinalSigmas::kZero) {
    if (!c.predict_x0) {
      return UnsupportedSetting("unipc", "predict_x0", "false",
                                "with final_sigmas_type \"zero\" its last step is 0 * infinity; use \"sigma_min\"");
    }
    if (!c.lower_order_final && c.solver_order > 1) {
      return UnsupportedSetting("unipc", "lower_order_final", "false",
                                "with final_sigmas_type \"zero\" and solver_order > 1 its last step divides by "
                                "zero; use \"sigma_min\"");
    }
  }
  std::vector<int64_t> timesteps = MultistepTimesteps(c, num_steps, c.num_train_timesteps);
  std::vector<double> sigmas;
  float sigma_last = 0.0f;
  if (c.use_karras_sigmas) {
    KarrasGrid(schedule, num_steps, &sigmas, &timesteps);
    if (c.final_sigmas_type == FinalSigmas::kSigmaMin) sigma_last = static_cast<float>(sigmas.back());
  } else {
    sigmas = InterpolateAtTimesteps(ToDouble(timesteps), schedule->sigmas());
    if (c.final_sigmas_type == FinalSigmas::kSigmaMin) sigma_last = schedule->sigmas().front();
  }
  std::vector<float> sigmas32(sigmas.begin(), sigmas.end());
  sigmas32.push_back(sigma_last);
  const SolverType solver = c.solver_type.value_or(SolverType::kBh2);
  return std::unique_ptr<Sampler>(
      new UniPcSampler(schedule, num_steps, std::move(timesteps), std::move(sigmas32), solver == SolverType::kBh1));
}

}  // namespace imagegen::internal
