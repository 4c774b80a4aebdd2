// model.json: what a model bundle says about itself (docs/MODEL_BUNDLE.md). No LibTorch here, so
// that the server can read model configurations without the cost of torch headers.
#ifndef IMAGEGEN_CORE_MODEL_MODEL_CONFIG_H_
#define IMAGEGEN_CORE_MODEL_MODEL_CONFIG_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace imagegen {

// What model.json says. Plain data.
struct ModelConfig {
  std::string name;
  std::string description;
  int image_channels = 0;     // channels the VAE decoder produces (1 gray, 3 RGB)
  int default_width = 0;      // pixels
  int default_height = 0;
  int latent_channels = 0;
  int downsampling_factor = 0;  // image side / latent side
  int size_multiple = 0;        // width and height must be multiples of this
  double scaling_factor = 1.0;  // latents the sampler sees = VAE latents * scaling_factor
  int context_dim = 0;          // text encoder output width D
  int max_length = 0;           // text encoder length L, special tokens included
  std::string tokenizer_type;   // "word" (CreateTokenizer, tokenizer.h, knows the types)
  std::string vocab_file;       // a file in the bundle folder
  std::string default_sampler;
  int default_steps = 0;
  double default_guidance_scale = 0;
  // The torch version that wrote the TorchScript modules ("exported_with": {"torch": "2.1.0"});
  // empty when model.json does not say. A LibTorch older than it cannot read them.
  std::string exported_with_torch;
  // Linear latent-to-RGB preview: rgb = matrix [3 x C] * latent + bias, in [-1, 1].
  std::vector<float> latent_rgb_matrix;
  std::vector<float> latent_rgb_bias;

  // Set by ModelBundle::Load from the rest of the bundle, so that a request can be checked
  // against the model without LibTorch (ValidateJobRequest):
  // when the bundle has vae_encoder.pt (needed for image to image),
  bool has_vae_encoder = false;
  // scheduler_config.json's num_train_timesteps (the most steps any sampler can take),
  int num_train_timesteps = 0;
  // and the registered samplers (sampler_registry.h), in registry order, with what each makes of
  // the model's scheduler config: supported with at least `min_steps` steps (every count from
  // there to num_train_timesteps works), or refused for the reason the sampler gave.
  struct SamplerSupport {
    std::string name;
    int min_steps = 1;
    std::string refusal;  // empty: supported
  };
  std::vector<SamplerSupport> samplers;

  // The entry of sampler `name`; nullptr when no registered sampler has that name.
  const SamplerSupport* FindSampler(absl::string_view name) const;
  // The names of the supported samplers, in registry order.
  std::vector<std::string> SupportedSamplers() const;

  // Parses model.json; errors name `source` (the file) and the field.
  static absl::StatusOr<ModelConfig> FromJson(absl::string_view json_text, absl::string_view source);
};

}  // namespace imagegen

#endif  // IMAGEGEN_CORE_MODEL_MODEL_CONFIG_H_
