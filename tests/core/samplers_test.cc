// The noise schedule, the forward process and the samplers, against closed forms and against
// trajectories recorded from diffusers (tests/data/sampler_vectors.json).
#include "core/math/samplers.h"

#include <cmath>
#include <deque>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/math/noise_schedule.h"

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

std::string SamplerNameFor(const std::string& diffusers_class) {
  if (diffusers_class == "DDPMScheduler") return "ddpm";
  if (diffusers_class == "DDIMScheduler") return "ddim";
  return "";
}

TEST(Samplers, ReproduceDiffusersReferenceTrajectories) {
  std::ifstream in(std::string(IMAGEGEN_TEST_DATA_DIR) + "/sampler_vectors.json");
  ASSERT_TRUE(in) << "missing tests/data/sampler_vectors.json";
  json file = json::parse(in);
  int checked = 0;
  for (const json& c : file["cases"]) {
    const std::string name = SamplerNameFor(c["scheduler"]);
    if (name.empty()) continue;  // Other samplers arrive with their own issue.
    SCOPED_TRACE(c["name"].get<std::string>());
    NoiseSchedule schedule(ParseConfig(c["config"].dump()));
    SamplerOptions options;
    if (c["step_kwargs"].contains("eta")) options.eta = c["step_kwargs"]["eta"];
    auto sampler = CreateSampler(name, &schedule, c["num_inference_steps"], options);
    ASSERT_TRUE(sampler.ok()) << sampler.status();
    EXPECT_EQ((*sampler)->timesteps(), c["timesteps"].get<std::vector<int64_t>>());

    const std::vector<int64_t> shape = c["shape"];
    at::Tensor x = ToTensor(c["x_T"], shape) * (*sampler)->init_noise_sigma();
    double worst = 0;
    for (const json& step : c["steps"]) {
      RecordedNoise noise;
      for (const json& d : step["noise_draws"]) noise.Push(ToTensor(d, shape));
      const double t = static_cast<double>((*sampler)->current_timestep());
      ASSERT_EQ(t, step["t"].get<double>());
      at::Tensor x_in = (*sampler)->ScaleModelInput(x);
      at::Tensor out = 0.5 * x_in + 0.1 * at::sin(x_in) + 0.001 * t;  // the stand-in model
      x = (*sampler)->Step(out, x, noise);
      EXPECT_EQ(noise.remaining(), 0u) << "sampler drew less noise than diffusers did";
      worst = std::max(worst, RelError(x, ToTensor(step["x"], shape)));
    }
    EXPECT_TRUE((*sampler)->done());
    worst = std::max(worst, RelError(x, ToTensor(c["final"], shape)));
    EXPECT_LT(worst, 1e-5);
    std::cout << c["name"].get<std::string>() << ": max relative error " << worst << "\n";
    ++checked;
  }
  EXPECT_EQ(checked, 5);  // ddpm x2, ddim x3
}

}  // namespace
}  // namespace imagegen
