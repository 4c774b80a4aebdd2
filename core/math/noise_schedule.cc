#include "core/math/noise_schedule.h"

#include <cmath>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace imagegen {
namespace {

using json = nlohmann::json;

absl::Status KeyError(absl::string_view source, absl::string_view key, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": \"", key, "\" ", problem));
}

// Reads an optional number/bool/string key into `out`; a wrong JSON type is an error naming it.
template <typename T>
absl::Status ReadOptional(const json& j, absl::string_view source, const char* key, T* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if constexpr (std::is_same_v<T, bool>) {
    if (!it->is_boolean()) return KeyError(source, key, absl::StrCat("must be true or false, got ", it->dump()));
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!it->is_string()) return KeyError(source, key, absl::StrCat("must be a string, got ", it->dump()));
  } else if constexpr (std::is_integral_v<T>) {
    if (!it->is_number_integer()) return KeyError(source, key, absl::StrCat("must be an integer, got ", it->dump()));
  } else {
    if (!it->is_number()) return KeyError(source, key, absl::StrCat("must be a number, got ", it->dump()));
  }
  *out = it->get<T>();
  return absl::OkStatus();
}

template <typename E>
absl::Status ReadEnum(const json& j, absl::string_view source, const char* key,
                      std::initializer_list<std::pair<const char*, E>> allowed, E* out) {
  std::string value;
  if (auto s = ReadOptional(j, source, key, &value); !s.ok()) return s;
  if (value.empty()) return absl::OkStatus();
  std::vector<std::string> names;
  for (const auto& [name, e] : allowed) {
    if (value == name) {
      *out = e;
      return absl::OkStatus();
    }
    names.push_back(name);
  }
  return KeyError(source, key,
                  absl::StrCat("is \"", value, "\", which imagegen does not support; supported: ",
                               absl::StrJoin(names, ", ")));
}

}  // namespace

absl::StatusOr<SchedulerConfig> SchedulerConfig::FromJson(absl::string_view json_text,
                                                          absl::string_view source) {
  json j = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(source, ": not valid JSON"));
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(source, ": must be a JSON object"));

  SchedulerConfig c;
  absl::Status s;
  auto check = [&](absl::Status st) {
    if (s.ok() && !st.ok()) s = st;
  };
  check(ReadOptional(j, source, "num_train_timesteps", &c.num_train_timesteps));
  check(ReadOptional(j, source, "beta_start", &c.beta_start));
  check(ReadOptional(j, source, "beta_end", &c.beta_end));
  check(ReadEnum(j, source, "beta_schedule",
                 {{"linear", BetaSchedule::kLinear}, {"scaled_linear", BetaSchedule::kScaledLinear}},
                 &c.beta_schedule));
  check(ReadEnum(j, source, "prediction_type",
                 {{"epsilon", PredictionType::kEpsilon},
                  {"v_prediction", PredictionType::kVPrediction},
                  {"sample", PredictionType::kSample}},
                 &c.prediction_type));
  check(ReadOptional(j, source, "clip_sample", &c.clip_sample));
  check(ReadOptional(j, source, "clip_sample_range", &c.clip_sample_range));
  check(ReadOptional(j, source, "set_alpha_to_one", &c.set_alpha_to_one));
  check(ReadOptional(j, source, "steps_offset", &c.steps_offset));
  check(ReadEnum(j, source, "timestep_spacing",
                 {{"leading", TimestepSpacing::kLeading},
                  {"trailing", TimestepSpacing::kTrailing},
                  {"linspace", TimestepSpacing::kLinspace}},
                 &c.timestep_spacing));
  if (!s.ok()) return s;

  // Keys that change the mathematics and that imagegen does not implement yet.
  if (auto it = j.find("trained_betas"); it != j.end() && !it->is_null()) {
    return KeyError(source, "trained_betas", "is not supported yet; use beta_schedule");
  }
  bool thresholding = false;
  if (auto st = ReadOptional(j, source, "thresholding", &thresholding); !st.ok()) return st;
  if (thresholding) return KeyError(source, "thresholding", "is true, which imagegen does not support");
  std::string variance_type = "fixed_small";
  if (auto st = ReadOptional(j, source, "variance_type", &variance_type); !st.ok()) return st;
  if (variance_type != "fixed_small") {
    return KeyError(source, "variance_type",
                    absl::StrCat("is \"", variance_type, "\"; supported: fixed_small"));
  }

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
  if (!(c.clip_sample_range > 0)) {
    return KeyError(source, "clip_sample_range",
                    absl::StrCat("is ", c.clip_sample_range, "; must be > 0"));
  }
  if (c.steps_offset < 0 || c.steps_offset >= c.num_train_timesteps) {
    return KeyError(source, "steps_offset",
                    absl::StrCat("is ", c.steps_offset, "; allowed 0..num_train_timesteps-1"));
  }
  return c;
}

NoiseSchedule::NoiseSchedule(const SchedulerConfig& config) : config_(config) {
  const int n = config.num_train_timesteps;
  // float32 throughout, as diffusers' DDPMScheduler.__init__ computes them.
  at::Tensor betas;
  switch (config.beta_schedule) {
    case BetaSchedule::kLinear:
      betas = at::linspace(config.beta_start, config.beta_end, n, at::kFloat);
      break;
    case BetaSchedule::kScaledLinear:
      betas = at::linspace(std::sqrt(config.beta_start), std::sqrt(config.beta_end), n, at::kFloat)
                  .pow(2);
      break;
  }
  at::Tensor alphas_cumprod = at::cumprod(1.0 - betas, 0);
  betas_.assign(betas.data_ptr<float>(), betas.data_ptr<float>() + n);
  alphas_cumprod_.assign(alphas_cumprod.data_ptr<float>(), alphas_cumprod.data_ptr<float>() + n);
}

std::vector<int64_t> NoiseSchedule::InferenceTimesteps(int num_steps) const {
  const int n = config_.num_train_timesteps;
  std::vector<int64_t> ts(num_steps);
  switch (config_.timestep_spacing) {
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
      const double ratio = static_cast<double>(n) / num_steps;
      for (int i = 0; i < num_steps; ++i) {
        ts[i] = static_cast<int64_t>(std::nearbyint(n - i * ratio)) - 1;
      }
      break;
    }
    case TimestepSpacing::kLinspace: {
      // linspace(0, n - 1, num_steps).round()[::-1]
      // numpy's linspace: start + i * step, with the last value exactly the stop.
      const double step = num_steps == 1 ? 0.0 : static_cast<double>(n - 1) / (num_steps - 1);
      for (int i = 0; i < num_steps; ++i) {
        const double v = (i == num_steps - 1 && num_steps > 1) ? n - 1 : i * step;
        ts[num_steps - 1 - i] = static_cast<int64_t>(std::nearbyint(v));
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
