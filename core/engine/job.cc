#include "core/engine/job.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/engine/engine_observer.h"
#include "core/math/samplers.h"
#include "core/model/model_bundle.h"

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

}  // namespace

const char* JobOutcomeName(JobOutcome outcome) {
  switch (outcome) {
    case JobOutcome::kOk: return "ok";
    case JobOutcome::kCancelled: return "cancelled";
    case JobOutcome::kDeadlineExceeded: return "deadline_exceeded";
    case JobOutcome::kRejected: return "rejected";
    case JobOutcome::kUnavailable: return "unavailable";
    case JobOutcome::kFailed: return "failed";
  }
  return "unknown";
}

absl::Status ValidateJobRequest(const JobRequest& r, const ModelConfig& model,
                                const RequestLimits& limits) {
  if (static_cast<int>(r.prompt.size()) > limits.max_prompt_chars) {
    return Invalid("prompt", absl::StrCat(r.prompt.size(), " characters long"),
                   absl::StrCat("allowed: at most ", limits.max_prompt_chars, " characters"));
  }
  if (static_cast<int>(r.negative_prompt.size()) > limits.max_prompt_chars) {
    return Invalid("negative_prompt", absl::StrCat(r.negative_prompt.size(), " characters long"),
                   absl::StrCat("allowed: at most ", limits.max_prompt_chars, " characters"));
  }
  if (absl::StripAsciiWhitespace(r.prompt).empty() && r.guidance_scale != 1.0) {
    return Invalid("prompt", "empty",
                   absl::StrCat("model ", model.name, " needs a prompt (an unconditional sample "
                                "needs guidance_scale 1)"));
  }
  if (auto s = CheckSide("width", r.width, model, limits); !s.ok()) return s;
  if (auto s = CheckSide("height", r.height, model, limits); !s.ok()) return s;
  const int max_steps = std::min(limits.max_steps, 1000);
  if (r.steps < 1 || r.steps > max_steps) {
    return Invalid("steps", absl::StrCat(r.steps), absl::StrCat("allowed: 1 to ", max_steps, "; 0 means the default ",
                                                                model.default_steps));
  }
  if (!(r.guidance_scale >= 1.0 && r.guidance_scale <= 30.0)) {
    return Invalid("guidance_scale", absl::StrCat(r.guidance_scale),
                   absl::StrCat("allowed: 1 to 30; 0 means the default ", model.default_guidance_scale));
  }
  const auto& samplers = SamplerNames();
  if (std::find(samplers.begin(), samplers.end(), r.sampler) == samplers.end()) {
    return Invalid("sampler", absl::StrCat("\"", r.sampler, "\""),
                   absl::StrCat("allowed: ", absl::StrJoin(samplers, ", "), "; empty means the default ",
                                model.default_sampler));
  }
  if (r.num_images < 1 || r.num_images > limits.max_images) {
    return Invalid("num_images", absl::StrCat(r.num_images),
                   absl::StrCat("allowed: 1 to ", limits.max_images, "; 0 means 1"));
  }
  if (const int64_t pixels = int64_t{r.width} * r.height * r.num_images; pixels > limits.max_pixels) {
    return Invalid("width x height x num_images", absl::StrCat(r.width, "x", r.height, "x", r.num_images, " = ", pixels),
                   absl::StrCat("allowed: at most ", limits.max_pixels, " pixels per request"));
  }
  if (r.preview_every_n_steps < 0 || r.preview_every_n_steps > r.steps) {
    return Invalid("preview.every_n_steps", absl::StrCat(r.preview_every_n_steps),
                   absl::StrCat("allowed: 0 (no previews) to steps (", r.steps, ")"));
  }
  if (r.init_image.pixels.empty()) {
    if (r.strength != 0) {
      return Invalid("strength", absl::StrCat(r.strength), "must be 0 (unset) without init_image");
    }
  } else {
    if (!model.has_vae_encoder) {
      return Invalid("init_image", absl::StrCat(r.init_image.width, "x", r.init_image.height, " pixels"),
                     absl::StrCat("model ", model.name, " has no vae_encoder.pt, so it cannot do image to image"));
    }
    if (r.init_image.width != r.width || r.init_image.height != r.height) {
      return Invalid("init_image", absl::StrCat(r.init_image.width, "x", r.init_image.height, " pixels"),
                     absl::StrCat("must be width x height (", r.width, "x", r.height,
                                  "); leave width and height 0 to take the init image's size"));
    }
    if (!(r.strength > 0 && r.strength <= 1)) {
      return Invalid("strength", absl::StrCat(r.strength), "allowed: (0, 1] with init_image");
    }
    if (Sampler::ImageToImageStartStep(r.steps, r.strength) >= r.steps) {
      return Invalid("strength", absl::StrCat(r.strength),
                     absl::StrCat("with steps ", r.steps, " it runs no denoising step; strength * steps must be at least 1"));
    }
  }
  if (r.priority < -100 || r.priority > 100) {
    return Invalid("priority", absl::StrCat(r.priority), "allowed: -100 to 100");
  }
  return absl::OkStatus();
}

}  // namespace imagegen
