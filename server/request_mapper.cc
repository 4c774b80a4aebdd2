#include "server/request_mapper.h"

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/image/image_codec.h"

namespace imagegen {
namespace {

bool IsJobIdChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

// The engine's format of an API format; INVALID_ARGUMENT naming `field` for a value outside the
// enum (a newer client's, or garbage on the wire).
absl::StatusOr<ImageFormat> FormatOf(const char* field, v1::ImageFormat format) {
  switch (format) {
    case v1::IMAGE_FORMAT_UNSPECIFIED:
    case v1::IMAGE_FORMAT_PNG: return ImageFormat::kPng;
    case v1::IMAGE_FORMAT_JPEG: return ImageFormat::kJpeg;
    case v1::IMAGE_FORMAT_WEBP: return ImageFormat::kWebp;
    default: break;
  }
  return absl::InvalidArgumentError(absl::StrCat(field, " is ", static_cast<int>(format),
                                                 "; allowed: IMAGE_FORMAT_PNG, IMAGE_FORMAT_JPEG, IMAGE_FORMAT_WEBP"));
}

absl::BitGen& Rng() {
  thread_local absl::BitGen gen;
  return gen;
}

}  // namespace

std::string NewJobId() {
  return absl::StrFormat("job-%016x", absl::Uniform<uint64_t>(Rng()));
}

absl::StatusOr<JobRequest> ToJobRequest(const v1::GenerateRequest& in, const Engine& engine,
                                        const std::string& default_model, absl::Time deadline,
                                        bool with_previews) {
  JobRequest r;
  r.model = in.model().empty() ? default_model : in.model();
  const ModelConfig* model = engine.FindModel(r.model);
  if (model == nullptr) {
    std::string names;
    for (const ModelConfig* m : engine.models()) absl::StrAppend(&names, names.empty() ? "" : ", ", m->name);
    return absl::NotFoundError(absl::StrCat("model is \"", ClipForEcho(r.model), "\", which is not loaded; loaded: ", names));
  }
  auto output_format = FormatOf("output_format", in.output_format());
  if (!output_format.ok()) return output_format.status();
  r.output_format = *output_format;
  auto preview_format = FormatOf("preview.format", in.preview().format());
  if (!preview_format.ok()) return preview_format.status();
  r.preview_format = *preview_format;
  if (in.preview().method() != v1::PREVIEW_METHOD_UNSPECIFIED && in.preview().method() != v1::PREVIEW_METHOD_LATENT_APPROX &&
      in.preview().method() != v1::PREVIEW_METHOD_VAE_DECODE) {
    return absl::InvalidArgumentError(absl::StrCat("preview.method is ", static_cast<int>(in.preview().method()),
                                                   "; allowed: PREVIEW_METHOD_LATENT_APPROX, PREVIEW_METHOD_VAE_DECODE"));
  }
  if (!in.init_image().empty()) {
    const RequestLimits limits = engine.LimitsFor(*model);
    if (in.init_image().size() > static_cast<size_t>(limits.max_init_image_bytes)) {
      return absl::InvalidArgumentError(absl::StrCat("init_image is ", in.init_image().size(),
                                                     " bytes; allowed: at most ", limits.max_init_image_bytes));
    }
    // Only the header here, on the RPC thread: the size it declares is checked with the other
    // fields, and the worker decodes the image when the job starts (StepScheduler), bounded to it.
    auto header = PeekImageHeader(in.init_image());
    if (!header.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("init_image (", in.init_image().size(), " bytes) is ",
                                                     header.status().message(), "; allowed: a PNG or JPEG"));
    }
    r.init_image_encoded = in.init_image();
    r.init_image_encoded_width = header->width;
    r.init_image_encoded_height = header->height;
  }
  r.strength = in.strength();
  if (in.job_id().empty()) {
    r.job_id = NewJobId();
  } else {
    const std::string& id = in.job_id();
    bool ok = id.size() <= 64;
    for (char c : id) ok = ok && IsJobIdChar(c);
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat("job_id is \"", ClipForEcho(id),
                                                     "\"; allowed: 1 to 64 characters of A-Z a-z 0-9 . _ -"));
    }
    r.job_id = id;
  }
  r.prompt = in.prompt();
  r.negative_prompt = in.negative_prompt();
  // uint32 fields above INT_MAX are clamped so that validation reports them as too large.
  auto as_int = [](uint32_t v) { return static_cast<int>(std::min<uint32_t>(v, 1u << 30)); };
  // Image to image takes its size from the init image unless the request names one.
  const bool has_init = r.has_init_image();
  r.width = in.width() != 0 ? as_int(in.width()) : has_init ? r.init_image_width() : model->default_width;
  r.height = in.height() != 0 ? as_int(in.height()) : has_init ? r.init_image_height() : model->default_height;
  r.steps = in.steps() == 0 ? model->default_steps : as_int(in.steps());
  r.guidance_scale = in.guidance_scale() == 0 ? model->default_guidance_scale : in.guidance_scale();
  r.sampler = in.sampler().empty() ? model->default_sampler : in.sampler();
  r.seed = in.has_seed() ? in.seed() : absl::Uniform<uint32_t>(Rng());
  r.num_images = in.num_images() == 0 ? 1 : as_int(in.num_images());
  r.preview_every_n_steps = with_previews ? as_int(in.preview().every_n_steps()) : 0;
  r.preview_vae_decode = in.preview().method() == v1::PREVIEW_METHOD_VAE_DECODE;
  r.preview_quality = in.preview().quality() == 0 ? kDefaultPreviewQuality : as_int(in.preview().quality());
  r.output_quality = in.quality() == 0 ? kDefaultOutputQuality : as_int(in.quality());
  r.priority = in.priority();
  r.deadline = deadline;
  return r;
}

}  // namespace imagegen
