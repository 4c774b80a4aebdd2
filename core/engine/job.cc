#include "core/engine/job.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/math/sampler_registry.h"
#include "core/model/model_config.h"
#include "core/model/tokenizer.h"

namespace imagegen {
namespace {

absl::Status Invalid(absl::string_view field, absl::string_view value, absl::string_view allowed) {
  return absl::InvalidArgumentError(absl::StrCat(field, " is ", value, "; ", allowed));
}

absl::Status CheckSide(const char* field, int value, const ModelConfig& model, const RequestLimits& limits) {
  if (value < model.size_multiple || value > limits.max_image_side || value % model.size_multiple != 0) {
    return Invalid(field, absl::StrCat(value),
                   absl::StrCat("allowed: a multiple of ", model.size_multiple, " (model ", model.name,
                                "'s latent factor) from ", model.size_multiple, " to ",
                                limits.max_image_side, "; 0 means the default ",
                                field[0] == 'w' ? model.default_width : model.default_height));
  }
  return absl::OkStatus();
}

// UTF-8 characters (code points): every byte that does not continue a sequence.
int64_t Utf8Length(absl::string_view text) {
  int64_t n = 0;
  for (unsigned char c : text) n += (c & 0xC0) != 0x80;
  return n;
}

absl::Status CheckPromptLength(const char* field, absl::string_view text, const RequestLimits& limits) {
  // Bytes first: a prompt of more bytes than 4 x the limit is too long whatever it holds.
  const int64_t chars = text.size() > 4 * static_cast<size_t>(limits.max_prompt_chars) ? text.size() : Utf8Length(text);
  if (chars > limits.max_prompt_chars) {
    return Invalid(field, absl::StrCat(chars, " characters long"),
                   absl::StrCat("allowed: at most ", limits.max_prompt_chars, " characters"));
  }
  return absl::OkStatus();
}

absl::Status CheckQuality(const char* field, int quality) {
  if (quality < kMinImageQuality || quality > kMaxImageQuality) {
    return Invalid(field, absl::StrCat(quality), absl::StrCat("allowed: ", kMinImageQuality, " to ", kMaxImageQuality,
                                                              "; 0 means the default"));
  }
  return absl::OkStatus();
}

// The sampler, and the steps within what it accepts with the model's scheduler config.
absl::Status CheckSamplerAndSteps(const JobRequest& r, const ModelConfig& model, const RequestLimits& limits) {
  const ModelConfig::SamplerSupport* sampler = model.FindSampler(r.sampler);
  if (sampler == nullptr || !sampler->refusal.empty()) {
    std::string why = sampler == nullptr ? "" : absl::StrCat(" (", sampler->refusal, ")");
    return Invalid("sampler", absl::StrCat("\"", ClipForEcho(r.sampler), "\"", why),
                   absl::StrCat("allowed for model ", model.name, ": ", absl::StrJoin(model.SupportedSamplers(), ", "),
                                "; empty means the default ", model.default_sampler));
  }
  const int max_steps = std::min(limits.max_steps, model.num_train_timesteps);
  if (r.steps < sampler->min_steps || r.steps > max_steps) {
    return Invalid("steps", absl::StrCat(r.steps),
                   absl::StrCat("allowed: ", sampler->min_steps, " to ", max_steps, " with sampler ", r.sampler,
                                "; 0 means the default ", model.default_steps));
  }
  return absl::OkStatus();
}

}  // namespace

std::string ClipForEcho(absl::string_view text) { return ClipUtf8(text, kMaxEchoBytes); }

RequestLimits ResolveLimits(const RequestLimits& server, const ModelConfig& model) {
  RequestLimits limits = server;
  if (limits.max_image_side <= 0) {
    const int multiple = std::max(model.size_multiple, 1);
    const int side = std::max(model.default_width, model.default_height) * 3 / 2 / multiple * multiple;
    limits.max_image_side = std::max(kSmallModelMaxSide, side);
  }
  if (limits.max_pixels <= 0) {
    limits.max_pixels = std::max(kSmallModelMaxPixels, int64_t{limits.max_image_side} * limits.max_image_side);
  }
  if (limits.max_work <= 0) {
    JobRequest defaults;
    defaults.width = model.default_width;
    defaults.height = model.default_height;
    defaults.steps = model.default_steps;
    defaults.guidance_scale = model.default_guidance_scale;
    defaults.sampler = model.default_sampler;
    limits.max_work = kDefaultWorkFactor * RequestWork(defaults);
  }
  return limits;
}

int RowWeight(const JobRequest& r, const ModelConfig& model) {
  const int64_t base = std::max<int64_t>(int64_t{model.default_width} * model.default_height, 1);
  const int64_t pixels = int64_t{r.width} * r.height;
  return static_cast<int>(std::max<int64_t>(1, (pixels + base - 1) / base));
}

int StepsToRun(const JobRequest& r) {
  if (!r.has_init_image()) return r.steps;
  return r.steps - ImageToImageStartStep(r.steps, r.strength);
}

double RequestWork(const JobRequest& r) {
  const SamplerEntry* sampler = FindSampler(r.sampler);
  const int calls = StepsToRun(r) * (sampler != nullptr ? sampler->unet_calls_per_step : 1);
  const int rows = r.guidance_scale != 1.0 ? 2 * r.num_images : r.num_images;
  return double{1} * rows * calls * r.width * r.height / 1e6;
}

absl::Status ValidateJobRequest(const JobRequest& r, const ModelConfig& model,
                                const RequestLimits& server_limits) {
  const RequestLimits limits = ResolveLimits(server_limits, model);
  if (auto s = CheckPromptLength("prompt", r.prompt, limits); !s.ok()) return s;
  if (auto s = CheckPromptLength("negative_prompt", r.negative_prompt, limits); !s.ok()) return s;
  if (absl::StripAsciiWhitespace(r.prompt).empty() && r.guidance_scale != 1.0) {
    return Invalid("prompt", "empty",
                   absl::StrCat("model ", model.name, " needs a prompt (an unconditional sample "
                                "needs guidance_scale 1)"));
  }
  if (auto s = CheckSide("width", r.width, model, limits); !s.ok()) return s;
  if (auto s = CheckSide("height", r.height, model, limits); !s.ok()) return s;
  if (auto s = CheckSamplerAndSteps(r, model, limits); !s.ok()) return s;
  if (!(r.guidance_scale >= 1.0 && r.guidance_scale <= 30.0)) {
    return Invalid("guidance_scale", absl::StrCat(r.guidance_scale),
                   absl::StrCat("allowed: 1 to 30; 0 means the default ", model.default_guidance_scale));
  }
  if (r.num_images < 1 || r.num_images > limits.max_images) {
    return Invalid("num_images", absl::StrCat(r.num_images),
                   absl::StrCat("allowed: 1 to ", limits.max_images, "; 0 means 1"));
  }
  if (const int64_t pixels = int64_t{r.width} * r.height * r.num_images; pixels > limits.max_pixels) {
    return Invalid("width x height x num_images", absl::StrCat(r.width, "x", r.height, "x", r.num_images, " = ", pixels),
                   absl::StrCat("allowed: at most ", limits.max_pixels, " pixels per request"));
  }
  if (auto s = CheckQuality("quality", r.output_quality); !s.ok()) return s;
  if (auto s = CheckQuality("preview.quality", r.preview_quality); !s.ok()) return s;
  if (!r.has_init_image()) {
    if (r.strength != 0) {
      return Invalid("strength", absl::StrCat(r.strength), "must be 0 (unset) without init_image");
    }
  } else {
    const std::string size = absl::StrCat(r.init_image_width(), "x", r.init_image_height(), " pixels");
    if (!model.has_vae_encoder) {
      return Invalid("init_image", size,
                     absl::StrCat("model ", model.name, " has no vae_encoder.pt, so it cannot do image to image"));
    }
    if (r.init_image_width() != r.width || r.init_image_height() != r.height) {
      return Invalid("init_image", size,
                     absl::StrCat("must be width x height (", r.width, "x", r.height,
                                  "); leave width and height 0 to take the init image's size"));
    }
    if (!(r.strength > 0 && r.strength <= 1)) {
      return Invalid("strength", absl::StrCat(r.strength), "allowed: (0, 1] with init_image");
    }
    if (ImageToImageStartStep(r.steps, r.strength) >= r.steps) {
      return Invalid("strength", absl::StrCat(r.strength),
                     absl::StrCat("with steps ", r.steps, " it runs no denoising step; strength * steps must be at least 1"));
    }
  }
  // After image to image: the steps that run bound the preview interval.
  if (r.preview_every_n_steps < 0 || r.preview_every_n_steps > StepsToRun(r)) {
    return Invalid("preview.every_n_steps", absl::StrCat(r.preview_every_n_steps),
                   absl::StrCat("allowed: 0 (no previews) to the steps that run (", StepsToRun(r), ")"));
  }
  if (r.priority < -100 || r.priority > 100) {
    return Invalid("priority", absl::StrCat(r.priority), "allowed: -100 to 100");
  }
  // Last: every factor of the work is known to be valid by now.
  if (const double work = RequestWork(r); work > limits.max_work) {
    return Invalid("the request's work", absl::StrFormat("%.4g units", work),
                   absl::StrFormat("allowed: at most %.4g units per request for model %s (units: UNet rows, "
                                   "twice the images with guidance, x UNet calls, the steps that run, twice for "
                                   "heun, x megapixels per image); ask for fewer steps, images or pixels",
                                   limits.max_work, model.name));
  }
  return absl::OkStatus();
}

void JobEvents::RecordAccepted(std::string job_id, int queue_position) {
  absl::MutexLock lock(&mu_);
  if (ended_) return;
  Event e(Event::kAccepted);
  e.job_id = std::move(job_id);
  e.queue_position = queue_position;
  pending_.push_back(std::move(e));
}

void JobEvents::RecordQueuePosition(int queue_position) {
  absl::MutexLock lock(&mu_);
  if (ended_) return;
  for (Event& e : pending_) {
    if (e.kind == Event::kQueuePosition) {
      e.queue_position = queue_position;
      return;
    }
  }
  Event e(Event::kQueuePosition);
  e.queue_position = queue_position;
  pending_.push_back(std::move(e));
}

void JobEvents::RecordLeftQueue() {
  absl::MutexLock lock(&mu_);
  for (auto it = pending_.begin(); it != pending_.end(); ++it) {
    if (it->kind == Event::kQueuePosition) {
      pending_.erase(it);
      return;
    }
  }
}

void JobEvents::RecordProgress(ProgressUpdate update) {
  absl::MutexLock lock(&mu_);
  if (ended_) return;
  Event e(Event::kProgress);
  e.progress = std::move(update);
  pending_.push_back(std::move(e));
}

void JobEvents::RecordEnd(absl::Status status, std::optional<JobResult> result) {
  absl::MutexLock lock(&mu_);
  if (ended_) return;
  ended_ = true;
  Event e(Event::kEnd);
  e.status = std::move(status);
  e.result = std::move(result);
  pending_.push_back(std::move(e));
}

void JobEvents::Deliver() {
  {
    absl::MutexLock lock(&mu_);
    if (delivering_) return;  // that thread delivers ours too
    delivering_ = true;
  }
  for (;;) {
    std::deque<Event> batch;
    {
      absl::MutexLock lock(&mu_);
      if (pending_.empty()) {
        delivering_ = false;
        return;
      }
      batch.swap(pending_);
    }
    for (Event& e : batch) Call(e);
  }
}

void JobEvents::Call(Event& e) {
  switch (e.kind) {
    case Event::kAccepted: listener_->OnAccepted(e.job_id, e.queue_position); break;
    case Event::kQueuePosition: listener_->OnQueuePosition(e.queue_position); break;
    case Event::kProgress: listener_->OnProgress(std::move(e.progress)); break;
    case Event::kEnd:
      if (e.result) {
        listener_->OnResult(*std::move(e.result));
      } else {
        listener_->OnError(std::move(e.status));
      }
      break;
  }
}

}  // namespace imagegen
