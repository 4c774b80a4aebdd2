#include "core/math/noise_schedule.h"

#include <cmath>
#include <type_traits>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/math/sigmas.h"

namespace imagegen {
namespace {

using json = nlohmann::json;

absl::Status KeyError(absl::string_view source, absl::string_view key, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": \"", key, "\" ", problem));
}

absl::Status Unsupported(absl::string_view source, absl::string_view key, const json& value,
                         absl::string_view supported) {
  return KeyError(source, key,
                  absl::StrCat("is ", value.dump(), ", which imagegen does not support; supported: ",
                               supported));
}

// Python's json module writes float('inf') as the bare token Infinity, which is not JSON. Quote
// the bare tokens NaN, Infinity and -Infinity outside strings so that the parser accepts them;
// ReadNumber turns them back into numbers.
std::string QuoteNonFiniteNumbers(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      out.push_back(c);
      if (c == '\\' && i + 1 < text.size()) {
        out.push_back(text[++i]);
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') in_string = true;
    bool replaced = false;
    for (absl::string_view token : {"-Infinity", "Infinity", "NaN"}) {
      if (text.substr(i, token.size()) == token) {
        absl::StrAppend(&out, "\"", token, "\"");
        i += token.size() - 1;
        replaced = true;
        break;
      }
    }
    if (!replaced) out.push_back(c);
  }
  return out;
}

// Reads an optional key into `out`; absent or null leaves it unchanged. A wrong JSON type is an
// error naming the key.
template <typename T>
absl::Status Read(const json& j, absl::string_view source, const char* key, T* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if constexpr (std::is_same_v<T, bool>) {
    if (!it->is_boolean()) return KeyError(source, key, absl::StrCat("must be true or false, got ", it->dump()));
    *out = it->get<bool>();
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!it->is_string()) return KeyError(source, key, absl::StrCat("must be a string, got ", it->dump()));
    *out = it->get<std::string>();
  } else if constexpr (std::is_integral_v<T>) {
    if (!it->is_number_integer()) return KeyError(source, key, absl::StrCat("must be an integer, got ", it->dump()));
    *out = it->get<T>();
  } else {
    static_assert(std::is_same_v<T, double>);
    if (it->is_number()) {
      *out = it->get<double>();
    } else if (it->is_string() && it->get<std::string>() == "Infinity") {
      *out = std::numeric_limits<double>::infinity();
    } else if (it->is_string() && it->get<std::string>() == "-Infinity") {
      *out = -std::numeric_limits<double>::infinity();
    } else if (it->is_string() && it->get<std::string>() == "NaN") {
      *out = std::numeric_limits<double>::quiet_NaN();
    } else {
      return KeyError(source, key, absl::StrCat("must be a number, got ", it->dump()));
    }
  }
  return absl::OkStatus();
}

template <typename T>
absl::Status Read(const json& j, absl::string_view source, const char* key, std::optional<T>* out) {
  T value{};
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (auto s = Read(j, source, key, &value); !s.ok()) return s;
  *out = value;
  return absl::OkStatus();
}

template <typename E>
absl::Status ReadOptionalEnum(const json& j, absl::string_view source, const char* key,
                              std::initializer_list<std::pair<const char*, E>> allowed, std::optional<E>* out) {
  std::optional<std::string> value;
  if (auto s = Read(j, source, key, &value); !s.ok()) return s;
  if (!value) return absl::OkStatus();
  std::vector<std::string> names;
  for (const auto& [name, e] : allowed) {
    if (*value == name) {
      *out = e;
      return absl::OkStatus();
    }
    names.push_back(name);
  }
  return Unsupported(source, key, json(*value), absl::StrJoin(names, ", "));
}

template <typename E>
absl::Status ReadEnum(const json& j, absl::string_view source, const char* key,
                      std::initializer_list<std::pair<const char*, E>> allowed, E* out) {
  std::optional<E> value;
  if (auto s = ReadOptionalEnum(j, source, key, allowed, &value); !s.ok()) return s;
  if (value) *out = *value;
  return absl::OkStatus();
}

// Keys that switch on diffusers features imagegen does not implement: only their off value is
// accepted.
absl::Status RequireOff(const json& j, absl::string_view source, const char* key) {
  bool on = false;
  if (auto s = Read(j, source, key, &on); !s.ok()) return s;
  if (on) return Unsupported(source, key, json(true), "false");
  return absl::OkStatus();
}

absl::Status RequireValue(const json& j, absl::string_view source, const char* key,
                          const char* only_value) {
  std::optional<std::string> value;
  if (auto s = Read(j, source, key, &value); !s.ok()) return s;
  if (value && *value != only_value) return Unsupported(source, key, json(*value), only_value);
  return absl::OkStatus();
}

absl::Status ReadNumberList(const json& j, absl::string_view source, const char* key,
                            std::vector<double>* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_array()) return KeyError(source, key, absl::StrCat("must be a list of numbers, got ", it->dump()));
  out->clear();
  for (const json& v : *it) {
    if (!v.is_number()) return KeyError(source, key, absl::StrCat("must be a list of numbers; holds ", v.dump()));
    out->push_back(v.get<double>());
  }
  return absl::OkStatus();
}

absl::Status ReadIntList(const json& j, absl::string_view source, const char* key, std::vector<int>* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_array()) return KeyError(source, key, absl::StrCat("must be a list of integers, got ", it->dump()));
  out->clear();
  for (const json& v : *it) {
    if (!v.is_number_integer()) return KeyError(source, key, absl::StrCat("must be a list of integers; holds ", v.dump()));
    out->push_back(v.get<int>());
  }
  return absl::OkStatus();
}

// Glide's cosine schedule (Nichol & Dhariwal 2021, eq. 17) discretised as diffusers'
// betas_for_alpha_bar: beta_i = min(1 - abar((i + 1) / N) / abar(i / N), 0.999), in float64.
std::vector<double> CosineBetas(int n) {
  auto alpha_bar = [](double t) {
    const double c = std::cos((t + 0.008) / 1.008 * M_PI / 2);
    return c * c;
  };
  std::vector<double> betas(n);
  for (int i = 0; i < n; ++i) {
    const double t1 = static_cast<double>(i) / n;
    const double t2 = static_cast<double>(i + 1) / n;
    betas[i] = std::min(1 - alpha_bar(t2) / alpha_bar(t1), 0.999);
  }
  return betas;
}

// The keys imagegen implements, into `config`; the first error.
absl::Status ReadKeys(const json& j, absl::string_view source, SchedulerConfig* config) {
  SchedulerConfig& c = *config;
  absl::Status s;
  auto check = [&](absl::Status st) {
    if (s.ok() && !st.ok()) s = st;
  };
  check(Read(j, source, "num_train_timesteps", &c.num_train_timesteps));
  check(Read(j, source, "beta_start", &c.beta_start));
  check(Read(j, source, "beta_end", &c.beta_end));
  check(ReadEnum(j, source, "beta_schedule",
                 {{"linear", BetaSchedule::kLinear},
                  {"scaled_linear", BetaSchedule::kScaledLinear},
                  {"squaredcos_cap_v2", BetaSchedule::kSquaredCosCapV2}},
                 &c.beta_schedule));
  check(ReadNumberList(j, source, "trained_betas", &c.trained_betas));
  check(ReadEnum(j, source, "prediction_type",
                 {{"epsilon", PredictionType::kEpsilon},
                  {"v_prediction", PredictionType::kVPrediction},
                  {"sample", PredictionType::kSample}},
                 &c.prediction_type));
  check(Read(j, source, "steps_offset", &c.steps_offset));
  check(ReadOptionalEnum(j, source, "timestep_spacing",
                 {{"leading", TimestepSpacing::kLeading},
                  {"trailing", TimestepSpacing::kTrailing},
                  {"linspace", TimestepSpacing::kLinspace}},
                 &c.timestep_spacing));
  check(Read(j, source, "clip_sample", &c.clip_sample));
  check(Read(j, source, "clip_sample_range", &c.clip_sample_range));
  check(Read(j, source, "set_alpha_to_one", &c.set_alpha_to_one));
  check(ReadOptionalEnum(j, source, "solver_type",
                 {{"midpoint", SolverType::kMidpoint},
                  {"heun", SolverType::kHeun},
                  {"logrho", SolverType::kLogrho},
                  {"bh1", SolverType::kBh1},
                  {"bh2", SolverType::kBh2}},
                 &c.solver_type));
  check(Read(j, source, "use_karras_sigmas", &c.use_karras_sigmas));
  check(Read(j, source, "sigma_min", &c.sigma_min));
  check(Read(j, source, "sigma_max", &c.sigma_max));
  check(Read(j, source, "skip_prk_steps", &c.skip_prk_steps));
  // diffusers itself maps "deis" to dpmsolver++ when a DEIS config reaches DPM-Solver.
  check(ReadEnum(j, source, "algorithm_type",
                 {{"dpmsolver++", DpmAlgorithm::kDpmSolverPlusPlus},
                  {"dpmsolver", DpmAlgorithm::kDpmSolver},
                  {"deis", DpmAlgorithm::kDpmSolverPlusPlus}},
                 &c.algorithm_type));
  check(Read(j, source, "solver_order", &c.solver_order));
  check(Read(j, source, "lower_order_final", &c.lower_order_final));
  check(Read(j, source, "euler_at_final", &c.euler_at_final));
  check(ReadEnum(j, source, "final_sigmas_type",
                 {{"zero", FinalSigmas::kZero}, {"sigma_min", FinalSigmas::kSigmaMin}},
                 &c.final_sigmas_type));
  check(Read(j, source, "lambda_min_clipped", &c.lambda_min_clipped));
  check(Read(j, source, "predict_x0", &c.predict_x0));
  check(ReadIntList(j, source, "disable_corrector", &c.disable_corrector));

  return s;
}

// Keys that switch on what imagegen does not implement: an error naming the key and value.
absl::Status RefuseUnimplemented(const json& j, absl::string_view source) {
  absl::Status s;
  auto check = [&](absl::Status st) {
    if (s.ok() && !st.ok()) s = st;
  };
  for (const char* key : {"thresholding", "rescale_betas_zero_snr", "use_lu_lambdas",
                          "use_exponential_sigmas", "use_beta_sigmas", "use_flow_sigmas",
                          "use_dynamic_shifting"}) {
    check(RequireOff(j, source, key));
  }
  check(RequireValue(j, source, "variance_type", "fixed_small"));
  check(RequireValue(j, source, "interpolation_type", "linear"));
  check(RequireValue(j, source, "timestep_type", "discrete"));
  if (auto it = j.find("solver_p"); it != j.end() && !it->is_null()) {
    check(Unsupported(source, "solver_p", *it, "null"));
  }
  return s;
}

// The values' ranges, and their agreement with each other.
absl::Status CheckRanges(const SchedulerConfig& c, absl::string_view source) {
  if (c.num_train_timesteps < 2 || c.num_train_timesteps > 100000) {
    return KeyError(source, "num_train_timesteps",
                    absl::StrCat("is ", c.num_train_timesteps, "; allowed 2..100000"));
  }
  if (!(c.beta_start > 0 && c.beta_start < 1)) {
    return KeyError(source, "beta_start", absl::StrCat("is ", c.beta_start, "; allowed (0, 1)"));
  }
  if (!(c.beta_end >= c.beta_start && c.beta_end < 1)) {
    return KeyError(source, "beta_end",
                    absl::StrCat("is ", c.beta_end, "; allowed [beta_start, 1)"));
  }
  if (!c.trained_betas.empty()) {
    if (static_cast<int>(c.trained_betas.size()) != c.num_train_timesteps) {
      return KeyError(source, "trained_betas",
                      absl::StrCat("has ", c.trained_betas.size(), " values; num_train_timesteps is ",
                                   c.num_train_timesteps));
    }
    for (double b : c.trained_betas) {
      if (!(b > 0 && b < 1)) {
        return KeyError(source, "trained_betas", absl::StrCat("holds ", b, "; allowed (0, 1)"));
      }
    }
  }
  if (!(c.clip_sample_range > 0)) {
    return KeyError(source, "clip_sample_range",
                    absl::StrCat("is ", c.clip_sample_range, "; must be > 0"));
  }
  if (c.steps_offset < 0 || c.steps_offset >= c.num_train_timesteps) {
    return KeyError(source, "steps_offset",
                    absl::StrCat("is ", c.steps_offset, "; allowed 0..num_train_timesteps-1"));
  }
  if (c.solver_order < 1 || c.solver_order > 3) {
    return KeyError(source, "solver_order", absl::StrCat("is ", c.solver_order, "; allowed 1..3"));
  }
  for (const auto& [key, v] : {std::pair{"sigma_min", c.sigma_min}, std::pair{"sigma_max", c.sigma_max}}) {
    if (v && !(*v > 0 && std::isfinite(*v))) {
      return KeyError(source, key, absl::StrCat("is ", *v, "; must be a positive number"));
    }
  }
  if (std::isnan(c.lambda_min_clipped)) {
    return KeyError(source, "lambda_min_clipped", "is NaN; must be a number or -Infinity");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<SchedulerConfig> SchedulerConfig::FromJson(absl::string_view json_text,
                                                          absl::string_view source) {
  json j = json::parse(QuoteNonFiniteNumbers(json_text), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(source, ": not valid JSON"));
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(source, ": must be a JSON object"));
  SchedulerConfig c;
  if (absl::Status s = ReadKeys(j, source, &c); !s.ok()) return s;
  if (absl::Status s = RefuseUnimplemented(j, source); !s.ok()) return s;
  if (absl::Status s = CheckRanges(c, source); !s.ok()) return s;
  return c;
}

NoiseSchedule::NoiseSchedule(const SchedulerConfig& config) : config_(config) {
  const int n = config.num_train_timesteps;
  // float32 throughout, as diffusers' schedulers compute them in __init__.
  at::Tensor betas;
  if (!config.trained_betas.empty()) {
    betas = at::tensor(config.trained_betas, at::kDouble).to(at::kFloat);
  } else {
    switch (config.beta_schedule) {
      case BetaSchedule::kLinear:
        betas = at::linspace(config.beta_start, config.beta_end, n, at::kFloat);
        break;
      case BetaSchedule::kScaledLinear:
        betas = at::linspace(std::sqrt(config.beta_start), std::sqrt(config.beta_end), n, at::kFloat)
                    .pow(2);
        break;
      case BetaSchedule::kSquaredCosCapV2:
        betas = at::tensor(CosineBetas(n), at::kDouble).to(at::kFloat);
        break;
    }
  }
  at::Tensor alphas_cumprod = at::cumprod(1.0 - betas, 0);
  betas_.assign(betas.data_ptr<float>(), betas.data_ptr<float>() + n);
  alphas_cumprod_.assign(alphas_cumprod.data_ptr<float>(), alphas_cumprod.data_ptr<float>() + n);
  sigmas_.resize(n);
  log_sigmas_.resize(n);
  for (int t = 0; t < n; ++t) {
    const float ab = alphas_cumprod_[t];
    sigmas_[t] = std::sqrt((1.0f - ab) / ab);
    log_sigmas_[t] = NumpyLogF32(sigmas_[t]);  // diffusers: np.log(float32 sigmas)
  }
}

std::vector<int64_t> NoiseSchedule::InferenceTimesteps(int num_steps, TimestepSpacing spacing) const {
  const int n = config_.num_train_timesteps;
  std::vector<int64_t> ts(num_steps);
  switch (spacing) {
    case TimestepSpacing::kLeading: {
      // (arange(0, num_steps) * (n // num_steps)).round()[::-1] + steps_offset
      const int64_t ratio = n / num_steps;
      for (int i = 0; i < num_steps; ++i) {
        ts[i] = static_cast<int64_t>(num_steps - 1 - i) * ratio + config_.steps_offset;
      }
      break;
    }
    case TimestepSpacing::kTrailing: {
      // round(arange(n, 0, -n / num_steps)) - 1
      const std::vector<double> grid = Arange(n, 0, -static_cast<double>(n) / num_steps);
      for (int i = 0; i < num_steps; ++i) {
        const double v = i < static_cast<int>(grid.size()) ? grid[i] : n - i * (static_cast<double>(n) / num_steps);
        ts[i] = static_cast<int64_t>(RoundHalfEven(v)) - 1;
      }
      break;
    }
    case TimestepSpacing::kLinspace: {
      // linspace(0, n - 1, num_steps).round()[::-1]
      const std::vector<double> grid = Linspace(0, n - 1, num_steps);
      for (int i = 0; i < num_steps; ++i) {
        ts[num_steps - 1 - i] = static_cast<int64_t>(RoundHalfEven(grid[i]));
      }
      break;
    }
  }
  return ts;
}

at::Tensor NoiseSchedule::AddNoise(const at::Tensor& x0, const at::Tensor& noise,
                                   const at::Tensor& t) const {
  at::Tensor ab = at::from_blob(const_cast<float*>(alphas_cumprod_.data()),
                                {static_cast<int64_t>(alphas_cumprod_.size())}, at::kFloat)
                      .index_select(0, t.to(at::kLong).flatten());
  std::vector<int64_t> shape(x0.dim(), 1);
  shape[0] = ab.size(0);
  ab = ab.view(shape).to(x0.device(), x0.scalar_type());
  return ab.sqrt() * x0 + (1.0 - ab).sqrt() * noise;
}

}  // namespace imagegen
