#include "core/model/model_bundle.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/ir/ir.h>
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

absl::Status CheckDtype(const at::Tensor& got, at::ScalarType want, absl::string_view file) {
  if (got.scalar_type() != want) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": output is ", c10::toString(got.scalar_type()),
                                                   " for inputs in ", c10::toString(want),
                                                   "; the module must compute in its inputs' precision"));
  }
  return absl::OkStatus();
}

absl::StatusOr<torch::jit::Module> LoadModule(const fs::path& path, const torch::Device& device) {
  if (!fs::exists(path)) return absl::NotFoundError(absl::StrCat(path.string(), ": missing"));
  if (absl::Status s = CheckBundleFile(path); !s.ok()) return s;
  try {
    torch::jit::Module m = torch::jit::load(path.string(), device);
    m.eval();
    return m;
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), ": not a loadable TorchScript module: ", e.what()));
  }
}

// Replaces every float32 tensor constant in `block` (and the blocks inside it) by its cast to
// `dtype`. torch.jit.freeze turns a module's weights into such constants, which Module::to
// does not see. Before the module's first call only: a graph executor keeps the graph it ran.
void CastGraphConstants(torch::jit::Graph& graph, torch::jit::Block* block, at::ScalarType dtype) {
  std::vector<torch::jit::Node*> constants;
  for (torch::jit::Node* node : block->nodes()) {
    for (torch::jit::Block* inner : node->blocks()) CastGraphConstants(graph, inner, dtype);
    if (node->kind() != c10::prim::Constant) continue;
    auto value = torch::jit::toIValue(node->output());
    if (value && value->isTensor() && value->toTensor().scalar_type() == at::kFloat) constants.push_back(node);
  }
  for (torch::jit::Node* node : constants) {
    const at::Tensor cast = torch::jit::toIValue(node->output())->toTensor().to(dtype);
    torch::jit::WithInsertPoint before(node);
    torch::jit::Value* replacement = graph.insertConstant(cast);
    node->output()->replaceAllUsesWith(replacement);
    node->destroy();
  }
}

// Casts the float32 parameters, buffers and graph constants of `module` and its submodules to
// `dtype` (TorchScript's Module::to would cast integer buffers too).
void CastModule(torch::jit::Module& module, at::ScalarType dtype) {
  c10::InferenceMode normal_tensors(false);  // ordinary tensors, as loaded ones are, in any caller's mode
  for (at::Tensor p : module.parameters()) {
    if (p.scalar_type() == at::kFloat) p.set_data(p.to(dtype));
  }
  for (at::Tensor b : module.buffers()) {
    if (b.scalar_type() == at::kFloat) b.set_data(b.to(dtype));
  }
  for (const torch::jit::Module& m : module.modules()) {
    for (const torch::jit::Method& method : m.get_methods()) {
      std::shared_ptr<torch::jit::Graph> graph = method.graph();
      CastGraphConstants(*graph, graph->block(), dtype);
    }
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

absl::StatusOr<std::unique_ptr<ModelBundle>> ModelBundle::Load(const std::string& dir, const std::string& device,
                                                              Precision precision) {
  at::ScalarType dtype = at::kFloat;
  if (precision == Precision::kFloat16) dtype = at::kHalf;
  if (precision == Precision::kBfloat16) dtype = at::kBFloat16;
  if (precision != Precision::kFloat32) {
    // The CPU kernels of half precision are few and slow (no float16 convolution at all in
    // LibTorch 1.13): refused here rather than in the middle of a job.
    std::optional<torch::Device> parsed;
    try {
      parsed.emplace(device);
    } catch (const std::exception&) {
      // LoadAs names the bad device.
    }
    if (parsed && !parsed->is_cuda()) {
      return absl::InvalidArgumentError(absl::StrCat("--dtype ", PrecisionName(precision),
                                                     " needs a CUDA device; device \"", device,
                                                     "\" is not one; allowed on ", device, ": float32"));
    }
  }
  return LoadAs(dir, device, precision, dtype);
}

absl::StatusOr<std::unique_ptr<ModelBundle>> ModelBundle::LoadForTest(const std::string& dir, at::ScalarType dtype) {
  Precision precision = Precision::kFloat32;
  if (dtype == at::kHalf) precision = Precision::kFloat16;
  if (dtype == at::kBFloat16) precision = Precision::kBfloat16;
  return LoadAs(dir, "cpu", precision, dtype);
}

absl::StatusOr<std::unique_ptr<ModelBundle>> ModelBundle::LoadAs(const std::string& dir, const std::string& device,
                                                                Precision precision, at::ScalarType dtype) {
  std::unique_ptr<ModelBundle> b(new ModelBundle());
  b->dir_ = dir;
  try {
    b->device_ = torch::Device(device);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("device \"", device, "\" is not a torch device: ", e.what()));
  }
  b->precision_ = precision;
  b->dtype_ = dtype;
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
  if (dtype_ != at::kFloat) {
    // A second copy of the decoder file, left in float32, for the decodes whose output overflows
    // in reduced precision (diffusers' force_upcast). Loaded again rather than cloned: a clone
    // of a frozen module may share its graph, whose constants are cast below.
    auto decoder32 = LoadModule(dir / "vae_decoder.pt", device_);
    if (!decoder32.ok()) return decoder32.status();
    vae_decoder_float32_ = *std::move(decoder32);
    try {
      CastModule(text_encoder_, dtype_);
      CastModule(unet_, dtype_);
      CastModule(vae_decoder_, dtype_);
      if (vae_encoder_) CastModule(*vae_encoder_, dtype_);
    } catch (const std::exception& e) {
      return absl::InvalidArgumentError(absl::StrCat(dir_, ": the modules could not be cast to ",
                                                     PrecisionName(precision_), ": ", e.what()));
    }
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
    if (auto s = CheckDtype(context, dtype_, file); !s.ok()) return s;

    // Timesteps stay float32 in every precision (Generation::DenoiseStep).
    file = (dir / "unet.pt").string();
    at::Tensor latents = at::zeros({1, c.latent_channels, h, w}, opts.dtype(dtype_));
    at::Tensor out = unet_.forward({latents, at::full({1}, 500.0, opts.dtype(at::kFloat)), context}).toTensor();
    if (auto s = CheckShape(out, {1, c.latent_channels, h, w}, file, "output"); !s.ok()) return s;
    if (auto s = CheckDtype(out, dtype_, file); !s.ok()) return s;

    file = (dir / "vae_decoder.pt").string();
    at::Tensor image = vae_decoder_.forward({latents}).toTensor();
    if (auto s = CheckShape(image, {1, c.image_channels, c.default_height, c.default_width}, file, "output");
        !s.ok()) {
      return s;
    }
    if (auto s = CheckDtype(image, dtype_, file); !s.ok()) return s;
    if (vae_encoder_) {
      file = (dir / "vae_encoder.pt").string();
      at::Tensor mean = vae_encoder_->forward({image}).toTensor();
      if (auto s = CheckShape(mean, {1, c.latent_channels, h, w}, file, "output"); !s.ok()) return s;
      if (auto s = CheckDtype(mean, dtype_, file); !s.ok()) return s;
    }
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        file, ": probe call with the shapes of model.json failed", dtype_ == at::kFloat ? "" : " in ",
        dtype_ == at::kFloat ? "" : c10::toString(dtype_),
        dtype_ == at::kFloat ? "" : " (a module that computes in float32 whatever its input runs only in float32)",
        ": ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace imagegen
