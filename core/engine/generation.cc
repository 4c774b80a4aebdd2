#include "core/engine/generation.h"

#include <c10/core/Stream.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <torch/script.h>

#include "absl/strings/str_cat.h"
#include "core/engine/model_failure.h"
#include "core/image/image_codec.h"

namespace imagegen {

at::Tensor HostToDevice(const at::Tensor& host, const at::Device& device) {
  if (!device.is_cuda()) return host.to(device);
  // The pinned block stays reserved until the copy has run (the host allocator records it on
  // the stream), so `pinned` may go out of scope at once.
  at::Tensor pinned = host.is_pinned() ? host : host.pin_memory();
  return pinned.to(device, /*non_blocking=*/true);
}

at::Tensor DeviceToHost(const at::Tensor& tensor) {
  if (!tensor.is_cuda()) return tensor.cpu();
  at::Tensor host = at::empty(tensor.sizes(), tensor.options().device(at::kCPU).pinned_memory(true));
  host.copy_(tensor, /*non_blocking=*/true);
  // Waits for this worker's stream only (the one the copy was queued on), not the whole device.
  c10::impl::VirtualGuardImpl(tensor.device().type()).getStream(tensor.device()).synchronize();
  return host;
}

at::Tensor DecodeWithUpcast(const at::Tensor& latents, const DecodeFn& decode, const DecodeFn& decode_float32,
                            bool* upcast) {
  *upcast = false;
  at::Tensor images = decode(latents);
  // One wait on the device per decode, only in reduced precision; the images leave the device
  // right after anyway.
  if (decode_float32 && !at::isfinite(images).all().item<bool>()) {
    images = decode_float32(latents.to(at::kFloat));
    *upcast = true;
  }
  return images.to(at::kFloat);
}

PerImageNoise::PerImageNoise(uint64_t seed, int num_images, at::Device device) : device_(device) {
  generators_.reserve(num_images);
  for (int i = 0; i < num_images; ++i) {
    generators_.push_back(at::make_generator<at::CPUGeneratorImpl>(seed + static_cast<uint64_t>(i)));
  }
}

at::Tensor PerImageNoise::Draw(at::IntArrayRef shape) {
  std::vector<int64_t> row_shape(shape.begin(), shape.end());
  row_shape[0] = 1;
  std::vector<at::Tensor> rows;
  rows.reserve(generators_.size());
  for (auto& g : generators_) rows.push_back(at::randn(row_shape, g, at::kFloat));
  return HostToDevice(at::cat(rows, 0), device_);
}

at::Tensor ImageToModelInput(const RasterImage& image, int channels) {
  // [H, W, c] bytes -> [1, c, H, W] in [-1, 1].
  at::Tensor t = at::from_blob(const_cast<uint8_t*>(image.pixels.data()),
                               {image.height, image.width, image.channels}, at::kByte)
                     .to(at::kFloat)
                     .permute({2, 0, 1})
                     .unsqueeze(0);
  if (image.channels == 2 || image.channels == 4) t = t.narrow(1, 0, image.channels - 1);  // drop alpha
  const int64_t have = t.size(1);
  if (have == 3 && channels == 1) {
    // ITU-R BT.601 luma, as PIL's convert("L").
    t = 0.299 * t.narrow(1, 0, 1) + 0.587 * t.narrow(1, 1, 1) + 0.114 * t.narrow(1, 2, 1);
  } else if (have == 1 && channels == 3) {
    t = t.expand({1, 3, image.height, image.width});
  }
  return (t / 127.5 - 1.0).contiguous();
}

Generation::Generation(ModelBundle* model, const JobRequest& request, std::unique_ptr<NoiseSource> noise)
    : model_(model),
      noise_(noise ? std::move(noise)
                   : std::make_unique<PerImageNoise>(request.seed, request.num_images, model->device())),
      guidance_scale_(request.guidance_scale),
      num_images_(request.num_images),
      seed_(request.seed),
      preview_vae_decode_(request.preview_vae_decode),
      preview_format_(request.preview_format),
      preview_quality_(request.preview_quality),
      output_format_(request.output_format),
      output_quality_(request.output_quality),
      width_(request.width),
      height_(request.height) {}

absl::StatusOr<std::unique_ptr<Generation>> Generation::Start(ModelBundle* model, const JobRequest& request,
                                                              std::unique_ptr<NoiseSource> noise) {
  NoiseFactory make_noise;
  if (noise) make_noise = [&noise](const JobRequest&) { return std::move(noise); };
  return std::move(StartBatch(model, {&request}, make_noise).front());
}

std::vector<absl::StatusOr<std::unique_ptr<Generation>>> Generation::StartBatch(
    ModelBundle* model, const std::vector<const JobRequest*>& requests, const NoiseFactory& make_noise) {
  const ModelConfig& c = model->config();
  std::vector<absl::StatusOr<std::unique_ptr<Generation>>> out;
  std::vector<Generation*> started;
  std::vector<int64_t> ids;  // every prompt row of every started job
  for (const JobRequest* request : requests) {
    auto sampler = CreateSampler(request->sampler, &model->schedule(), request->steps);
    if (!sampler.ok()) {
      out.push_back(sampler.status());
      continue;
    }
    std::unique_ptr<Generation> g(new Generation(model, *request, make_noise ? make_noise(*request) : nullptr));
    g->sampler_ = *std::move(sampler);
    // The conditional prompt, and for guidance the negative (unconditional) one.
    TokenizedText cond = model->tokenizer().Tokenize(request->prompt);
    ids.insert(ids.end(), cond.ids.begin(), cond.ids.end());
    g->warnings_ = TokenizerWarnings(cond, "prompt", c.name);
    if (g->guided()) {
      TokenizedText uncond = model->tokenizer().Tokenize(request->negative_prompt);
      ids.insert(ids.end(), uncond.ids.begin(), uncond.ids.end());
      for (std::string& w : TokenizerWarnings(uncond, "negative_prompt", c.name)) g->warnings_.push_back(std::move(w));
    }
    started.push_back(g.get());
    out.push_back(std::move(g));
  }
  if (started.empty()) return out;

  // One text encoder call for all of them: its failure is every started job's.
  at::Tensor context;
  absl::Status encoded = RunModelCall(c.name, [&] {
    const int64_t rows = static_cast<int64_t>(ids.size()) / c.max_length;
    at::Tensor id_tensor = HostToDevice(at::tensor(ids, at::kLong).view({rows, c.max_length}), model->device());
    context = model->text_encoder().forward({id_tensor}).toTensor();  // [rows, L, D] in the bundle's dtype
  });
  if (!encoded.ok()) {
    for (auto& entry : out) {
      if (entry.ok()) entry = encoded;
    }
    return out;
  }
  int64_t row = 0;
  for (Generation* g : started) {
    const int64_t prompts = g->guided() ? 2 : 1;
    // Rows: N conditional, then N unconditional, matching the latent rows of DenoiseStep.
    g->context_ = context.narrow(0, row, prompts).repeat_interleave(g->num_images_, 0);
    row += prompts;
  }
  // Latents after the text, in request order, each from its own generators. Image to image
  // encodes each job's init image in a call of its own: its failure is that job's alone.
  for (size_t i = 0; i < requests.size(); ++i) {
    if (!out[i].ok()) continue;
    Generation* g = out[i]->get();
    absl::Status init = RunModelCall(c.name, [&] { g->InitLatents(*requests[i]); });
    if (!init.ok()) out[i] = init;  // frees its Generation
  }
  return out;
}

void Generation::InitLatents(const JobRequest& request) {
  const ModelConfig& c = model_->config();
  const int64_t h = request.height / c.downsampling_factor;
  const int64_t w = request.width / c.downsampling_factor;
  const std::vector<int64_t> shape = {request.num_images, c.latent_channels, h, w};
  if (request.init_image.pixels.empty()) {
    latents_ = noise_->Draw(shape) * sampler_->init_noise_sigma();
    return;
  }
  // Image to image (diffusers' img2img): encode, skip the first steps, and noise the latent to
  // the first remaining timestep with q(x_t | x_0), drawing from each image's own generator.
  at::Tensor image = HostToDevice(ImageToModelInput(request.init_image, c.image_channels), model_->device());
  at::Tensor x0 =
      model_->vae_encoder().forward({image.to(model_->dtype())}).toTensor().to(at::kFloat) * c.scaling_factor;
  x0 = x0.expand(shape).contiguous();
  sampler_->StartAtStep(Sampler::ImageToImageStartStep(request.steps, request.strength));
  latents_ = sampler_->AddNoise(x0, noise_->Draw(shape));
}

int Generation::DenoiseStep(const std::vector<Generation*>& batch) {
  // The latents and the sampler's arithmetic stay float32; only the UNet call runs in the
  // bundle's dtype. Timesteps stay float32 too, as diffusers passes them: the UNet embeds them in
  // float32 (half precision spaces 0.5 apart near t = 1000, rounding fractional timesteps).
  const at::ScalarType dtype = batch.front()->model_->dtype();
  std::vector<at::Tensor> inputs, timesteps, contexts;
  for (Generation* g : batch) {
    at::Tensor x_in = g->sampler_->ScaleModelInput(g->latents_);
    const double t = g->sampler_->current_timestep();
    inputs.push_back(x_in);
    if (g->guided()) inputs.push_back(x_in);
    timesteps.push_back(at::full({g->rows()}, t, x_in.options()));
    contexts.push_back(g->context_);
  }
  at::Tensor out = batch.front()->model_->unet()
                       .forward({at::cat(inputs, 0).to(dtype), at::cat(timesteps, 0), at::cat(contexts, 0)})
                       .toTensor()
                       .to(at::kFloat);
  int64_t row = 0;
  for (Generation* g : batch) {
    at::Tensor model_output = out.narrow(0, row, g->num_images_);
    if (g->guided()) {
      at::Tensor uncond = out.narrow(0, row + g->num_images_, g->num_images_);
      model_output = ApplyGuidance(model_output, uncond, g->guidance_scale_);
    }
    row += g->rows();
    g->latents_ = g->sampler_->Step(model_output, g->latents_, *g->noise_);
  }
  return static_cast<int>(row);
}

absl::StatusOr<std::vector<EncodedImage>> Generation::EncodeAll(const at::Tensor& images, ImageFormat format,
                                                                 int quality) const {
  // images: [N, c, H, W] in [-1, 1] -> 8-bit, channels last.
  at::Tensor bytes = DeviceToHost(
      ((images.clamp(-1, 1) + 1) * 127.5).round().to(at::kByte).permute({0, 2, 3, 1}).contiguous());
  std::vector<EncodedImage> out;
  for (int i = 0; i < num_images_; ++i) {
    RasterImage raster;
    raster.height = static_cast<int>(bytes.size(1));
    raster.width = static_cast<int>(bytes.size(2));
    raster.channels = static_cast<int>(bytes.size(3));
    const uint8_t* p = bytes[i].data_ptr<uint8_t>();
    raster.pixels.assign(p, p + raster.height * raster.width * raster.channels);
    auto encoded = EncodeImage(raster, format, quality);
    if (!encoded.ok()) return encoded.status();
    out.push_back({*std::move(encoded), format, raster.width, raster.height, seed_ + static_cast<uint64_t>(i), i});
  }
  return out;
}

at::Tensor Generation::DecodeLatents() {
  ModelBundle* model = model_;
  const DecodeFn decode = [model](const at::Tensor& z) {
    return model->vae_decoder().forward({z.to(model->dtype())}).toTensor();
  };
  DecodeFn decode_float32;
  if (torch::jit::Module* decoder = model->vae_decoder_float32()) {
    decode_float32 = [decoder](const at::Tensor& z) { return decoder->forward({z}).toTensor(); };
  }
  bool upcast = false;
  at::Tensor images = DecodeWithUpcast(latents_ / model->config().scaling_factor, decode, decode_float32, &upcast);
  if (upcast) ++vae_upcasts_;
  return images;
}

absl::StatusOr<std::vector<EncodedImage>> Generation::Preview() {
  if (preview_vae_decode_) return EncodeAll(DecodeLatents(), preview_format_, preview_quality_);
  const ModelConfig& c = model_->config();
  at::Tensor m = HostToDevice(
      at::from_blob(const_cast<float*>(c.latent_rgb_matrix.data()), {3, c.latent_channels}, at::kFloat),
      latents_.device());
  at::Tensor b = HostToDevice(at::from_blob(const_cast<float*>(c.latent_rgb_bias.data()), {1, 3, 1, 1}, at::kFloat),
                              latents_.device());
  at::Tensor rgb = at::einsum("oc,nchw->nohw", {m, latents_}) + b;
  rgb = at::upsample_nearest2d(rgb, {height_, width_});
  return EncodeAll(rgb, preview_format_, preview_quality_);
}

absl::StatusOr<std::vector<EncodedImage>> Generation::Decode() {
  return EncodeAll(DecodeLatents(), output_format_, output_quality_);
}

}  // namespace imagegen

namespace imagegen {

std::vector<absl::StatusOr<std::unique_ptr<JobState>>> GenerationPipeline::Start(
    const std::vector<const JobRequest*>& requests) {
  std::vector<absl::StatusOr<std::unique_ptr<JobState>>> out;
  for (const JobRequest* r : requests) {
    out.push_back(absl::NotFoundError(absl::StrCat("model \"", r->model, "\" is not loaded on this worker")));
  }
  // One StartBatch (one text encoder call) per model among the requests.
  for (ModelBundle* bundle : bundles_) {
    std::vector<const JobRequest*> mine;
    std::vector<size_t> where;
    for (size_t i = 0; i < requests.size(); ++i) {
      if (requests[i]->model == bundle->config().name) {
        mine.push_back(requests[i]);
        where.push_back(i);
      }
    }
    if (mine.empty()) continue;
    auto started = Generation::StartBatch(bundle, mine);
    for (size_t k = 0; k < started.size(); ++k) {
      if (started[k].ok()) {
        out[where[k]] = std::unique_ptr<JobState>(std::move(*started[k]));
      } else {
        out[where[k]] = started[k].status();
      }
    }
  }
  return out;
}

absl::StatusOr<int> GenerationPipeline::Step(const std::vector<JobState*>& batch) {
  std::vector<Generation*> generations;
  for (JobState* s : batch) generations.push_back(static_cast<Generation*>(s));
  int rows = 0;
  absl::Status status = RunModelCall(generations.front()->model_name(),
                                     [&] { rows = Generation::DenoiseStep(generations); });
  if (!status.ok()) return status;
  return rows;
}

absl::StatusOr<std::vector<EncodedImage>> GenerationPipeline::Preview(JobState& job) {
  auto& g = static_cast<Generation&>(job);
  absl::StatusOr<std::vector<EncodedImage>> images;
  absl::Status status = RunModelCall(g.model_name(), [&] { images = g.Preview(); });
  if (!status.ok()) return status;
  return images;
}

absl::StatusOr<std::vector<EncodedImage>> GenerationPipeline::Finish(JobState& job) {
  auto& g = static_cast<Generation&>(job);
  absl::StatusOr<std::vector<EncodedImage>> images;
  absl::Status status = RunModelCall(g.model_name(), [&] { images = g.Decode(); });
  if (!status.ok()) return status;
  return images;
}

}  // namespace imagegen
