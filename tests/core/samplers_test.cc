// The noise schedule, the forward process and the samplers, against closed forms and against
// trajectories recorded from diffusers (tests/data/sampler_vectors.json).
#include "core/math/samplers.h"

#include <cmath>
#include <deque>
#include <limits>
#include <fstream>
#include <sstream>
#include <tuple>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/math/noise_schedule.h"
#include "core/math/sigmas.h"

namespace imagegen {
namespace {

using json = nlohmann::json;

SchedulerConfig ParseConfig(const std::string& text) {
  auto c = SchedulerConfig::FromJson(text, "test");
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

TEST(NoiseSchedule, LinearBetasAndAlphaBarMatchClosedForm) {
  NoiseSchedule s(ParseConfig(R"({"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02})"));
  double prod = 1.0;
  for (int t = 0; t < 1000; ++t) {
    const double beta = 0.0001 + (0.02 - 0.0001) * t / 999.0;
    prod *= 1.0 - beta;
    ASSERT_NEAR(s.beta(t), beta, 1e-7) << "t=" << t;
    ASSERT_NEAR(s.alpha_bar(t), prod, 1e-5 * std::max(prod, 1e-3)) << "t=" << t;
  }
}

TEST(NoiseSchedule, ScaledLinearIsSquareOfLinearRoots) {
  NoiseSchedule s(ParseConfig(
      R"({"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012})"));
  for (int t : {0, 1, 500, 999}) {
    const double root = std::sqrt(0.00085) + (std::sqrt(0.012) - std::sqrt(0.00085)) * t / 999.0;
    EXPECT_NEAR(s.beta(t), root * root, 1e-7) << "t=" << t;
  }
}

TEST(NoiseSchedule, SquaredCosCapV2BetasMatchTheCosineAlphaBar) {
  // Nichol & Dhariwal 2021, eq. 17: abar(t) = f(t) / f(0), f(t) = cos((t/T + s) / (1 + s) * pi/2)^2,
  // beta_t = min(1 - abar(t+1)/abar(t), 0.999), discretised as diffusers' betas_for_alpha_bar.
  NoiseSchedule s(ParseConfig(R"({"beta_schedule": "squaredcos_cap_v2"})"));
  auto f = [](double t) { return std::pow(std::cos((t + 0.008) / 1.008 * M_PI / 2), 2); };
  double prod = 1.0;
  for (int t = 0; t < 1000; ++t) {
    const double beta = std::min(1 - f((t + 1) / 1000.0) / f(t / 1000.0), 0.999);
    prod *= 1.0 - beta;
    ASSERT_NEAR(s.beta(t), beta, 1e-7 * std::max(1.0, beta)) << "t=" << t;
    ASSERT_NEAR(s.alpha_bar(t), prod, 1e-5 * std::max(prod, 1e-3)) << "t=" << t;
  }
  EXPECT_FLOAT_EQ(s.beta(999), 0.999f);  // the cap
  // alpha-bar follows f(t)/f(0) closely before the cap.
  EXPECT_NEAR(s.alpha_bar(499), f(500 / 1000.0) / f(0), 1e-5);
}

TEST(NoiseSchedule, TrainedBetasReplaceTheSchedule) {
  std::string betas = "[";
  for (int t = 0; t < 10; ++t) betas += (t ? ", " : "") + std::to_string(0.01 * (t + 1));
  betas += "]";
  NoiseSchedule s(ParseConfig(R"({"num_train_timesteps": 10, "beta_schedule": "linear", "trained_betas": )" +
                              betas + "}"));
  double prod = 1.0;
  for (int t = 0; t < 10; ++t) {
    prod *= 1.0 - 0.01 * (t + 1);
    EXPECT_FLOAT_EQ(s.beta(t), static_cast<float>(0.01 * (t + 1)));
    EXPECT_NEAR(s.alpha_bar(t), prod, 1e-6);
  }
  auto wrong_length = SchedulerConfig::FromJson(R"({"num_train_timesteps": 10, "trained_betas": [0.1, 0.2]})", "f");
  ASSERT_FALSE(wrong_length.ok());
  EXPECT_NE(wrong_length.status().message().find("trained_betas"), std::string::npos);
}

TEST(NoiseSchedule, SigmasAreTheVarianceExplodingNoiseLevels) {
  NoiseSchedule s(ParseConfig(R"({"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012})"));
  for (int t : {0, 1, 500, 999}) {
    const double ab = s.alpha_bar(t);
    EXPECT_NEAR(s.sigmas()[t], std::sqrt((1 - ab) / ab), 1e-6 * s.sigmas()[t]) << "t=" << t;
    EXPECT_NEAR(s.log_sigmas()[t], std::log(s.sigmas()[t]), 1e-6) << "t=" << t;
  }
  EXPECT_NEAR(s.sigmas().back(), 14.614645, 1e-5);  // Stable Diffusion's sigma_max
  EXPECT_NEAR(s.sigmas().front(), 0.0291675, 1e-6);
}

TEST(Sigmas, NumpyLogIsWithinFourUlpsOfLibm) {
  // NumPy's float32 log documents a maximum error of 3.83 ulp.
  for (float x = 1e-6f; x < 1e6f; x *= 1.0137f) {
    const float ref = std::log(x);
    const float ulp = std::nextafter(std::abs(ref), 1e9f) - std::abs(ref);
    ASSERT_LE(std::abs(NumpyLogF32(x) - ref), 4 * ulp + 1e-30f) << x;
  }
  EXPECT_EQ(NumpyLogF32(1.0f), 0.0f);
  EXPECT_EQ(NumpyLogF32(0.0f), -std::numeric_limits<float>::infinity());
}

TEST(Sigmas, KarrasSigmasRunFromSigmaMaxToSigmaMin) {
  // Karras et al. 2022, eq. 5 with rho = 7: (max^(1/rho) + i/(n-1) (min^(1/rho) - max^(1/rho)))^rho.
  const std::vector<double> k = KarrasSigmas(0.0291675, 14.614645, 10);
  ASSERT_EQ(k.size(), 10u);
  EXPECT_NEAR(k.front(), 14.614645, 1e-12);
  EXPECT_NEAR(k.back(), 0.0291675, 1e-14);
  for (size_t i = 1; i < k.size(); ++i) EXPECT_LT(k[i], k[i - 1]);
  const double mid = std::pow(std::pow(14.614645, 1 / 7.0) + 0.5 * (std::pow(0.0291675, 1 / 7.0) -
                                                                     std::pow(14.614645, 1 / 7.0)), 7);
  EXPECT_NEAR(KarrasSigmas(0.0291675, 14.614645, 3)[1], mid, 1e-12);
  ASSERT_EQ(KarrasSigmas(0.1, 2.0, 1).size(), 1u);
  EXPECT_NEAR(KarrasSigmas(0.1, 2.0, 1)[0], 2.0, 1e-14);
}

TEST(Sigmas, SigmaToTimestepInvertsTheSchedule) {
  NoiseSchedule s(ParseConfig(R"({"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012})"));
  for (int t : {0, 1, 250, 998, 999}) {
    EXPECT_NEAR(SigmaToTimestep(s.sigmas()[t], s.log_sigmas()), t, 1e-3) << "t=" << t;
  }
  // Between two timesteps: linear in log sigma.
  const double mid = std::exp(0.5 * (std::log(s.sigmas()[400]) + std::log(s.sigmas()[401])));
  EXPECT_NEAR(SigmaToTimestep(mid, s.log_sigmas()), 400.5, 1e-3);
  // Outside the schedule: clamped to its ends.
  EXPECT_EQ(SigmaToTimestep(1e-6, s.log_sigmas()), 0.0);
  EXPECT_EQ(SigmaToTimestep(1e6, s.log_sigmas()), 999.0);
}

TEST(Sigmas, NumpyHelpers) {
  EXPECT_EQ(Linspace(0, 999, 4), (std::vector<double>{0, 333, 666, 999}));
  EXPECT_EQ(Linspace(2, 5, 1), (std::vector<double>{2}));
  EXPECT_EQ(Arange(1000, 0, -250), (std::vector<double>{1000, 750, 500, 250}));
  EXPECT_EQ(RoundHalfEven(0.5), 0);
  EXPECT_EQ(RoundHalfEven(1.5), 2);
  EXPECT_EQ(RoundHalfEven(499.5), 500);
  EXPECT_EQ(InterpolateAtTimesteps({-1, 0, 0.25, 1, 2.5}, {1.0f, 3.0f, 5.0f}),
            (std::vector<double>{1.0, 1.0, 1.5, 3.0, 5.0}));
}

TEST(NoiseSchedule, TimestepSpacings) {
  auto ts = [](const char* cfg, int n) { return NoiseSchedule(ParseConfig(cfg)).InferenceTimesteps(n); };
  EXPECT_EQ(ts(R"({"timestep_spacing": "leading", "steps_offset": 1})", 4),
            (std::vector<int64_t>{751, 501, 251, 1}));
  EXPECT_EQ(ts(R"({"timestep_spacing": "trailing"})", 4), (std::vector<int64_t>{999, 749, 499, 249}));
  EXPECT_EQ(ts(R"({"timestep_spacing": "linspace"})", 4), (std::vector<int64_t>{999, 666, 333, 0}));
}

TEST(NoiseSchedule, ForwardProcessHasClosedFormMeanAndVariance) {
  // q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) (Ho et al. 2020, eq. 4).
  NoiseSchedule s(ParseConfig(R"({"beta_schedule": "linear"})"));
  at::manual_seed(0);
  const int64_t n = 200000;
  for (int64_t t : {0, 100, 500, 999}) {
    at::Tensor x0 = at::full({n, 1}, 0.7f);
    at::Tensor xt = s.AddNoise(x0, at::randn({n, 1}), at::full({n}, t, at::kLong));
    const double ab = s.alpha_bar(static_cast<int>(t));
    EXPECT_NEAR(xt.mean().item<double>(), std::sqrt(ab) * 0.7, 5e-3) << "t=" << t;
    EXPECT_NEAR(xt.var().item<double>(), 1.0 - ab, 5e-3) << "t=" << t;
  }
}

TEST(SchedulerConfig, ErrorsNameTheFileAndKey) {
  auto bad = SchedulerConfig::FromJson(R"({"beta_schedule": "cosine"})", "scheduler_config.json");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("scheduler_config.json"), std::string::npos);
  EXPECT_NE(bad.status().message().find("beta_schedule"), std::string::npos);
  EXPECT_NE(bad.status().message().find("cosine"), std::string::npos);
  EXPECT_FALSE(SchedulerConfig::FromJson(R"({"beta_start": "x"})", "f").ok());
  EXPECT_FALSE(SchedulerConfig::FromJson(R"({"num_train_timesteps": 1})", "f").ok());
  EXPECT_FALSE(SchedulerConfig::FromJson("{not json", "f").ok());
  EXPECT_FALSE(SchedulerConfig::FromJson(R"({"thresholding": true})", "f").ok());
}

TEST(SchedulerConfig, UnsupportedValuesAreErrorsNamingKeyAndValue) {
  for (const auto& [text, key, value] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {R"({"timestep_spacing": "uniform"})", "timestep_spacing", "uniform"},
           {R"({"prediction_type": "flow_prediction"})", "prediction_type", "flow_prediction"},
           {R"({"algorithm_type": "sde-dpmsolver++"})", "algorithm_type", "sde-dpmsolver++"},
           {R"({"solver_type": "rk4"})", "solver_type", "rk4"},
           {R"({"final_sigmas_type": "denoise_to_zero"})", "final_sigmas_type", "denoise_to_zero"},
           {R"({"variance_type": "learned_range"})", "variance_type", "learned_range"},
           {R"({"interpolation_type": "log_linear"})", "interpolation_type", "log_linear"},
           {R"({"timestep_type": "continuous"})", "timestep_type", "continuous"},
           {R"({"rescale_betas_zero_snr": true})", "rescale_betas_zero_snr", "true"},
           {R"({"use_lu_lambdas": true})", "use_lu_lambdas", "true"},
           {R"({"use_exponential_sigmas": true})", "use_exponential_sigmas", "true"},
           {R"({"solver_order": 4})", "solver_order", "4"},
           {R"({"beta_schedule": "exp"})", "beta_schedule", "exp"},
       }) {
    auto c = SchedulerConfig::FromJson(text, "scheduler_config.json");
    ASSERT_FALSE(c.ok()) << text;
    const std::string message(c.status().message());
    EXPECT_NE(message.find("scheduler_config.json"), std::string::npos) << message;
    EXPECT_NE(message.find(key), std::string::npos) << message;
    EXPECT_NE(message.find(value), std::string::npos) << message;
  }
}

TEST(SchedulerConfig, ReadsDiffusersFilesAsWritten) {
  // A DPMSolverMultistepScheduler config as diffusers saves it: Python's -Infinity, nulls, keys
  // imagegen does not know (ignored), and the sampler-specific keys.
  auto c = SchedulerConfig::FromJson(R"({
      "_class_name": "DPMSolverMultistepScheduler", "_diffusers_version": "0.27.0",
      "algorithm_type": "dpmsolver++", "beta_end": 0.012, "beta_schedule": "scaled_linear",
      "beta_start": 0.00085, "dynamic_thresholding_ratio": 0.995, "euler_at_final": false,
      "final_sigmas_type": "zero", "lambda_min_clipped": -Infinity, "lower_order_final": true,
      "num_train_timesteps": 1000, "prediction_type": "epsilon", "sample_max_value": 1.0,
      "solver_order": 2, "solver_type": "midpoint", "steps_offset": 1, "thresholding": false,
      "timestep_spacing": "linspace", "trained_betas": null, "use_karras_sigmas": true,
      "use_lu_lambdas": false, "variance_type": null, "skip_prk_steps": true,
      "disable_corrector": [0, 1], "predict_x0": true, "clip_sample": false})", "f");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->lambda_min_clipped, -std::numeric_limits<double>::infinity());
  EXPECT_EQ(c->beta_schedule, BetaSchedule::kScaledLinear);
  EXPECT_TRUE(c->use_karras_sigmas);
  EXPECT_EQ(c->solver_order, 2);
  EXPECT_EQ(c->solver_type, SolverType::kMidpoint);
  EXPECT_EQ(c->timestep_spacing, TimestepSpacing::kLinspace);
  EXPECT_EQ(c->clip_sample, false);
  EXPECT_EQ(c->disable_corrector, (std::vector<int>{0, 1}));
  EXPECT_TRUE(c->trained_betas.empty());
  // Absent class-dependent keys stay empty so that each sampler applies its own default.
  auto empty = ParseConfig("{}");
  EXPECT_FALSE(empty.clip_sample.has_value());
  EXPECT_FALSE(empty.timestep_spacing.has_value());
  EXPECT_FALSE(empty.set_alpha_to_one.has_value());
  // Only bare tokens are numbers: the same words inside strings are left alone.
  EXPECT_TRUE(SchedulerConfig::FromJson(R"({"note": "a \"NaN\" or -Infinity in a string"})", "f").ok());
}

TEST(Samplers, UnknownNameAndBadStepsAreErrors) {
  NoiseSchedule s(ParseConfig("{}"));
  auto unknown = CreateSampler("plms2", &s, 10);
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("plms2"), std::string::npos);
  EXPECT_FALSE(CreateSampler("ddim", &s, 0).ok());
  EXPECT_FALSE(CreateSampler("ddim", &s, 1001).ok());
}

TEST(Guidance, CombinesBothHalves) {
  at::Tensor c = at::full({2}, 3.0f), u = at::full({2}, 1.0f);
  EXPECT_TRUE(at::allclose(ApplyGuidance(c, u, 1.0), c));
  EXPECT_TRUE(at::allclose(ApplyGuidance(c, u, 0.0), u));
  EXPECT_TRUE(at::allclose(ApplyGuidance(c, u, 7.5), at::full({2}, 1.0f + 7.5f * 2.0f)));
}

// Replays the standard-normal draws diffusers recorded, in order.
class RecordedNoise : public NoiseSource {
 public:
  void Push(at::Tensor t) { draws_.push_back(std::move(t)); }
  at::Tensor Draw(at::IntArrayRef shape) override {
    EXPECT_FALSE(draws_.empty()) << "sampler drew more noise than diffusers did";
    if (draws_.empty()) return at::zeros(shape);
    at::Tensor t = draws_.front();
    draws_.pop_front();
    EXPECT_EQ(t.sizes(), shape);
    return t;
  }
  size_t remaining() const { return draws_.size(); }

 private:
  std::deque<at::Tensor> draws_;
};

at::Tensor ToTensor(const json& values, const std::vector<int64_t>& shape) {
  std::vector<float> v = values.get<std::vector<float>>();
  return at::from_blob(v.data(), shape, at::kFloat).clone();
}

// max |x - ref| / max(1, |ref|), the measure the reference's README defines.
double RelError(const at::Tensor& x, const at::Tensor& ref) {
  return ((x - ref).abs() / ref.abs().clamp_min(1.0)).max().item<double>();
}

std::string SamplerNameFor(const std::string& diffusers_class, const json& config) {
  const SamplerEntry* entry = FindSamplerForScheduler(diffusers_class, config.value("use_karras_sigmas", false));
  return entry == nullptr ? "" : entry->name;
}

// The stand-in model of the reference file, elementwise.
at::Tensor StandInModel(const at::Tensor& x_in, double t) {
  return 0.5 * x_in + 0.1 * at::sin(x_in) + 0.001 * t;
}

void ExpectNearRelative(double x, double ref, const std::string& what) {
  EXPECT_LE(std::abs(x - ref), 1e-5 * std::max(1.0, std::abs(ref))) << what << ": " << x << " vs " << ref;
}

TEST(Samplers, ReproduceDiffusersReferenceTrajectories) {
  std::ifstream in(std::string(IMAGEGEN_TEST_DATA_DIR) + "/sampler_vectors.json");
  ASSERT_TRUE(in) << "missing tests/data/sampler_vectors.json";
  json file = json::parse(in);
  int checked = 0;
  for (const json& c : file["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    const std::string name = SamplerNameFor(c["scheduler"], c["config"]);
    ASSERT_FALSE(name.empty()) << "no sampler for " << c["scheduler"];
    NoiseSchedule schedule(ParseConfig(c["config"].dump()));
    SamplerOptions options;
    if (c["step_kwargs"].contains("eta")) options.eta = c["step_kwargs"]["eta"];
    auto sampler = CreateSampler(name, &schedule, c["num_inference_steps"], options);
    ASSERT_TRUE(sampler.ok()) << sampler.status();
    Sampler& s = **sampler;

    // The grid: one timestep per model call, and the noise levels where diffusers has them.
    const std::vector<double> ref_timesteps = c["timesteps"];
    ASSERT_EQ(s.timesteps().size(), ref_timesteps.size());
    ASSERT_EQ(s.num_calls(), static_cast<int>(c["steps"].size()));
    for (size_t i = 0; i < ref_timesteps.size(); ++i) {
      ExpectNearRelative(s.timesteps()[i], ref_timesteps[i], "timestep " + std::to_string(i));
    }
    if (c.contains("sigmas")) {
      const std::vector<double> ref_sigmas = c["sigmas"];
      ASSERT_EQ(s.sigmas().size(), ref_sigmas.size());
      for (size_t i = 0; i < ref_sigmas.size(); ++i) {
        ExpectNearRelative(s.sigmas()[i], ref_sigmas[i], "sigma " + std::to_string(i));
      }
    } else {
      EXPECT_TRUE(s.sigmas().empty());
    }
    ExpectNearRelative(s.init_noise_sigma(), c["init_noise_sigma"].get<double>(), "init_noise_sigma");

    const std::vector<int64_t> shape = c["shape"];
    at::Tensor x = ToTensor(c["x_T"], shape) * s.init_noise_sigma();
    double worst = 0, worst_input = 0;
    for (const json& step : c["steps"]) {
      RecordedNoise noise;
      for (const json& d : step["noise_draws"]) noise.Push(ToTensor(d, shape));
      const double t = s.current_timestep();
      ExpectNearRelative(t, step["t"].get<double>(), "model timestep");
      at::Tensor x_in = s.ScaleModelInput(x);
      const std::vector<float> check = step["x_in_scale_check"];
      worst_input = std::max(worst_input, RelError(x_in.flatten().slice(0, 0, static_cast<int64_t>(check.size())),
                                                   ToTensor(step["x_in_scale_check"], {static_cast<int64_t>(check.size())})));
      x = s.Step(StandInModel(x_in, t), x, noise);
      EXPECT_EQ(noise.remaining(), 0u) << "sampler drew less noise than diffusers did";
      worst = std::max(worst, RelError(x, ToTensor(step["x"], shape)));
    }
    EXPECT_TRUE(s.done());
    worst = std::max(worst, RelError(x, ToTensor(c["final"], shape)));
    EXPECT_LT(worst, 1e-5);
    EXPECT_LT(worst_input, 1e-5);
    std::cout << c["name"].get<std::string>() << " (" << name << "): max relative error " << worst
              << ", scaled input " << worst_input << "\n";
    ++checked;
  }
  EXPECT_EQ(checked, 13);  // every case of the file
}

const char kStableDiffusionConfig[] =
    R"({"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "num_train_timesteps": 1000})";
const char kStableDiffusion[] =
    R"({"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "num_train_timesteps": 1000)";

SchedulerConfig SdConfig(const std::string& more = "") {
  return ParseConfig(std::string(kStableDiffusion) + (more.empty() ? "" : ", " + more) + "}");
}

TEST(Samplers, NamesInListOrder) {
  EXPECT_EQ(SamplerNames(), (std::vector<std::string>{"ddpm", "ddim", "pndm", "euler", "euler_a", "heun",
                                                      "dpmpp_2m", "dpmpp_2m_karras", "unipc"}));
}

TEST(SamplerRegistry, OneEntryPerNameWithItsDiffusersClass) {
  EXPECT_EQ(FindSampler("heun")->diffusers_class, std::string("HeunDiscreteScheduler"));
  EXPECT_EQ(FindSampler("no-such"), nullptr);
  EXPECT_EQ(FindSamplerForScheduler("DPMSolverMultistepScheduler", false)->name, std::string("dpmpp_2m"));
  EXPECT_EQ(FindSamplerForScheduler("DPMSolverMultistepScheduler", true)->name, std::string("dpmpp_2m_karras"));
  // A class without a forced-Karras twin maps to its one entry either way.
  EXPECT_EQ(FindSamplerForScheduler("EulerDiscreteScheduler", true)->name, std::string("euler"));
  EXPECT_EQ(FindSamplerForScheduler("LMSDiscreteScheduler", false), nullptr);
  for (const SamplerEntry& e : SamplerRegistry()) EXPECT_EQ(FindSampler(e.name), &e);
}

// Progress is counted in denoising steps as diffusers' pipelines count them: after the last
// call of each step (heun: every second call; pndm: after its warm-up), whatever the calls.
TEST(Samplers, StepsDoneCountsDenoisingStepsAsDiffusersProgressBar) {
  auto trace = [](Sampler& s) {
    std::vector<int> steps;
    at::Tensor x = at::zeros({1, 1, 2, 2});
    RecordedNoise noise;
    while (!s.done()) {
      x = s.Step(at::zeros_like(x), x, noise);
      steps.push_back(s.steps_done());
    }
    return steps;
  };
  NoiseSchedule sd(SdConfig(R"("skip_prk_steps": true)"));
  auto heun = CreateSampler("heun", &sd, 3);
  EXPECT_EQ((*heun)->steps_to_run(), 3);
  EXPECT_EQ(trace(**heun), (std::vector<int>{0, 1, 1, 2, 3}));
  auto pndm = CreateSampler("pndm", &sd, 4);
  EXPECT_EQ(trace(**pndm), (std::vector<int>{0, 1, 2, 3, 4}));
  NoiseSchedule prk(ParseConfig("{}"));
  auto warm = CreateSampler("pndm", &prk, 4);  // 13 calls: 9 warm-up calls complete no step
  EXPECT_EQ(trace(**warm), (std::vector<int>{0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}));
  auto ddim = CreateSampler("ddim", &sd, 3);
  EXPECT_EQ(trace(**ddim), (std::vector<int>{1, 2, 3}));
  // Image to image counts only the steps it runs.
  auto late = CreateSampler("heun", &sd, 4);
  (*late)->StartAtStep(2);
  EXPECT_EQ((*late)->steps_to_run(), 2);
  EXPECT_EQ(trace(**late), (std::vector<int>{0, 1, 2}));  // 3 calls for 2 steps
}

// What ModelBundle::Load records per sampler (ModelConfig::SamplerSupport) assumes that every
// step count from a sampler's minimum to num_train_timesteps works: checked here for each
// sampler on the configs whose minimum is not 1.
TEST(Samplers, EveryStepCountFromTheMinimumUpWorks) {
  for (const char* config : {"{}", R"({"skip_prk_steps": true})", kStableDiffusionConfig}) {
    NoiseSchedule s(ParseConfig(config));
    for (const SamplerEntry& e : SamplerRegistry()) {
      int first_ok = 0;
      for (int steps = 1; steps <= 1000; steps += steps < 60 ? 1 : 47) {
        const bool ok = CreateSampler(e.name, &s, steps).ok();
        if (ok && first_ok == 0) first_ok = steps;
        EXPECT_TRUE(!first_ok || ok) << e.name << " on " << config << " refuses " << steps << " steps";
      }
      EXPECT_TRUE(CreateSampler(e.name, &s, 1000).ok()) << e.name;
    }
  }
}

TEST(Samplers, ModelCallsPerSampler) {
  NoiseSchedule s(SdConfig(R"("skip_prk_steps": true, "steps_offset": 1)"));
  const std::vector<std::pair<std::string, int>> expected = {
      {"ddpm", 10}, {"ddim", 10}, {"pndm", 11},     {"euler", 10},          {"euler_a", 10},
      {"heun", 19}, {"dpmpp_2m", 10}, {"dpmpp_2m_karras", 10}, {"unipc", 10}};
  for (const auto& [name, calls] : expected) {
    auto sampler = CreateSampler(name, &s, 10);
    ASSERT_TRUE(sampler.ok()) << name << ": " << sampler.status();
    EXPECT_EQ((*sampler)->num_calls(), calls) << name;
    EXPECT_EQ((*sampler)->call_index(), 0) << name;
  }
}

TEST(Samplers, PndmRungeKuttaWarmUpWithoutSkipPrkSteps) {
  // diffusers' default skip_prk_steps false: three Runge-Kutta steps of four calls each
  // (t, t - stride/2 twice, t - stride), then PLMS.
  NoiseSchedule s(ParseConfig("{}"));
  auto p = CreateSampler("pndm", &s, 4);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ((*p)->timesteps(),
            (std::vector<double>{750, 625, 625, 500, 500, 375, 375, 250, 250, 125, 125, 0, 0}));
  auto too_few = CreateSampler("pndm", &s, 3);
  ASSERT_FALSE(too_few.ok());
  EXPECT_NE(too_few.status().message().find("skip_prk_steps"), std::string::npos);
  // With skip_prk_steps the second timestep is repeated once (a two-call first step).
  NoiseSchedule skip(ParseConfig(R"({"skip_prk_steps": true})"));
  EXPECT_EQ((*CreateSampler("pndm", &skip, 4))->timesteps(), (std::vector<double>{750, 500, 500, 250, 0}));
}

TEST(Samplers, HeunRepeatsEveryTimestepButTheFirst) {
  NoiseSchedule s(SdConfig());
  auto h = CreateSampler("heun", &s, 3);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ((*h)->timesteps(), (std::vector<double>{999, 499.5, 499.5, 0, 0}));
  const std::vector<float>& sig = (*h)->sigmas();
  ASSERT_EQ(sig.size(), 6u);
  EXPECT_EQ(sig[0], s.sigmas()[999]);
  EXPECT_EQ(sig[1], sig[2]);
  EXPECT_EQ(sig[3], s.sigmas()[0]);
  EXPECT_EQ(sig[4], sig[3]);
  EXPECT_EQ(sig[5], 0.0f);
}

TEST(Samplers, KarrasSigmasEndpoints) {
  NoiseSchedule s(SdConfig(R"("use_karras_sigmas": true)"));
  const float sigma_min = s.sigmas().front(), sigma_max = s.sigmas().back();
  for (const char* name : {"euler", "heun", "dpmpp_2m", "dpmpp_2m_karras", "unipc"}) {
    auto sampler = CreateSampler(name, &s, 12);
    ASSERT_TRUE(sampler.ok()) << name;
    const std::vector<float>& sig = (*sampler)->sigmas();
    EXPECT_FLOAT_EQ(sig.front(), sigma_max) << name;
    EXPECT_FLOAT_EQ(sig[sig.size() - 2], sigma_min) << name;
    EXPECT_EQ(sig.back(), 0.0f) << name;
    EXPECT_NEAR((*sampler)->timesteps().front(), 999, 1e-3) << name;
    EXPECT_NEAR((*sampler)->timesteps().back(), 0, 1e-3) << name;
  }
  // Euler keeps fractional timesteps; the multistep samplers round them.
  auto euler = CreateSampler("euler", &s, 12);
  auto dpm = CreateSampler("dpmpp_2m", &s, 12);
  EXPECT_NE((*euler)->timesteps()[5], std::round((*euler)->timesteps()[5]));
  for (double t : (*dpm)->timesteps()) EXPECT_EQ(t, std::round(t));

  // dpmpp_2m_karras forces Karras sigmas whatever the config says; dpmpp_2m follows the config.
  NoiseSchedule plain(SdConfig());
  auto forced = CreateSampler("dpmpp_2m_karras", &plain, 12);
  auto unforced = CreateSampler("dpmpp_2m", &plain, 12);
  EXPECT_EQ((*forced)->sigmas(), (*CreateSampler("dpmpp_2m", &s, 12))->sigmas());
  EXPECT_NE((*forced)->sigmas(), (*unforced)->sigmas());
  // Euler's sigma_min / sigma_max keys move the Karras endpoints.
  NoiseSchedule ends(SdConfig(R"("use_karras_sigmas": true, "sigma_min": 0.1, "sigma_max": 10.0)"));
  auto moved = CreateSampler("euler", &ends, 5);
  EXPECT_FLOAT_EQ((*moved)->sigmas().front(), 10.0f);
  EXPECT_FLOAT_EQ((*moved)->sigmas()[4], 0.1f);
}

TEST(Samplers, InputScalingAndInitialNoise) {
  NoiseSchedule s(SdConfig());
  auto euler = CreateSampler("euler", &s, 10);
  const float sigma_max = s.sigmas().back();
  EXPECT_EQ((*euler)->init_noise_sigma(), sigma_max);  // linspace: the noisiest timestep is 999
  at::Tensor ones = at::ones({1, 4, 2, 2});
  EXPECT_TRUE(at::allclose((*euler)->ScaleModelInput(ones), ones / std::sqrt(sigma_max * sigma_max + 1.0)));
  NoiseSchedule leading(SdConfig(R"("timestep_spacing": "leading", "steps_offset": 1)"));
  auto euler_leading = CreateSampler("euler", &leading, 10);
  // leading: the first timestep (901) is not the noisiest, and diffusers starts from
  // sqrt(sigma^2 + 1) of the largest sigma of the grid.
  EXPECT_EQ((*euler_leading)->timesteps().front(), 901);
  const float first = (*euler_leading)->sigmas().front();
  EXPECT_EQ(first, leading.sigmas()[901]);
  EXPECT_NEAR((*euler_leading)->init_noise_sigma(), std::sqrt(first * first + 1.0), 1e-5);
  for (const char* name : {"ddpm", "ddim", "pndm", "dpmpp_2m", "unipc"}) {
    auto sampler = CreateSampler(name, &s, 10);
    EXPECT_EQ((*sampler)->init_noise_sigma(), 1.0) << name;
    EXPECT_TRUE((*sampler)->ScaleModelInput(ones).equal(ones)) << name;
  }
}

TEST(Samplers, AbsentKeysTakeEachSamplersDefault) {
  // clip_sample: DDIM clips x0 by default, Heun does not. With prediction_type sample and an output
  // of 5, one DDIM step lands on the clipped x0 (1) and Heun's single Euler step on 5.
  NoiseSchedule s(ParseConfig(R"({"prediction_type": "sample"})"));
  at::Tensor x = at::zeros({1, 1, 2, 2});
  at::Tensor out = at::full({1, 1, 2, 2}, 5.0f);
  RecordedNoise none;
  auto ddim = CreateSampler("ddim", &s, 1);
  EXPECT_TRUE(at::allclose((*ddim)->Step(out, x, none), at::ones_like(x)));
  auto heun = CreateSampler("heun", &s, 1);
  EXPECT_TRUE(at::allclose((*heun)->Step(out, x, none), out, 1e-5, 1e-5));
  // timestep_spacing: leading for DDIM, linspace for Euler.
  NoiseSchedule plain(ParseConfig("{}"));
  EXPECT_EQ((*CreateSampler("ddim", &plain, 4))->timesteps(), (std::vector<double>{750, 500, 250, 0}));
  EXPECT_EQ((*CreateSampler("euler", &plain, 4))->timesteps(), (std::vector<double>{999, 666, 333, 0}));
}

TEST(Samplers, UnsupportedSettingsNameKeyAndValue) {
  NoiseSchedule sample(ParseConfig(R"({"prediction_type": "sample"})"));
  for (const char* name : {"pndm", "euler_a"}) {
    auto sampler = CreateSampler(name, &sample, 10);
    ASSERT_FALSE(sampler.ok()) << name;
    EXPECT_NE(sampler.status().message().find("prediction_type"), std::string::npos) << sampler.status();
    EXPECT_NE(sampler.status().message().find("sample"), std::string::npos) << sampler.status();
    EXPECT_NE(sampler.status().message().find(name), std::string::npos) << sampler.status();
  }
  // diffusers refuses DPM-Solver (noise prediction) with a final sigma of zero.
  NoiseSchedule dpm(ParseConfig(R"({"algorithm_type": "dpmsolver"})"));
  auto refused = CreateSampler("dpmpp_2m", &dpm, 10);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("final_sigmas_type"), std::string::npos) << refused.status();
}

class SeededNoise : public NoiseSource {
 public:
  explicit SeededNoise(uint64_t seed) : gen_(at::make_generator<at::CPUGeneratorImpl>(seed)) {}
  at::Tensor Draw(at::IntArrayRef shape) override { return at::randn(shape, gen_, at::kFloat); }

 private:
  at::Generator gen_;
};

// Runs the stand-in model from the sampler's current position and sample `x` to the end, with
// seeded noise; returns the final latent and counts the model calls in `*calls` if given.
at::Tensor RunFrom(Sampler& s, at::Tensor x, uint64_t seed = 7, int* calls = nullptr) {
  SeededNoise noise(seed);
  int n = 0;
  while (!s.done()) {
    const double t = s.current_timestep();
    x = s.Step(StandInModel(s.ScaleModelInput(x), t), x, noise);
    ++n;
  }
  if (calls != nullptr) *calls = n;
  return x;
}

// Run to the end with the stand-in model and seeded noise; returns the final latent.
at::Tensor RunToEnd(Sampler& s, const at::Tensor& x_T, uint64_t seed = 7) {
  return RunFrom(s, x_T * s.init_noise_sigma(), seed);
}

TEST(Samplers, FirstOrderSolversAgreeWithDdim) {
  // DDIM with eta 0 is Euler's method on the probability flow ODE in x / sqrt(alpha-bar)
  // (Karras et al. 2022, section 4) and DPM-Solver-1 (Lu et al. 2022, eq. 3.7): on the same
  // timesteps all three reach the same final latent, up to float rounding.
  NoiseSchedule s(SdConfig(R"("timestep_spacing": "trailing", "clip_sample": false, "solver_order": 1)"));
  at::Tensor x_T = at::randn({2, 4, 4, 4}, at::make_generator<at::CPUGeneratorImpl>(3));
  auto ddim = CreateSampler("ddim", &s, 10);
  auto euler = CreateSampler("euler", &s, 10);
  auto dpm = CreateSampler("dpmpp_2m", &s, 10);
  EXPECT_EQ((*ddim)->timesteps(), (*euler)->timesteps());
  EXPECT_EQ((*ddim)->timesteps(), (*dpm)->timesteps());
  at::Tensor ddim_final = RunToEnd(**ddim, x_T);
  // Euler starts from the same point in its coordinates: x_VE = x_VP * sqrt(sigma^2 + 1).
  const float sigma0 = (*euler)->sigmas().front();
  at::Tensor euler_final = RunToEnd(**euler, x_T * std::sqrt(sigma0 * sigma0 + 1.0f) / (*euler)->init_noise_sigma());
  at::Tensor dpm_final = RunToEnd(**dpm, x_T);
  EXPECT_LT(RelError(euler_final, ddim_final), 1e-4);
  EXPECT_LT(RelError(dpm_final, ddim_final), 1e-4);
}

TEST(Samplers, EveryConfigurationRunsToAFiniteEnd) {
  // Paths the reference file does not cover: other spacings and prediction types, the cosine
  // schedule, third order, DPM-Solver's noise form and Heun-type update, UniPC's bh1 and noise
  // form, disabled correctors, Runge-Kutta PNDM.
  const std::vector<std::string> configs = {
      R"("timestep_spacing": "leading", "steps_offset": 1, "skip_prk_steps": true)",
      R"("prediction_type": "v_prediction", "timestep_spacing": "trailing")",
      R"("prediction_type": "sample", "timestep_spacing": "linspace", "clip_sample": false)",
      R"("beta_schedule": "squaredcos_cap_v2", "solver_order": 3, "solver_type": "heun", "lambda_min_clipped": -5.1)",
      R"("algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min", "solver_order": 3, "solver_type": "bh1", "predict_x0": false)",
      R"("solver_order": 3, "lower_order_final": false, "disable_corrector": [0, 1], "use_karras_sigmas": true, "euler_at_final": true, "final_sigmas_type": "sigma_min")",
      R"("solver_order": 3, "use_karras_sigmas": true, "final_sigmas_type": "sigma_min", "solver_type": "heun")",
  };
  for (const std::string& more : configs) {
    NoiseSchedule s(SdConfig(more));
    for (const std::string& name : SamplerNames()) {
      SCOPED_TRACE(name + " with " + more);
      for (int steps : {1, 4, 12, 25}) {
        SamplerOptions options;
        options.eta = 0.5;
        auto sampler = CreateSampler(name, &s, steps, options);
        if (!sampler.ok()) {  // a documented refusal names a config key
          EXPECT_NE(sampler.status().message().find("scheduler config"), std::string::npos) << sampler.status();
          continue;
        }
        at::Tensor x = RunToEnd(**sampler, at::randn({1, 4, 3, 3}, at::make_generator<at::CPUGeneratorImpl>(1)));
        EXPECT_TRUE((*sampler)->done());
        EXPECT_TRUE(x.isfinite().all().item<bool>()) << steps << " steps";
      }
    }
  }
}

// ---- Image to image (diffusers' StableDiffusionImg2ImgPipeline: get_timesteps, set_begin_index,
// prepare_latents' add_noise).

TEST(ImageToImage, StartStepIsDiffusersGetTimesteps) {
  // t_start = max(n - min(int(n * strength), n), 0).
  EXPECT_EQ(Sampler::ImageToImageStartStep(30, 0.75), 8);   // int(22.5) = 22
  EXPECT_EQ(Sampler::ImageToImageStartStep(30, 1.0), 0);
  EXPECT_EQ(Sampler::ImageToImageStartStep(50, 0.8), 10);
  EXPECT_EQ(Sampler::ImageToImageStartStep(10, 0.5), 5);
  EXPECT_EQ(Sampler::ImageToImageStartStep(100, 0.29), 72);  // 100 * 0.29 = 28.999999999999996
  EXPECT_EQ(Sampler::ImageToImageStartStep(3, 0.7), 1);      // 2.0999999999999996
  EXPECT_EQ(Sampler::ImageToImageStartStep(1, 1.0), 0);
  // No step left: the caller refuses these (StartAtStep(num_steps) is not allowed).
  EXPECT_EQ(Sampler::ImageToImageStartStep(30, 0.01), 30);
  EXPECT_EQ(Sampler::ImageToImageStartStep(1, 0.99), 1);
  // Outside (0, 1].
  EXPECT_EQ(Sampler::ImageToImageStartStep(30, 0.0), 30);
  EXPECT_EQ(Sampler::ImageToImageStartStep(30, -0.5), 30);
  EXPECT_EQ(Sampler::ImageToImageStartStep(30, std::nan("")), 30);
  EXPECT_EQ(Sampler::ImageToImageStartStep(30, 1.5), 0);
  EXPECT_EQ(Sampler::ImageToImageStartStep(30, 1e300), 0);
}

// The configurations the image-to-image tests run every sampler under.
const std::vector<std::string>& ImageToImageConfigs() {
  static const auto* configs = new std::vector<std::string>{
      R"("timestep_spacing": "leading", "steps_offset": 1, "skip_prk_steps": true, "set_alpha_to_one": false, "clip_sample": false)",
      R"("prediction_type": "v_prediction", "timestep_spacing": "trailing")",
      R"("timestep_spacing": "linspace", "use_karras_sigmas": true, "solver_order": 3)",
      R"("solver_order": 3, "lower_order_final": false, "disable_corrector": [0, 1, 5], "final_sigmas_type": "sigma_min", "solver_type": "heun")",
      R"("beta_schedule": "squaredcos_cap_v2", "lambda_min_clipped": -5.1, "algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min", "predict_x0": false)",
  };
  return *configs;
}

TEST(ImageToImage, StartAtStepLeavesDiffusersRemainingCalls) {
  // diffusers runs timesteps[t_start * order:] with set_begin_index(t_start * order); order is 2
  // for Heun and 1 for every other scheduler (PNDM included). The run ends done() with finite
  // values after exactly the remaining calls.
  for (const std::string& more : ImageToImageConfigs()) {
    NoiseSchedule s(SdConfig(more));
    for (const std::string& name : SamplerNames()) {
      for (int steps : {1, 4, 10, 16}) {
        SamplerOptions options;
        options.eta = 0.5;
        auto full = CreateSampler(name, &s, steps, options);
        if (!full.ok()) continue;  // a documented refusal (Samplers.EveryConfigurationRunsToAFiniteEnd)
        const int order = name == "heun" ? 2 : 1;
        EXPECT_EQ((*full)->order(), order) << name;
        EXPECT_EQ((*full)->num_steps(), steps) << name;
        EXPECT_EQ((*full)->first_call(), 0) << name;
        for (int k = 0; k < steps; ++k) {
          SCOPED_TRACE(name + ", " + std::to_string(steps) + " steps from step " + std::to_string(k) + ", " + more);
          auto sampler = CreateSampler(name, &s, steps, options);
          Sampler& sm = **sampler;
          sm.StartAtStep(k);
          EXPECT_EQ(sm.num_steps(), steps);
          EXPECT_EQ(sm.call_index(), k * order);
          EXPECT_EQ(sm.first_call(), k * order);
          EXPECT_FALSE(sm.done());
          // The full list is unchanged; the calls left are its tail.
          EXPECT_EQ(sm.timesteps(), (*full)->timesteps());
          EXPECT_EQ(sm.sigmas(), (*full)->sigmas());
          std::vector<double> remaining;
          at::Tensor x0 = at::randn({2, 4, 3, 3}, at::make_generator<at::CPUGeneratorImpl>(k + 1)).clamp(-1, 1);
          at::Tensor x = sm.AddNoise(x0, at::randn({2, 4, 3, 3}, at::make_generator<at::CPUGeneratorImpl>(99)));
          SeededNoise noise(5);
          while (!sm.done()) {
            remaining.push_back(sm.current_timestep());
            x = sm.Step(StandInModel(sm.ScaleModelInput(x), sm.current_timestep()), x, noise);
          }
          const std::vector<double> expected(sm.timesteps().begin() + k * order, sm.timesteps().end());
          EXPECT_EQ(remaining, expected);
          EXPECT_EQ(static_cast<int>(remaining.size()), sm.num_calls() - sm.first_call());
          EXPECT_EQ(sm.call_index(), sm.num_calls());
          EXPECT_TRUE(x.isfinite().all().item<bool>());
        }
      }
    }
  }
}

TEST(ImageToImage, StartAtStepRequirements) {
  NoiseSchedule s(SdConfig());
  auto sampler = CreateSampler("dpmpp_2m", &s, 10);
  EXPECT_THROW((*sampler)->StartAtStep(10), c10::Error);
  EXPECT_THROW((*sampler)->StartAtStep(-1), c10::Error);
  RecordedNoise none;
  at::Tensor x = at::zeros({1, 1, 2, 2});
  x = (*sampler)->Step(x, x, none);
  EXPECT_THROW((*sampler)->StartAtStep(3), c10::Error);  // not fresh
  auto last = CreateSampler("heun", &s, 10);
  (*last)->StartAtStep(9);
  EXPECT_EQ((*last)->num_calls() - (*last)->call_index(), 1);  // the final Euler step to 0
}

TEST(ImageToImage, AddNoiseIsEachSchedulersForwardProcess) {
  NoiseSchedule s(SdConfig(R"("timestep_spacing": "trailing", "skip_prk_steps": true)"));
  const at::Tensor x0 = at::randn({2, 4, 3, 3}, at::make_generator<at::CPUGeneratorImpl>(11));
  const at::Tensor noise = at::randn({2, 4, 3, 3}, at::make_generator<at::CPUGeneratorImpl>(12));
  for (const std::string& name : SamplerNames()) {
    for (int k : {0, 3, 7}) {
      SCOPED_TRACE(name + " from step " + std::to_string(k));
      auto sampler = CreateSampler(name, &s, 8);
      ASSERT_TRUE(sampler.ok()) << sampler.status();
      Sampler& sm = **sampler;
      sm.StartAtStep(k);
      const at::Tensor xt = sm.AddNoise(x0, noise);
      const double t = sm.current_timestep();
      if (name == "ddpm" || name == "ddim" || name == "pndm") {
        // sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, as NoiseSchedule::AddNoise (Ho et al. eq. 4).
        EXPECT_TRUE(xt.equal(s.AddNoise(x0, noise, at::full({2}, static_cast<int64_t>(t), at::kLong))));
        const double ab = s.alpha_bar(static_cast<int>(t));
        EXPECT_LT(RelError(xt, std::sqrt(ab) * x0 + std::sqrt(1 - ab) * noise), 1e-6);
        continue;
      }
      const float sigma = sm.sigmas()[sm.call_index()];
      if (name == "euler" || name == "euler_a" || name == "heun") {
        // diffusers: original_samples + noise * sigma, with sigma of begin_index.
        EXPECT_TRUE(xt.equal(x0 + noise * sigma));
        // The same point as the variance-preserving forward process at that (integer, trailing)
        // timestep, in the Euler family's coordinates x_VE = x_VP * sqrt(sigma^2 + 1).
        at::Tensor vp = s.AddNoise(x0, noise, at::full({2}, static_cast<int64_t>(t), at::kLong));
        EXPECT_LT(RelError(sm.ScaleModelInput(xt), vp), 1e-5);
      } else {
        // DPM-Solver, UniPC: alpha_t x0 + sigma_t noise, alpha_t = 1 / sqrt(sigma^2 + 1),
        // sigma_t = sigma alpha_t, which is the alpha-bar forward process at integer timesteps.
        const float alpha = 1.0f / std::sqrt(sigma * sigma + 1.0f);
        EXPECT_LT(RelError(xt, alpha * x0 + (sigma * alpha) * noise), 1e-6);
        if (name != "dpmpp_2m_karras") {  // Karras sigmas lie between the training timesteps
          EXPECT_LT(RelError(xt, s.AddNoise(x0, noise, at::full({2}, static_cast<int64_t>(t), at::kLong))), 1e-5);
        }
      }
    }
  }
}

TEST(ImageToImage, AddNoiseOfZeroAtStepZeroIsTheTextToImageStart) {
  // With x0 = 0 and no step skipped, the Euler family's img2img latent is the text-to-image one
  // (noise * init_noise_sigma) where the first timestep is the noisiest (linspace, trailing).
  NoiseSchedule s(SdConfig(R"("timestep_spacing": "trailing")"));
  const at::Tensor noise = at::randn({1, 4, 3, 3}, at::make_generator<at::CPUGeneratorImpl>(13));
  for (const char* name : {"euler", "euler_a", "heun"}) {
    auto sampler = CreateSampler(name, &s, 12);
    (*sampler)->StartAtStep(0);
    EXPECT_TRUE(at::allclose((*sampler)->AddNoise(at::zeros_like(noise), noise),
                             noise * (*sampler)->init_noise_sigma(), 1e-6, 0))
        << name;
  }
  // The alpha-bar samplers: sqrt(1 - abar) noise, within 1e-3 of the unit-variance start at t = 999.
  for (const char* name : {"ddim", "dpmpp_2m", "unipc"}) {
    auto sampler = CreateSampler(name, &s, 12);
    (*sampler)->StartAtStep(0);
    EXPECT_TRUE(at::allclose((*sampler)->AddNoise(at::zeros_like(noise), noise), noise, 0, 1e-2)) << name;
  }
}

TEST(ImageToImage, StartAtStepFreshStateWarmsUpAsDiffusers) {
  // After set_begin_index diffusers' multistep schedulers have no history: their first step is
  // first order, so it equals that of solver_order 1; the second one is not.
  const at::Tensor x = at::randn({1, 4, 3, 3}, at::make_generator<at::CPUGeneratorImpl>(14));
  for (const char* name : {"dpmpp_2m", "unipc"}) {
    NoiseSchedule two(SdConfig(R"("solver_order": 2)"));
    NoiseSchedule one(SdConfig(R"("solver_order": 1)"));
    auto a = CreateSampler(name, &two, 20);
    auto b = CreateSampler(name, &one, 20);
    (*a)->StartAtStep(6);
    (*b)->StartAtStep(6);
    RecordedNoise none;
    at::Tensor xa = (*a)->Step(StandInModel(x, (*a)->current_timestep()), x, none);
    at::Tensor xb = (*b)->Step(StandInModel(x, (*b)->current_timestep()), x, none);
    EXPECT_TRUE(xa.equal(xb)) << name;
    xa = (*a)->Step(StandInModel(xa, (*a)->current_timestep()), xa, none);
    xb = (*b)->Step(StandInModel(xb, (*b)->current_timestep()), xb, none);
    EXPECT_GT(RelError(xa, xb), 1e-6) << name;
  }
  // Heun starts at position 2k, s_k's second copy, with its first-order half: an Euler step from
  // s_k to s_{k+1}, the same as Euler's from step k.
  NoiseSchedule s(SdConfig());
  auto heun = CreateSampler("heun", &s, 10);
  auto euler = CreateSampler("euler", &s, 10);
  (*heun)->StartAtStep(4);
  (*euler)->StartAtStep(4);
  EXPECT_EQ((*heun)->current_timestep(), (*euler)->current_timestep());
  EXPECT_TRUE((*heun)->ScaleModelInput(x).equal((*euler)->ScaleModelInput(x)));
  RecordedNoise none;
  at::Tensor out = StandInModel((*euler)->ScaleModelInput(x), (*euler)->current_timestep());
  EXPECT_TRUE((*heun)->Step(out, x, none).equal((*euler)->Step(out, x, none)));
  EXPECT_EQ((*heun)->current_timestep(), (*euler)->current_timestep());  // t_5, Heun's second call
}

TEST(ImageToImage, PndmCountsItsCallsFromZero) {
  // diffusers' PNDM has no set_begin_index: its counter starts at 0 on timesteps[t_start:], so its
  // two-call warm-up step is taken on the first two remaining timesteps. skip_prk_steps with 4
  // steps: timesteps 750 500 500 250 0; from step 2 the calls are 500 (Euler 500 -> 250), 250
  // (the second half of the warm-up, from 500 to 250 with the mean of both outputs), 0.
  NoiseSchedule s(ParseConfig(R"({"skip_prk_steps": true, "clip_sample": false})"));
  auto p = CreateSampler("pndm", &s, 4);
  (*p)->StartAtStep(2);
  EXPECT_EQ(std::vector<double>((*p)->timesteps().begin() + 2, (*p)->timesteps().end()),
            (std::vector<double>{500, 250, 0}));
  // The same two calls as DDIM-style transfers (Liu et al. eq. 9) by hand.
  auto transfer = [&](const at::Tensor& x, int t, int prev, const at::Tensor& eps) {
    const double a = s.alpha_bar(t), ap = prev >= 0 ? s.alpha_bar(prev) : s.alpha_bar(0);
    return std::sqrt(ap / a) * x - (ap - a) * eps / (a * std::sqrt(1 - ap) + std::sqrt(a * (1 - a) * ap));
  };
  const at::Tensor x = at::randn({1, 4, 2, 2}, at::make_generator<at::CPUGeneratorImpl>(15));
  RecordedNoise none;
  const at::Tensor e0 = StandInModel(x, 500);
  const at::Tensor x1 = (*p)->Step(e0, x, none);
  EXPECT_LT(RelError(x1, transfer(x, 500, 250, e0)), 1e-5);
  const at::Tensor e1 = StandInModel(x1, 250);
  const at::Tensor x2 = (*p)->Step(e1, x1, none);
  EXPECT_LT(RelError(x2, transfer(x, 500, 250, (e0 + e1) / 2)), 1e-5);
  EXPECT_EQ((*p)->current_timestep(), 0);
}

TEST(ImageToImage, DdimRunMatchesDiffusersByHand) {
  // StableDiffusionImg2ImgPipeline with DDIMScheduler and Stable Diffusion's config (leading,
  // steps_offset 1, set_alpha_to_one false, clip_sample false), 10 steps, strength 0.5:
  // init_timestep = 5, t_start = 5, timesteps[5:] = 401 301 201 101 1, latents =
  // add_noise(x0, noise, 401), then DDIM (eta 0): x0_pred = (x - sqrt(1 - a) eps) / sqrt(a),
  // x = sqrt(a_prev) x0_pred + sqrt(1 - a_prev) eps, a_prev of t - 100 (abar_0 for the last).
  NoiseSchedule s(SdConfig(R"("timestep_spacing": "leading", "steps_offset": 1, "set_alpha_to_one": false, "clip_sample": false)"));
  auto ddim = CreateSampler("ddim", &s, 10);
  ASSERT_TRUE(ddim.ok());
  const int k = Sampler::ImageToImageStartStep(10, 0.5);
  ASSERT_EQ(k, 5);
  (*ddim)->StartAtStep(k);
  const at::Tensor x0 = at::tensor({0.8f, -0.3f, 0.1f, -1.2f}, at::kFloat).view({1, 1, 2, 2});
  const at::Tensor noise = at::tensor({-0.4f, 1.1f, 0.25f, -2.0f}, at::kFloat).view({1, 1, 2, 2});
  int calls = 0;
  at::Tensor got = RunFrom(**ddim, (*ddim)->AddNoise(x0, noise), 7, &calls);
  EXPECT_EQ(calls, 5);
  for (int64_t i = 0; i < 4; ++i) {
    const double ref_x0 = x0.flatten()[i].item<double>(), n = noise.flatten()[i].item<double>();
    double a = s.alpha_bar(401);
    double x = std::sqrt(a) * ref_x0 + std::sqrt(1 - a) * n;
    for (int t : {401, 301, 201, 101, 1}) {
      a = s.alpha_bar(t);
      const double a_prev = t - 100 >= 0 ? s.alpha_bar(t - 100) : s.alpha_bar(0);
      const double eps = 0.5 * x + 0.1 * std::sin(x) + 0.001 * t;
      const double pred = (x - std::sqrt(1 - a) * eps) / std::sqrt(a);
      x = std::sqrt(a_prev) * pred + std::sqrt(1 - a_prev) * eps;
    }
    EXPECT_NEAR(got.flatten()[i].item<double>(), x, 1e-5 * std::max(1.0, std::abs(x))) << i;
  }
}

}  // namespace
}  // namespace imagegen
