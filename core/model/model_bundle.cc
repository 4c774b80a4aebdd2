#include "core/model/model_bundle.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/math/samplers.h"

namespace imagegen {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

absl::StatusOr<std::string> ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path.string(), ": missing or unreadable"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Reads typed fields of a JSON object by dotted path, keeping the first error, which names the
// file and the field.
class FieldReader {
 public:
  FieldReader(const json& root, absl::string_view source) : root_(root), source_(source) {}

  const absl::Status& status() const { return status_; }

  template <typename T>
  T Get(const std::string& path, std::optional<T> fallback = std::nullopt) {
    const json* node = Find(path);
    if (node == nullptr) {
      if (fallback) return *fallback;
      Fail(path, "is missing");
      return T{};
    }
    if constexpr (std::is_same_v<T, std::string>) {
      if (!node->is_string()) return Fail(path, "must be a string, got " + node->dump()), T{};
    } else if constexpr (std::is_integral_v<T>) {
      if (!node->is_number_integer()) return Fail(path, "must be an integer, got " + node->dump()), T{};
    } else if constexpr (std::is_floating_point_v<T>) {
      if (!node->is_number()) return Fail(path, "must be a number, got " + node->dump()), T{};
    } else {  // std::vector<float>
      if (!node->is_array()) return Fail(path, "must be an array of numbers"), T{};
      for (const json& v : *node) {
        if (!v.is_number()) return Fail(path, "must be an array of numbers, got " + v.dump()), T{};
      }
    }
    return node->get<T>();
  }

  // A positive integer field within [lo, hi].
  int GetInt(const std::string& path, int lo, int hi) {
    int v = Get<int>(path);
    if (status_.ok() && (v < lo || v > hi)) Fail(path, absl::StrCat("is ", v, "; allowed ", lo, "..", hi));
    return v;
  }

  void Fail(const std::string& path, const std::string& problem) {
    if (status_.ok()) {
      status_ = absl::InvalidArgumentError(absl::StrCat(source_, ": field \"", path, "\" ", problem));
    }
  }

 private:
  const json* Find(const std::string& path) const {
    const json* node = &root_;
    for (absl::string_view part : absl::StrSplit(path, '.')) {
      if (!node->is_object()) return nullptr;
      auto it = node->find(std::string(part));
      if (it == node->end() || it->is_null()) return nullptr;
      node = &*it;
    }
    return node;
  }

  const json& root_;
  std::string source_;
  absl::Status status_;
};

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

}  // namespace

absl::StatusOr<ModelConfig> ModelConfig::FromJson(absl::string_view json_text,
                                                  absl::string_view source) {
  json j = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(source, ": not valid JSON"));
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(source, ": must be a JSON object"));
  FieldReader r(j, source);
  ModelConfig c;
  const int format_version = r.Get<int>("format_version", 1);
  if (r.status().ok() && format_version != 1) {
    r.Fail("format_version", absl::StrCat("is ", format_version, "; this imagegen reads 1"));
  }
  c.name = r.Get<std::string>("name");
  if (r.status().ok() && c.name.empty()) r.Fail("name", "is empty");
  c.description = r.Get<std::string>("description", std::string());
  c.image_channels = r.GetInt("image_channels", 1, 4);
  c.default_width = r.GetInt("default_width", 1, 16384);
  c.default_height = r.GetInt("default_height", 1, 16384);
  c.latent_channels = r.GetInt("latent_channels", 1, 64);
  c.downsampling_factor = r.GetInt("downsampling_factor", 1, 64);
  c.size_multiple = r.Get<int>("size_multiple", c.downsampling_factor);
  if (r.status().ok() && (c.size_multiple < 1 || c.size_multiple % c.downsampling_factor != 0)) {
    r.Fail("size_multiple", absl::StrCat("is ", c.size_multiple,
                                         "; must be a positive multiple of downsampling_factor"));
  }
  c.scaling_factor = r.Get<double>("scaling_factor");
  if (r.status().ok() && !(c.scaling_factor > 0)) {
    r.Fail("scaling_factor", absl::StrCat("is ", c.scaling_factor, "; must be > 0"));
  }
  c.context_dim = r.GetInt("text_encoder.context_dim", 1, 8192);
  c.max_length = r.GetInt("text_encoder.max_length", 2, 4096);
  c.tokenizer_type = r.Get<std::string>("tokenizer.type");
  if (r.status().ok() && c.tokenizer_type != "word") {
    r.Fail("tokenizer.type", absl::StrCat("is \"", c.tokenizer_type, "\"; supported: word"));
  }
  c.vocab_file = r.Get<std::string>("tokenizer.vocab_file", std::string("vocab.txt"));
  if (r.status().ok() && (c.vocab_file.find('/') != std::string::npos || c.vocab_file.find("..") != std::string::npos)) {
    r.Fail("tokenizer.vocab_file", "must be a file name inside the bundle folder");
  }
  c.default_sampler = r.Get<std::string>("defaults.sampler");
  if (r.status().ok()) {
    const auto& names = SamplerNames();
    if (std::find(names.begin(), names.end(), c.default_sampler) == names.end()) {
      r.Fail("defaults.sampler", absl::StrCat("is \"", c.default_sampler, "\"; supported: ",
                                              absl::StrJoin(names, ", ")));
    }
  }
  c.default_steps = r.GetInt("defaults.steps", 1, 10000);
  c.default_guidance_scale = r.Get<double>("defaults.guidance_scale");
  if (r.status().ok() && !(c.default_guidance_scale >= 1.0 && c.default_guidance_scale <= 30.0)) {
    r.Fail("defaults.guidance_scale", absl::StrCat("is ", c.default_guidance_scale, "; allowed [1, 30]"));
  }
  // The matrix is a list of 3 rows of latent_channels numbers.
  if (r.status().ok()) {
    auto it = j.find("latent_rgb");
    const json* m = (it != j.end() && it->is_object() && it->contains("matrix")) ? &(*it)["matrix"] : nullptr;
    if (m == nullptr || !m->is_array() || m->size() != 3) {
      r.Fail("latent_rgb.matrix", "must be 3 rows (R, G, B) of latent_channels numbers");
    } else {
      for (const json& row : *m) {
        if (!row.is_array() || static_cast<int>(row.size()) != c.latent_channels) {
          r.Fail("latent_rgb.matrix", absl::StrCat("rows must hold latent_channels (", c.latent_channels,
                                                   ") numbers, got ", row.dump()));
          break;
        }
        for (const json& v : row) {
          if (!v.is_number()) {
            r.Fail("latent_rgb.matrix", "must hold numbers, got " + v.dump());
            break;
          }
          c.latent_rgb_matrix.push_back(v.get<float>());
        }
      }
    }
    c.latent_rgb_bias = r.Get<std::vector<float>>("latent_rgb.bias");
    if (r.status().ok() && c.latent_rgb_bias.size() != 3) {
      r.Fail("latent_rgb.bias", absl::StrCat("has ", c.latent_rgb_bias.size(), " numbers; needs 3"));
    }
  }
  if (!r.status().ok()) return r.status();
  return c;
}

absl::StatusOr<std::unique_ptr<ModelBundle>> ModelBundle::Load(const std::string& dir_string,
                                                              const std::string& device) {
  const fs::path dir(dir_string);
  std::unique_ptr<ModelBundle> b(new ModelBundle());
  b->dir_ = dir_string;
  try {
    b->device_ = torch::Device(device);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("device \"", device, "\" is not a torch device: ", e.what()));
  }

  const fs::path model_json = dir / "model.json";
  auto model_text = ReadFile(model_json);
  if (!model_text.ok()) return model_text.status();
  auto config = ModelConfig::FromJson(*model_text, model_json.string());
  if (!config.ok()) return config.status();
  b->config_ = *std::move(config);
  const ModelConfig& c = b->config_;

  const fs::path scheduler_json = dir / "scheduler_config.json";
  auto scheduler_text = ReadFile(scheduler_json);
  if (!scheduler_text.ok()) return scheduler_text.status();
  auto scheduler = SchedulerConfig::FromJson(*scheduler_text, scheduler_json.string());
  if (!scheduler.ok()) return scheduler.status();
  b->schedule_ = std::make_unique<NoiseSchedule>(*scheduler);
  if (c.default_steps > b->schedule_->num_train_timesteps()) {
    return absl::InvalidArgumentError(absl::StrCat(model_json.string(), ": field \"defaults.steps\" is ",
                                                   c.default_steps, "; more than num_train_timesteps"));
  }

  const fs::path vocab = dir / c.vocab_file;
  auto vocab_text = ReadFile(vocab);
  if (!vocab_text.ok()) return vocab_text.status();
  auto tokenizer = WordTokenizer::Create(*vocab_text, c.max_length, vocab.string());
  if (!tokenizer.ok()) return tokenizer.status();
  b->tokenizer_ = *std::move(tokenizer);

  auto text_encoder = LoadModule(dir / "text_encoder.pt", b->device_);
  if (!text_encoder.ok()) return text_encoder.status();
  b->text_encoder_ = *std::move(text_encoder);
  auto unet = LoadModule(dir / "unet.pt", b->device_);
  if (!unet.ok()) return unet.status();
  b->unet_ = *std::move(unet);
  auto decoder = LoadModule(dir / "vae_decoder.pt", b->device_);
  if (!decoder.ok()) return decoder.status();
  b->vae_decoder_ = *std::move(decoder);
  if (fs::exists(dir / "vae_encoder.pt")) {
    auto encoder = LoadModule(dir / "vae_encoder.pt", b->device_);
    if (!encoder.ok()) return encoder.status();
    b->vae_encoder_ = *std::move(encoder);
    b->config_.has_vae_encoder = true;
  }

  // One probe call per module with the shapes model.json promises, so that a mismatched bundle
  // fails here, naming the file, rather than in the middle of a client's job.
  const int64_t h = c.default_height / c.downsampling_factor;
  const int64_t w = c.default_width / c.downsampling_factor;
  std::string file;
  try {
    c10::InferenceMode guard;
    auto opts = torch::TensorOptions().device(b->device_);
    file = (dir / "text_encoder.pt").string();
    at::Tensor ids = at::tensor(b->tokenizer_->Encode(""), opts.dtype(at::kLong)).unsqueeze(0);
    at::Tensor context = b->text_encoder_.forward({ids}).toTensor();
    if (auto s = CheckShape(context, {1, c.max_length, c.context_dim}, file, "output"); !s.ok()) return s;

    file = (dir / "unet.pt").string();
    at::Tensor latents = at::zeros({1, c.latent_channels, h, w}, opts.dtype(at::kFloat));
    at::Tensor out = b->unet_.forward({latents, at::full({1}, 500.0, opts.dtype(at::kFloat)), context}).toTensor();
    if (auto s = CheckShape(out, {1, c.latent_channels, h, w}, file, "output"); !s.ok()) return s;

    file = (dir / "vae_decoder.pt").string();
    at::Tensor image = b->vae_decoder_.forward({latents}).toTensor();
    if (auto s = CheckShape(image, {1, c.image_channels, c.default_height, c.default_width}, file, "output");
        !s.ok()) {
      return s;
    }
    if (b->vae_encoder_) {
      file = (dir / "vae_encoder.pt").string();
      at::Tensor mean = b->vae_encoder_->forward({image}).toTensor();
      if (auto s = CheckShape(mean, {1, c.latent_channels, h, w}, file, "output"); !s.ok()) return s;
    }
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": probe call with the shapes of model.json failed: ",
                                                   e.what()));
  }
  return b;
}

absl::StatusOr<std::vector<std::string>> FindBundleDirs(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return absl::NotFoundError(absl::StrCat(dir, ": not a folder"));
  if (fs::exists(fs::path(dir) / "model.json")) return std::vector<std::string>{dir};
  std::vector<std::string> out;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.is_directory() && fs::exists(entry.path() / "model.json")) out.push_back(entry.path().string());
  }
  std::sort(out.begin(), out.end());
  if (out.empty()) return absl::NotFoundError(absl::StrCat(dir, ": holds no model bundle (no model.json)"));
  return out;
}

}  // namespace imagegen
