#include "core/model/model_bundle.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include <torch/version.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/model/bundle_dirs.h"
#include "absl/strings/str_join.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "core/math/samplers.h"

namespace imagegen {
namespace {

namespace fs = std::filesystem;

std::string ShapeString(const at::Tensor& t) {
  return absl::StrCat("[", absl::StrJoin(t.sizes(), ", "), "]");
}

absl::Status CheckShape(const at::Tensor& got, const std::vector<int64_t>& want,
                        absl::string_view file, absl::string_view what) {
  if (got.sizes() != at::IntArrayRef(want)) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": ", what, " has shape ", ShapeString(got),
                                                   "; model.json implies [", absl::StrJoin(want, ", "), "]"));
  }
  return absl::OkStatus();
}

absl::StatusOr<torch::jit::Module> LoadModule(const fs::path& path, const torch::Device& device) {
  if (!fs::exists(path)) return absl::NotFoundError(absl::StrCat(path.string(), ": missing"));
  try {
    torch::jit::Module m = torch::jit::load(path.string(), device);
    m.eval();
    return m;
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), ": not a loadable TorchScript module: ", e.what()));
  }
}

// What each registered sampler makes of `schedule`: refused (at the most steps, so the refusal
// is the config's), or supported from the fewest steps it accepts.
std::vector<ModelConfig::SamplerSupport> SamplerSupportOf(const NoiseSchedule& schedule) {
  std::vector<ModelConfig::SamplerSupport> out;
  const int most = schedule.num_train_timesteps();
  for (const SamplerEntry& entry : SamplerRegistry()) {
    ModelConfig::SamplerSupport support{entry.name, 1, ""};
    if (auto at_most = CreateSampler(entry.name, &schedule, most); !at_most.ok()) {
      support.refusal = std::string(at_most.status().message());
    } else {
      while (support.min_steps < most && !CreateSampler(entry.name, &schedule, support.min_steps).ok()) {
        ++support.min_steps;
      }
    }
    out.push_back(std::move(support));
  }
  return out;
}

// TorchScript written by a newer torch than this LibTorch may use operators or a file format it
// does not know: refuse it at load, saying so, instead of failing inside torch::jit::load or,
// worse, in the middle of a client's job.
absl::Status CheckExportedWith(const std::string& version, const std::string& model_json) {
  if (version.empty()) return absl::OkStatus();
  int major = 0, minor = 0;
  const std::vector<std::string> parts = absl::StrSplit(version, absl::MaxSplits('.', 2));
  if (parts.size() < 2 || !absl::SimpleAtoi(parts[0], &major) ||
      !absl::SimpleAtoi(parts[1].substr(0, parts[1].find_first_not_of("0123456789")), &minor)) {
    return absl::InvalidArgumentError(absl::StrCat(model_json, ": field \"exported_with.torch\" is \"", version,
                                                   "\"; expected a torch version such as \"2.1.0\""));
  }
  if (major > TORCH_VERSION_MAJOR || (major == TORCH_VERSION_MAJOR && minor > TORCH_VERSION_MINOR)) {
    return absl::FailedPreconditionError(absl::StrCat(
        model_json, ": the bundle's TorchScript was written by torch ", version, ", newer than this server's LibTorch ",
        TORCH_VERSION, "; export it with torch ", TORCH_VERSION_MAJOR, ".", TORCH_VERSION_MINOR,
        " or older (models/convert/convert_sd.py runs with Debian's python3-torch), or serve it with a LibTorch of at "
        "least ", major, ".", minor));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelBundle>> ModelBundle::Load(const std::string& dir,
                                                              const std::string& device) {
  std::unique_ptr<ModelBundle> b(new ModelBundle());
  b->dir_ = dir;
  try {
    b->device_ = torch::Device(device);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("device \"", device, "\" is not a torch device: ", e.what()));
  }
  if (absl::Status s = b->ReadConfigs(); !s.ok()) return s;
  auto tokenizer = CreateTokenizer(b->config_, dir);
  if (!tokenizer.ok()) return tokenizer.status();
  b->tokenizer_ = *std::move(tokenizer);
  if (absl::Status s = b->LoadModules(); !s.ok()) return s;
  if (absl::Status s = b->Probe(); !s.ok()) return s;
  return b;
}

absl::Status ModelBundle::ReadConfigs() {
  const fs::path dir(dir_);
  const fs::path model_json = dir / "model.json";
  auto model_text = ReadBundleFile(model_json);
  if (!model_text.ok()) return model_text.status();
  auto config = ModelConfig::FromJson(*model_text, model_json.string());
  if (!config.ok()) return config.status();
  config_ = *std::move(config);

  const fs::path scheduler_json = dir / "scheduler_config.json";
  auto scheduler_text = ReadBundleFile(scheduler_json);
  if (!scheduler_text.ok()) return scheduler_text.status();
  auto scheduler = SchedulerConfig::FromJson(*scheduler_text, scheduler_json.string());
  if (!scheduler.ok()) return scheduler.status();
  schedule_ = std::make_unique<NoiseSchedule>(*scheduler);
  config_.num_train_timesteps = schedule_->num_train_timesteps();
  config_.samplers = SamplerSupportOf(*schedule_);

  // The defaults must make a request the model takes.
  const ModelConfig::SamplerSupport* sampler = config_.FindSampler(config_.default_sampler);
  if (!sampler->refusal.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(model_json.string(), ": field \"defaults.sampler\" is \"",
                                                   config_.default_sampler, "\", which scheduler_config.json does not "
                                                   "support: ", sampler->refusal));
  }
  if (config_.default_steps < sampler->min_steps || config_.default_steps > config_.num_train_timesteps) {
    return absl::InvalidArgumentError(absl::StrCat(model_json.string(), ": field \"defaults.steps\" is ",
                                                   config_.default_steps, "; sampler ", sampler->name, " allows ",
                                                   sampler->min_steps, "..", config_.num_train_timesteps));
  }
  return absl::OkStatus();
}

absl::Status ModelBundle::LoadModules() {
  const fs::path dir(dir_);
  if (absl::Status s = CheckExportedWith(config_.exported_with_torch, (dir / "model.json").string()); !s.ok()) {
    return s;
  }
  auto text_encoder = LoadModule(dir / "text_encoder.pt", device_);
  if (!text_encoder.ok()) return text_encoder.status();
  text_encoder_ = *std::move(text_encoder);
  auto unet = LoadModule(dir / "unet.pt", device_);
  if (!unet.ok()) return unet.status();
  unet_ = *std::move(unet);
  auto decoder = LoadModule(dir / "vae_decoder.pt", device_);
  if (!decoder.ok()) return decoder.status();
  vae_decoder_ = *std::move(decoder);
  if (fs::exists(dir / "vae_encoder.pt")) {
    auto encoder = LoadModule(dir / "vae_encoder.pt", device_);
    if (!encoder.ok()) return encoder.status();
    vae_encoder_ = *std::move(encoder);
    config_.has_vae_encoder = true;
  }
  return absl::OkStatus();
}

absl::Status ModelBundle::Probe() {
  // One probe call per module with the shapes model.json promises, so that a mismatched bundle
  // fails here, naming the file, rather than in the middle of a client's job.
  const fs::path dir(dir_);
  const ModelConfig& c = config_;
  const int64_t h = c.default_height / c.downsampling_factor;
  const int64_t w = c.default_width / c.downsampling_factor;
  std::string file;
  try {
    c10::InferenceMode guard;
    auto opts = torch::TensorOptions().device(device_);
    file = (dir / "text_encoder.pt").string();
    at::Tensor ids = at::tensor(tokenizer_->Encode(""), opts.dtype(at::kLong)).unsqueeze(0);
    at::Tensor context = text_encoder_.forward({ids}).toTensor();
    if (auto s = CheckShape(context, {1, c.max_length, c.context_dim}, file, "output"); !s.ok()) return s;

    file = (dir / "unet.pt").string();
    at::Tensor latents = at::zeros({1, c.latent_channels, h, w}, opts.dtype(at::kFloat));
    at::Tensor out = unet_.forward({latents, at::full({1}, 500.0, opts.dtype(at::kFloat)), context}).toTensor();
    if (auto s = CheckShape(out, {1, c.latent_channels, h, w}, file, "output"); !s.ok()) return s;

    file = (dir / "vae_decoder.pt").string();
    at::Tensor image = vae_decoder_.forward({latents}).toTensor();
    if (auto s = CheckShape(image, {1, c.image_channels, c.default_height, c.default_width}, file, "output");
        !s.ok()) {
      return s;
    }
    if (vae_encoder_) {
      file = (dir / "vae_encoder.pt").string();
      at::Tensor mean = vae_encoder_->forward({image}).toTensor();
      if (auto s = CheckShape(mean, {1, c.latent_channels, h, w}, file, "output"); !s.ok()) return s;
    }
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": probe call with the shapes of model.json failed: ",
                                                   e.what()));
  }
  return absl::OkStatus();
}

}  // namespace imagegen
