// A model bundle: the folder that holds one latent diffusion model (docs/MODEL_BUNDLE.md).
//
//   model.json             name, sizes, scaling factor, tokenizer, defaults, preview matrix
//   scheduler_config.json  diffusers' scheduler keys (core/math/noise_schedule.h)
//   vocab.txt              the tokenizer's vocabulary (word tokenizer; CreateTokenizer)
//   text_encoder.pt        ids int64 [B, L]                            -> context [B, L, D]
//   unet.pt                latents [B, C, h, w], t float [B], context  -> model output [B, C, h, w]
//   vae_decoder.pt         latents / scaling_factor                    -> image [B, c, H, W] in [-1, 1]
//   vae_encoder.pt         image in [-1, 1]                            -> latent mean (optional)
#ifndef IMAGEGEN_CORE_MODEL_MODEL_BUNDLE_H_
#define IMAGEGEN_CORE_MODEL_MODEL_BUNDLE_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <torch/script.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/math/noise_schedule.h"
#include "core/model/bundle_dirs.h"
#include "core/model/model_config.h"
#include "core/model/precision.h"
#include "core/model/tokenizer.h"

namespace imagegen {

// One loaded model: its configuration, schedule, tokenizer and TorchScript modules, on one device
// and in one precision. Immutable after Load. The modules' forward() may be called from one
// thread at a time per bundle (a worker owns its bundle replica).
class ModelBundle {
 public:
  // Loads and checks the bundle in `dir` onto `device` ("cpu", "cuda:0") in `precision`: every
  // file present, every JSON field valid, and one probe call per module, in that precision, with
  // the shapes model.json promises. Errors name the file and the field or shape at fault.
  // float16 and bfloat16 need a CUDA device: on any other they are INVALID_ARGUMENT. The modules
  // are cast at load (their parameters, buffers and, for frozen modules, the weights their
  // graphs hold as constants); modules that compute in float32 whatever their input (the
  // models/train ones) fail the probe in another precision.
  static absl::StatusOr<std::unique_ptr<ModelBundle>> Load(const std::string& dir,
                                                          const std::string& device = "cpu",
                                                          Precision precision = Precision::kFloat32);
  // Load on the CPU with the modules cast to `dtype`, any floating type (float64 too), without
  // Load's refusal of reduced precision on the CPU: the tests' way to run the casts of a
  // reduced-precision bundle on a machine without a GPU. precision() is the Precision of
  // `dtype` (kFloat32 for float64).
  static absl::StatusOr<std::unique_ptr<ModelBundle>> LoadForTest(const std::string& dir, at::ScalarType dtype);

  const ModelConfig& config() const { return config_; }
  const NoiseSchedule& schedule() const { return *schedule_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const std::string& dir() const { return dir_; }
  const torch::Device& device() const { return device_; }
  Precision precision() const { return precision_; }
  // The modules' floating-point type: what their inputs are cast to (context, latents, images)
  // and what their outputs come in. Timesteps stay float32 (see Generation::DenoiseStep).
  torch::ScalarType dtype() const { return dtype_; }

  torch::jit::Module& text_encoder() { return text_encoder_; }
  torch::jit::Module& unet() { return unet_; }
  torch::jit::Module& vae_decoder() { return vae_decoder_; }
  // The VAE decoder in float32, loaded only when dtype() is not float32: a decode whose output
  // in reduced precision is not finite is redone with it (diffusers' force_upcast). nullptr
  // when dtype() is float32.
  torch::jit::Module* vae_decoder_float32() { return vae_decoder_float32_ ? &*vae_decoder_float32_ : nullptr; }
  bool has_vae_encoder() const { return vae_encoder_.has_value(); }
  // REQUIRES: has_vae_encoder().
  torch::jit::Module& vae_encoder() { return *vae_encoder_; }

 private:
  ModelBundle() : device_(torch::kCPU) {}
  static absl::StatusOr<std::unique_ptr<ModelBundle>> LoadAs(const std::string& dir, const std::string& device,
                                                            Precision precision, at::ScalarType dtype);
  // The steps of Load: model.json and scheduler_config.json (with what each sampler makes of
  // the latter), the TorchScript modules, and one probe call per module.
  absl::Status ReadConfigs();
  absl::Status LoadModules();
  absl::Status Probe();

  std::string dir_;
  ModelConfig config_;
  std::unique_ptr<NoiseSchedule> schedule_;
  std::unique_ptr<Tokenizer> tokenizer_;
  torch::Device device_;
  Precision precision_ = Precision::kFloat32;
  torch::ScalarType dtype_ = torch::kFloat;
  torch::jit::Module text_encoder_;
  torch::jit::Module unet_;
  torch::jit::Module vae_decoder_;
  std::optional<torch::jit::Module> vae_encoder_;
  std::optional<torch::jit::Module> vae_decoder_float32_;
};

}  // namespace imagegen

#endif  // IMAGEGEN_CORE_MODEL_MODEL_BUNDLE_H_
