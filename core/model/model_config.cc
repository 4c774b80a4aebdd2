#include "core/model/model_config.h"

#include <algorithm>
#include <optional>
#include <string>
#include <type_traits>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/math/sampler_registry.h"

namespace imagegen {
namespace {

using json = nlohmann::json;

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

// latent_rgb: the preview projection, a matrix of 3 rows (R, G, B) of latent_channels numbers
// and a bias of 3. REQUIRES: c->latent_channels is set.
void ReadLatentRgb(const json& j, FieldReader& r, ModelConfig* config) {
  ModelConfig& c = *config;
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
  c.tokenizer_type = r.Get<std::string>("tokenizer.type");  // CreateTokenizer checks it
  c.vocab_file = r.Get<std::string>("tokenizer.vocab_file", std::string("vocab.txt"));
  if (r.status().ok() && (c.vocab_file.find('/') != std::string::npos || c.vocab_file.find("..") != std::string::npos)) {
    r.Fail("tokenizer.vocab_file", "must be a file name inside the bundle folder");
  }
  c.default_sampler = r.Get<std::string>("defaults.sampler");
  if (r.status().ok()) {
    const std::vector<std::string> names = SamplerNames();
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
  if (r.status().ok()) ReadLatentRgb(j, r, &c);
  c.exported_with_torch = r.Get<std::string>("exported_with.torch", std::string());
  if (!r.status().ok()) return r.status();
  return c;
}

const ModelConfig::SamplerSupport* ModelConfig::FindSampler(absl::string_view name) const {
  for (const SamplerSupport& s : samplers) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

std::vector<std::string> ModelConfig::SupportedSamplers() const {
  std::vector<std::string> names;
  for (const SamplerSupport& s : samplers) {
    if (s.refusal.empty()) names.push_back(s.name);
  }
  return names;
}

}  // namespace imagegen
