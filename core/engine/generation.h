// The tensor work of one job on a worker: text encoding, the batched denoising step,
// previews and the final decode. Everything that calls a model lives here.
#ifndef IMAGEGEN_CORE_ENGINE_GENERATION_H_
#define IMAGEGEN_CORE_ENGINE_GENERATION_H_

#include <functional>
#include <memory>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "core/engine/job.h"
#include "core/engine/pipeline.h"
#include "core/math/samplers.h"
#include "core/model/model_bundle.h"

namespace imagegen {

// Host <-> device copies that do not stall the device's queue. To a CUDA device: staged in
// pinned memory and copied without blocking (a plain copy from pageable memory waits for every
// kernel queued before it). From a CUDA device: into pinned memory, then a wait for the current
// stream only, there, where the result must leave the device. Elsewhere: plain copies.
at::Tensor HostToDevice(const at::Tensor& host, const at::Device& device);
at::Tensor DeviceToHost(const at::Tensor& tensor);

// Diffusers' force_upcast (AutoencoderKL.config.force_upcast), per decode: decodes `latents`
// with `decode` and, when the result has a value that is not finite (a VAE decoder overflowing
// in float16) and `decode_float32` is given, decodes them again with that. Returns the images
// as float32; `*upcast` says whether the second decode ran. Without `decode_float32` (the
// modules run in float32) nothing is checked and nothing waits on the device.
using DecodeFn = std::function<at::Tensor(const at::Tensor&)>;
at::Tensor DecodeWithUpcast(const at::Tensor& latents, const DecodeFn& decode, const DecodeFn& decode_float32,
                            bool* upcast);

// A decoded image as the VAE encoder takes it: [1, channels, H, W] in [-1, 1], converted to the
// model's channels (RGB to gray by BT.601 luma, gray to RGB by repetition; alpha dropped).
at::Tensor ImageToModelInput(const RasterImage& image, int channels);

// Draws image i's noise from its own generator seeded with seed + i, on the CPU, so that an
// image depends on its seed only: not on its batch, its neighbours or the device.
class PerImageNoise : public NoiseSource {
 public:
  PerImageNoise(uint64_t seed, int num_images, at::Device device);
  // REQUIRES: shape[0] == num_images.
  at::Tensor Draw(at::IntArrayRef shape) override;

 private:
  std::vector<at::Generator> generators_;
  at::Device device_;
};

// The reverse-process state of one job: its sampler, latents and text context. Owned by the
// worker that runs the job; not thread-safe. Latents stay float32 on the bundle's device in
// every precision: the UNet's input is cast to the bundle's dtype() for the call and its output
// back (the text context stays in dtype(), as the UNet takes it); the VAE runs in dtype() too,
// and a decode that overflows there is redone in float32 (DecodeWithUpcast). Methods may throw
// c10::Error / std::exception from the model; GenerationPipeline runs each through RunModelCall
// (model_failure.h), the one place they are caught, and fails the jobs of that call.
class Generation : public JobState {
 public:
  // Tokenizes and encodes the prompt (and the negative prompt for guidance) in one text encoder
  // call, and draws the initial latents. A request the sampler refuses (which validation at
  // admission rules out) is INVALID_ARGUMENT; a failing model call its ModelFailure.
  // `noise`, when given, replaces the per-image generators (PerImageNoise): tests replay the
  // latents and noise a reference run drew.
  static absl::StatusOr<std::unique_ptr<Generation>> Start(ModelBundle* model, const JobRequest& request,
                                                           std::unique_ptr<NoiseSource> noise = nullptr);
  // The same for several jobs of one model, with the text of all of them in one text encoder
  // call. One entry per request, in order. A failing text encoder fails every job of the call;
  // a failing image-to-image encode only its own job. Never throws.
  using NoiseFactory = std::function<std::unique_ptr<NoiseSource>(const JobRequest&)>;
  static std::vector<absl::StatusOr<std::unique_ptr<Generation>>> StartBatch(
      ModelBundle* model, const std::vector<const JobRequest*>& requests, const NoiseFactory& make_noise = {});

  // One denoising step for every generation in `batch`, all of the same model and latent shape:
  // one UNet call over all their rows with a per-row timestep, classifier-free guidance per job,
  // then each job's own sampler step. Returns the number of UNet rows.
  // REQUIRES: every generation is !done() and uses the same bundle.
  static int DenoiseStep(const std::vector<Generation*>& batch);

  bool done() const override { return sampler_->done(); }
  // Denoising steps done and to do (Sampler::steps_done); image to image counts only the steps
  // it runs.
  int steps_done() const override { return sampler_->steps_done(); }
  int total_steps() const override { return sampler_->steps_to_run(); }
  int rows() const override { return guided() ? 2 * num_images_ : num_images_; }
  std::vector<std::string> warnings() const override { return warnings_; }
  int vae_upcasts() const override { return vae_upcasts_; }
  const std::string& model_name() const { return model_->config().name; }

  // A preview of the current latents, one image per image of the image size in the request's
  // preview format: the linear latent-to-RGB projection upscaled (nearest), or with
  // preview_vae_decode the VAE decoder.
  absl::StatusOr<std::vector<EncodedImage>> Preview();
  // Decodes the final latents with the VAE and encodes one image per image in the request's
  // output format.
  absl::StatusOr<std::vector<EncodedImage>> Decode();

 private:
  Generation(ModelBundle* model, const JobRequest& request, std::unique_ptr<NoiseSource> noise);
  // Draws (or, for image to image, encodes and noises) the initial latents.
  void InitLatents(const JobRequest& request);
  bool guided() const { return guidance_scale_ != 1.0; }
  // The current latents through the VAE decoder: [N, c, H, W] float32 in [-1, 1] (about).
  at::Tensor DecodeLatents();
  absl::StatusOr<std::vector<EncodedImage>> EncodeAll(const at::Tensor& images, ImageFormat format,
                                                      int quality) const;

  ModelBundle* model_;  // Not owned.
  std::unique_ptr<Sampler> sampler_;
  std::unique_ptr<NoiseSource> noise_;  // PerImageNoise unless a test gave another
  double guidance_scale_;
  int num_images_;
  uint64_t seed_;
  bool preview_vae_decode_;
  ImageFormat preview_format_;
  int preview_quality_;
  ImageFormat output_format_;
  int output_quality_;
  std::vector<std::string> warnings_;
  int width_;
  int height_;
  at::Tensor latents_;  // [N, C, h, w], float32
  at::Tensor context_;  // [N or 2N, L, D] in the bundle's dtype: conditional rows, then unconditional
  int vae_upcasts_ = 0;  // decodes redone in float32
};

// The Pipeline of one worker over its model bundle replicas (not owned; they outlive it).
class GenerationPipeline : public Pipeline {
 public:
  explicit GenerationPipeline(std::vector<ModelBundle*> bundles) : bundles_(std::move(bundles)) {}

  std::vector<absl::StatusOr<std::unique_ptr<JobState>>> Start(
      const std::vector<const JobRequest*>& requests) override;
  absl::StatusOr<int> Step(const std::vector<JobState*>& batch) override;
  absl::StatusOr<std::vector<EncodedImage>> Preview(JobState& job) override;
  absl::StatusOr<std::vector<EncodedImage>> Finish(JobState& job) override;

 private:
  std::vector<ModelBundle*> bundles_;
};

}  // namespace imagegen

#endif  // IMAGEGEN_CORE_ENGINE_GENERATION_H_
