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
  std::string tokenizer_type;   // "word"
  std::string vocab_file;
  std::string default_sampler;
  int default_steps = 0;
  double default_guidance_scale = 0;
  // Linear latent-to-RGB preview: rgb = matrix [3 x C] * latent + bias, in [-1, 1].
  std::vector<float> latent_rgb_matrix;
  std::vector<float> latent_rgb_bias;
  // Set by ModelBundle::Load when the bundle has vae_encoder.pt (needed for image to image).
  bool has_vae_encoder = false;

  // Errors name `source` (the file) and the field.
  static absl::StatusOr<ModelConfig> FromJson(absl::string_view json_text, absl::string_view source);
};

}  // namespace imagegen

#endif  // IMAGEGEN_CORE_MODEL_MODEL_CONFIG_H_
