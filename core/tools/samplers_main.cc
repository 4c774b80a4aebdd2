// imagegen-samplers: checks imagegen's samplers against reference trajectories.
//
//   imagegen-samplers verify FILE.json
//
// FILE.json has the format of tests/data/sampler_vectors.json (see tests/data/README.md): cases
// of a diffusers scheduler class, its config, a step count, the starting latent, and the latent
// after every model call, computed with an elementwise stand-in model. Each case runs through
// imagegen's own sampler of the same name with the same stand-in model and the recorded noise
// draws. One line per case, then "N passed, M failed"; exit status 1 if any case failed (a case
// whose scheduler, config or step arguments imagegen does not support fails, with the reason).
#include <algorithm>
#include <cmath>
#include <deque>
#include <fstream>
#include <iostream>
#include <string>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/math/noise_schedule.h"
#include "core/math/samplers.h"

namespace imagegen {
namespace {

using json = nlohmann::json;

constexpr double kBar = 1e-5;  // the reference's bar on max |x - ref| / max(1, |ref|)
constexpr char kStandInModel[] = "0.5*x_in + 0.1*sin(x_in) + 0.001*t";

// Replays the standard-normal draws the reference recorded for one model call.
class RecordedNoise : public NoiseSource {
 public:
  void Push(at::Tensor t) { draws_.push_back(std::move(t)); }
  at::Tensor Draw(at::IntArrayRef shape) override {
    if (draws_.empty()) {
      ++overdrawn_;
      return at::zeros(shape);
    }
    at::Tensor t = draws_.front();
    draws_.pop_front();
    return t.view(shape);
  }
  size_t remaining() const { return draws_.size(); }
  int overdrawn() const { return overdrawn_; }

 private:
  std::deque<at::Tensor> draws_;
  int overdrawn_ = 0;
};

// The imagegen sampler that mirrors a diffusers scheduler class with this config (the registry,
// core/math/sampler_registry.h, knows which).
absl::StatusOr<std::string> SamplerFor(const std::string& diffusers_class, const json& config) {
  const auto it = config.find("use_karras_sigmas");
  const bool karras = it != config.end() && it->is_boolean() && it->get<bool>();
  if (const SamplerEntry* entry = FindSamplerForScheduler(diffusers_class, karras)) return std::string(entry->name);
  return absl::InvalidArgumentError(absl::StrCat("scheduler class \"", diffusers_class,
                                                 "\" has no imagegen sampler"));
}

absl::StatusOr<at::Tensor> ToTensor(const json& values, const std::vector<int64_t>& shape) {
  if (!values.is_array()) return absl::InvalidArgumentError("a latent is not a list of numbers");
  std::vector<float> v;
  v.reserve(values.size());
  for (const json& x : values) {
    if (!x.is_number()) return absl::InvalidArgumentError("a latent holds a value that is not a number");
    v.push_back(x.get<float>());
  }
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  if (static_cast<int64_t>(v.size()) != numel) {
    return absl::InvalidArgumentError(absl::StrCat("a latent has ", v.size(), " values; shape needs ", numel));
  }
  return at::from_blob(v.data(), shape, at::kFloat).clone();
}

// max |x - ref| / max(1, |ref|).
double RelError(const at::Tensor& x, const at::Tensor& ref) {
  return ((x - ref).abs() / ref.abs().clamp_min(1.0)).max().item<double>();
}

double RelError(double x, double ref) { return std::abs(x - ref) / std::max(1.0, std::abs(ref)); }

struct CaseResult {
  std::string sampler = "?";
  double max_error = 0;  // over every step's latent and the final one
  bool ran = false;      // false: the case could not be run (unsupported, malformed)
  std::string failure;   // empty: passed
};

// Runs one case; a returned error is a case that could not be run at all.
absl::Status RunCase(const json& c, CaseResult* r) {
  const json& config = c.at("config");
  auto sampler_name = SamplerFor(c.at("scheduler").get<std::string>(), config);
  if (!sampler_name.ok()) return sampler_name.status();
  r->sampler = *sampler_name;

  auto parsed = SchedulerConfig::FromJson(config.dump(), "config");
  if (!parsed.ok()) return parsed.status();
  NoiseSchedule schedule(*parsed);

  SamplerOptions options;
  const json step_kwargs = c.value("step_kwargs", json::object());
  for (const auto& [key, value] : step_kwargs.items()) {
    if (key == "eta" && value.is_number()) {
      options.eta = value.get<double>();
    } else {
      return absl::InvalidArgumentError(absl::StrCat("step argument \"", key, "\": ", value.dump(),
                                                     " is not supported"));
    }
  }
  auto sampler = CreateSampler(r->sampler, &schedule, c.at("num_inference_steps").get<int>(), options);
  if (!sampler.ok()) return sampler.status();
  Sampler& s = **sampler;

  const std::vector<int64_t> shape = c.at("shape").get<std::vector<int64_t>>();
  const json& steps = c.at("steps");
  const std::vector<double> ref_timesteps = c.at("timesteps").get<std::vector<double>>();
  if (s.num_calls() != static_cast<int>(steps.size()) || ref_timesteps.size() != steps.size()) {
    return absl::InternalError(absl::StrCat("imagegen makes ", s.num_calls(), " model calls; the reference ",
                                            steps.size()));
  }
  auto add_failure = [&](const std::string& what) {
    if (r->failure.empty()) r->failure = what;
  };
  for (size_t i = 0; i < ref_timesteps.size(); ++i) {
    if (RelError(s.timesteps()[i], ref_timesteps[i]) > kBar) {
      add_failure(absl::StrCat("timestep of call ", i, " is ", s.timesteps()[i], "; reference ", ref_timesteps[i]));
    }
  }
  if (c.contains("sigmas")) {
    const std::vector<double> ref_sigmas = c.at("sigmas").get<std::vector<double>>();
    if (ref_sigmas.size() != s.sigmas().size()) {
      add_failure(absl::StrCat(s.sigmas().size(), " sigmas; reference ", ref_sigmas.size()));
    } else {
      for (size_t i = 0; i < ref_sigmas.size(); ++i) {
        if (RelError(s.sigmas()[i], ref_sigmas[i]) > kBar) {
          add_failure(absl::StrCat("sigma ", i, " is ", s.sigmas()[i], "; reference ", ref_sigmas[i]));
        }
      }
    }
  }
  if (RelError(s.init_noise_sigma(), c.at("init_noise_sigma").get<double>()) > kBar) {
    add_failure(absl::StrCat("init_noise_sigma is ", s.init_noise_sigma(), "; reference ",
                             c.at("init_noise_sigma").get<double>()));
  }

  auto x_t = ToTensor(c.at("x_T"), shape);
  if (!x_t.ok()) return x_t.status();
  at::Tensor x = *x_t * s.init_noise_sigma();
  for (size_t i = 0; i < steps.size(); ++i) {
    const json& step = steps[i];
    RecordedNoise noise;
    for (const json& d : step.at("noise_draws")) {
      auto draw = ToTensor(d, shape);
      if (!draw.ok()) return draw.status();
      noise.Push(*draw);
    }
    const double t = s.current_timestep();
    at::Tensor x_in = s.ScaleModelInput(x);
    if (step.contains("x_in_scale_check")) {
      const std::vector<float> check = step.at("x_in_scale_check").get<std::vector<float>>();
      at::Tensor head = x_in.flatten().slice(0, 0, static_cast<int64_t>(check.size()));
      at::Tensor ref = at::tensor(check, at::kFloat);
      if (RelError(head, ref) > kBar) add_failure(absl::StrCat("scaled model input of call ", i, " differs"));
    }
    at::Tensor out = 0.5 * x_in + 0.1 * at::sin(x_in) + 0.001 * t;  // the stand-in model
    x = s.Step(out, x, noise);
    if (noise.overdrawn() > 0 || noise.remaining() > 0) {
      add_failure(absl::StrCat("call ", i, " drew ", step.at("noise_draws").size() - noise.remaining() +
                                                         noise.overdrawn(),
                               " noise tensors; reference ", step.at("noise_draws").size()));
    }
    auto ref = ToTensor(step.at("x"), shape);
    if (!ref.ok()) return ref.status();
    r->max_error = std::max(r->max_error, RelError(x, *ref));
  }
  auto final_ref = ToTensor(c.at("final"), shape);
  if (!final_ref.ok()) return final_ref.status();
  r->max_error = std::max(r->max_error, RelError(x, *final_ref));
  r->ran = true;
  if (!(r->max_error <= kBar)) add_failure(absl::StrFormat("error %.3g is over the bar %g", r->max_error, kBar));
  return absl::OkStatus();
}

int Verify(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    std::cerr << "imagegen-samplers: cannot read " << path << "\n";
    return 2;
  }
  json file = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (file.is_discarded() || !file.is_object() || !file.contains("cases") || !file["cases"].is_array()) {
    std::cerr << "imagegen-samplers: " << path << " is not a JSON object with a \"cases\" list\n";
    return 2;
  }
  // Only the stand-in model imagegen knows can be replayed.
  std::string model = file.value("model", "");
  model.erase(std::remove(model.begin(), model.end(), ' '), model.end());
  std::string known = kStandInModel;
  known.erase(std::remove(known.begin(), known.end(), ' '), known.end());
  const bool model_known = model.find(known) != std::string::npos;

  int passed = 0, failed = 0;
  for (const json& c : file["cases"]) {
    const std::string name = c.is_object() ? c.value("name", "(unnamed)") : "(not an object)";
    CaseResult r;
    absl::Status status;
    if (!model_known) {
      status = absl::InvalidArgumentError(absl::StrCat("model \"", file.value("model", ""),
                                                       "\" is not the stand-in model ", kStandInModel));
    } else {
      try {
        status = RunCase(c, &r);
      } catch (const std::exception& e) {  // a missing key or a LibTorch error
        status = absl::InternalError(e.what());
      }
    }
    if (!status.ok()) r.failure = std::string(status.message());
    const bool ok = r.failure.empty();
    const std::string error = r.ran ? absl::StrFormat("%.3e", r.max_error) : "n/a";
    std::cout << absl::StrFormat("%-32s %-16s max_rel_error %-9s  %s", name, r.sampler, error,
                                 ok ? "PASS" : "FAIL")
              << (ok ? "" : absl::StrCat("  (", r.failure, ")")) << "\n";
    (ok ? passed : failed)++;
  }
  std::cout << passed << " passed, " << failed << " failed\n";
  return failed == 0 ? 0 : 1;
}

}  // namespace
}  // namespace imagegen

int main(int argc, char** argv) {
  if (argc != 3 || std::string(argv[1]) != "verify") {
    std::cerr << "usage: imagegen-samplers verify FILE.json\n"
                 "  Runs every case of a sampler reference file (tests/data/sampler_vectors.json format)\n"
                 "  through imagegen's samplers and reports each case's maximum relative error.\n";
    return 2;
  }
  return imagegen::Verify(argv[2]);
}
