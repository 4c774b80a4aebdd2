// A generation job as the engine sees it: what to make, and who hears about it.
#ifndef IMAGEGEN_CORE_ENGINE_JOB_H_
#define IMAGEGEN_CORE_ENGINE_JOB_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "core/image/png_codec.h"

namespace imagegen {

struct ModelConfig;

// One request, with every default already resolved (no zero means "default" here).
struct JobRequest {
  std::string job_id;  // unique among queued and running jobs
  std::string model;   // a loaded model's name
  std::string prompt;
  std::string negative_prompt;
  int width = 0;   // pixels
  int height = 0;  // pixels
  int steps = 0;
  double guidance_scale = 1.0;  // 1: conditional half only
  std::string sampler;
  uint64_t seed = 0;  // image i uses seed + i
  int num_images = 1;
  int preview_every_n_steps = 0;  // 0: no previews
  // false: the linear latent-to-RGB projection (nearly free); true: the full VAE decoder.
  bool preview_vae_decode = false;
  // Image to image: the decoded init image (no pixels: text to image), the same size as the
  // request, and how much of the reverse process to run, in (0, 1].
  RasterImage init_image;
  double strength = 0;
  int priority = 0;
  absl::Time deadline = absl::InfiniteFuture();
};

// Limits a server places on requests, on top of what each model allows.
struct RequestLimits {
  int max_steps = 200;
  int max_images = 8;
  int max_prompt_chars = 1000;
  // Safe for the embedded 32x32 model on a CPU: one 256x256 image peaks at ~0.8 GB and about a
  // second a step here, while a 512x512 one took 4.6 GB and minutes a step (the soak found it).
  // Servers of larger models on GPUs raise them (README, "Server flags").
  int max_image_side = 256;  // pixels, per side
  // Pixels a request makes in all: width * height * num_images. Bounds a job's memory.
  int64_t max_pixels = int64_t{4} * 256 * 256;
  int max_init_image_bytes = 4 << 20;  // the encoded init_image, checked before decoding
};

// INVALID_ARGUMENT naming the first field outside what `model` and `limits` allow, with its
// value and the allowed range; OK otherwise. Field names are those of the public API.
absl::Status ValidateJobRequest(const JobRequest& request, const ModelConfig& model,
                                const RequestLimits& limits);

// An encoded image (PNG) with where it came from.
struct EncodedImage {
  std::string data;
  int width = 0;
  int height = 0;
  uint64_t seed = 0;
  int index = 0;
};

struct ProgressUpdate {
  int step = 0;  // 1..total_steps
  int total_steps = 0;
  std::vector<EncodedImage> previews;  // one per image on steps where a preview is due
};

struct JobTimings {
  absl::Duration queue;
  absl::Duration text_encode;
  absl::Duration denoise;
  absl::Duration decode;
  absl::Duration total;
};

struct JobResult {
  std::string job_id;
  std::vector<EncodedImage> images;
  JobTimings timings;
};

// Receives one job's events. Implementations must be thread-safe and must never block: they
// are called from the worker thread (and OnAccepted from Engine::Submit's caller), and a slow
// consumer must not stall the worker. Order: OnAccepted, OnQueuePosition while it waits, then
// OnProgress per step, then exactly one of OnResult or OnError.
class JobListener {
 public:
  virtual ~JobListener() = default;
  virtual void OnAccepted(const std::string& job_id, int queue_position) = 0;
  // While the job waits: its new position (jobs ahead of it) whenever it changes.
  virtual void OnQueuePosition(int queue_position) {}
  virtual void OnProgress(ProgressUpdate update) = 0;
  virtual void OnResult(JobResult result) = 0;
  virtual void OnError(absl::Status status) = 0;
};

}  // namespace imagegen

#endif  // IMAGEGEN_CORE_ENGINE_JOB_H_
