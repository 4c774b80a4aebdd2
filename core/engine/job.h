// A generation job as the engine sees it: what to make (JobRequest), what comes back
// (ProgressUpdate, JobResult), who hears about it (JobListener), and the job as the engine
// tracks it from admission to its end (Job), with the one place its events are delivered from
// (JobEvents).
//
// Lock order, outermost first: Engine::mu_, JobQueue::mu_, JobEvents::mu_. No listener is ever
// called with any of them held: JobEvents records an event under its own mutex and delivers it
// after releasing it, so a listener may call back into the engine (Cancel, Submit) from its
// callbacks.
#ifndef IMAGEGEN_CORE_ENGINE_JOB_H_
#define IMAGEGEN_CORE_ENGINE_JOB_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/image/image_codec.h"
#include "core/image/png_codec.h"

namespace imagegen {

struct ModelConfig;

// One request, with every default already resolved (no zero means "default" here).
struct JobRequest {
  // Who asked (the server's principal: a token's name, a client certificate's subject); empty:
  // the one shared principal of a server without access control. Job ids, cancellation, queue
  // quotas and the fair share of the worker are per principal.
  std::string principal;
  std::string job_id;  // unique among the principal's queued and running jobs
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
  int preview_every_n_steps = 0;  // 0: no previews; else every N steps (Sampler::steps_done)
  // false: the linear latent-to-RGB projection (nearly free); true: the full VAE decoder.
  bool preview_vae_decode = false;
  ImageFormat preview_format = ImageFormat::kPng;
  int preview_quality = 75;  // JPEG/WebP, 1..100
  ImageFormat output_format = ImageFormat::kPng;
  int output_quality = 90;   // JPEG/WebP, 1..100
  // Image to image: the init image, the same size as the request, either still encoded (PNG or
  // JPEG, as the client sent it, with the size its header declares: a queued job holds these
  // bytes, and its worker decodes them when the job starts) or already decoded (in-process
  // callers and the tests); and how much of the reverse process to run, in (0, 1].
  // Neither set: text to image.
  std::string init_image_encoded;
  int init_image_encoded_width = 0;
  int init_image_encoded_height = 0;
  RasterImage init_image;
  double strength = 0;
  // Order among the principal's own queued jobs (higher first; JobQueue); never ahead of
  // another principal's.
  int priority = 0;
  absl::Time deadline = absl::InfiniteFuture();

  bool has_init_image() const { return !init_image_encoded.empty() || !init_image.pixels.empty(); }
  int init_image_width() const { return init_image_encoded.empty() ? init_image.width : init_image_encoded_width; }
  int init_image_height() const { return init_image_encoded.empty() ? init_image.height : init_image_encoded_height; }
};

// What a request costs the worker: UNet rows (images, twice with guidance) x UNet calls (the steps
// that run, twice for heun) x megapixels per image (width x height / 10^6). Time per unit
// depends on the model and device, but within one model it is close to proportional.
double RequestWork(const JobRequest& request);

// What statuses and logs echo of a client's string (model or sampler name, job id, peer): at
// most kMaxEchoBytes of it, cut at a UTF-8 character boundary, with "..." when cut.
inline constexpr size_t kMaxEchoBytes = 128;
std::string ClipForEcho(absl::string_view text);

// How many rows of a call's row budget (--max_batch_rows) one UNet row of `request` takes: 1 at
// the model's default size or smaller, else its pixels over the default's, rounded up (a 256x256
// row of the 32x32 embedded model counts 64), so that the budget bounds a call's cost and large
// images are not batched into calls that make everyone wait long. (Admission counts plain rows.)
int RowWeight(const JobRequest& request, const ModelConfig& model);

// The denoising steps `request` runs: steps, or for image to image the last
// min(int(steps * strength), steps) of them. The one unit of progress (Sampler::steps_done).
int StepsToRun(const JobRequest& request);

// Limits a server places on requests, on top of what each model allows. A size limit of 0 means
// "per model" (ResolveLimits).
struct RequestLimits {
  int max_steps = 200;
  int max_images = 8;
  int max_prompt_chars = 1000;
  // Pixels per side; 0: per model, the larger of kSmallModelMaxSide and 1.5 times the model's
  // default side (rounded down to its size_multiple), so Stable Diffusion 1.x (512) takes up to
  // 768 and the embedded 32x32 model 256. 256 is safe for the embedded model on a CPU: one
  // 256x256 image peaks at ~0.8 GB and about a second a step there, while a 512x512 one took
  // 4.6 GB and minutes a step (the soak found it).
  int max_image_side = 0;
  // Pixels a request makes in all: width * height * num_images. Bounds a job's memory. 0: per
  // model, the larger of 4 x 256 x 256 and one image of the model's largest side.
  int64_t max_pixels = 0;
  int max_init_image_bytes = 4 << 20;  // the encoded init_image, checked before decoding
  // The most work one request may ask, in RequestWork's unit, so that no request within the other
  // limits runs for many minutes. 0: per model, kDefaultWorkFactor times the work of the model's
  // default request (one image of its default size, steps, guidance and sampler).
  double max_work = 0;
};

// The per-model work bound (RequestLimits::max_work 0). A default request of the embedded model
// is 0.0614 units, so it may ask 31.5: 8 guided images of 256x256 at 30 steps, about five minutes
// on two CPU cores (4 such images at 200 heun steps, 210 units, took 32 minutes there). Stable
// Diffusion 1.5's default (512x512, 50 guided steps) is 26.2 units, so it may ask 13,400, which
// no request within its other limits reaches (8 guided 768x768 images at 200 steps is 1,887).
inline constexpr double kDefaultWorkFactor = 512;

// The floors of the per-model size limits (RequestLimits, 0).
inline constexpr int kSmallModelMaxSide = 256;
inline constexpr int64_t kSmallModelMaxPixels = int64_t{4} * 256 * 256;

// `server` with its per-model (0) size limits resolved for `model`: what a request for `model`
// may ask on this server.
RequestLimits ResolveLimits(const RequestLimits& server, const ModelConfig& model);

// INVALID_ARGUMENT naming the first field outside what `model` and `limits` allow, with its
// value and the allowed range; OK otherwise. Field names are those of the public API. The one
// check of a request: what it accepts, the worker runs (sampler and steps against what the
// model's scheduler config supports, ModelConfig::samplers), so nothing accepted fails
// validation later. `limits` is resolved here (ResolveLimits).
absl::Status ValidateJobRequest(const JobRequest& request, const ModelConfig& model,
                                const RequestLimits& limits);

// An encoded image with where it came from.
struct EncodedImage {
  std::string data;
  ImageFormat format = ImageFormat::kPng;
  int width = 0;
  int height = 0;
  uint64_t seed = 0;
  int index = 0;
};

// Progress counts denoising steps (Sampler::steps_done), one update per step.
struct ProgressUpdate {
  int step = 0;  // 1..total_steps
  int total_steps = 0;  // StepsToRun(request)
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
  // What ran, with every default resolved.
  std::string model;
  std::string sampler;
  int steps = 0;
  double guidance_scale = 1.0;
  // What of the request the model could not take (TokenizerWarnings), for the client.
  std::vector<std::string> warnings;
};

// Receives one job's events, through its JobEvents: one call at a time, in order, with no engine
// lock held. Implementations must never block: the calls come from the worker thread or from
// whichever engine caller (Submit, Cancel, another job's admission) produced the event, and a
// slow consumer must not stall them. Order: OnAccepted, OnQueuePosition while it waits, then
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

// Delivers one job's events to its listener in order, one call at a time, never under a lock:
// Record* queues an event under mu_ (cheap, safe under JobQueue's lock), Deliver() hands what is
// queued to the listener outside mu_. Whoever calls Deliver while another thread is delivering
// returns at once; that thread delivers the new events too. Thread-safe.
class JobEvents {
 public:
  explicit JobEvents(std::shared_ptr<JobListener> listener) : listener_(std::move(listener)) {}

  void RecordAccepted(std::string job_id, int queue_position);
  // Replaces a queue position not yet delivered: the listener hears the newest one.
  void RecordQueuePosition(int queue_position);
  // The job left the queue: a queue position not yet delivered is dropped.
  void RecordLeftQueue();
  void RecordProgress(ProgressUpdate update);
  // The job's end: OnResult when `result` is set, else OnError(status). Later records are dropped.
  void RecordEnd(absl::Status status, std::optional<JobResult> result);
  void Deliver();

  const JobListener* listener() const { return listener_.get(); }

 private:
  struct Event {
    enum Kind { kAccepted, kQueuePosition, kProgress, kEnd };
    explicit Event(Kind k) : kind(k) {}
    Kind kind;
    std::string job_id;
    int queue_position = 0;
    ProgressUpdate progress;
    absl::Status status;
    std::optional<JobResult> result;
  };
  void Call(Event& event);

  const std::shared_ptr<JobListener> listener_;
  absl::Mutex mu_;
  std::deque<Event> pending_ ABSL_GUARDED_BY(mu_);
  bool delivering_ ABSL_GUARDED_BY(mu_) = false;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
};

// Why a job stops, or kFinishing once its worker has claimed its result for delivery. Each
// transition is a compare-and-swap from kNone, so Cancel and the worker agree on which won:
// a job Cancel stopped ends CANCELLED, and a job past kFinishing can no longer be cancelled.
enum class StopReason : int { kNone = 0, kCancelled = 1, kShutdown = 2, kFinishing = 3 };

// A job as the engine tracks it from admission to its end. `request`, `accepted_at` and
// `sequence` are set before the job is shared and never change; `stop` is written by
// Cancel/Shutdown and by the worker when the job finishes (StopReason); `events` is thread-safe.
struct Job {
  explicit Job(std::shared_ptr<JobListener> listener) : events(std::move(listener)) {}

  JobRequest request;
  JobEvents events;
  absl::Time accepted_at;
  uint64_t sequence = 0;  // admission order
  std::atomic<int> stop{static_cast<int>(StopReason::kNone)};
  std::atomic<bool> started{false};  // a worker took it from the queue
  absl::Time started_at;  // when it did; written by that worker before `started`
  int row_weight = 1;  // RowWeight, set at admission

  // Asks the worker to stop the job for `reason` (kCancelled or kShutdown). True when the job
  // will end for that reason; false when it already stops for another or its result is claimed.
  bool RequestStop(StopReason reason) {
    int expected = static_cast<int>(StopReason::kNone);
    return stop.compare_exchange_strong(expected, static_cast<int>(reason)) || expected == static_cast<int>(reason);
  }
  // UNet rows per step: images, twice with guidance.
  int rows() const { return request.guidance_scale != 1.0 ? 2 * request.num_images : request.num_images; }
  // What it takes of a call's row budget: rows() x row_weight.
  int budget_rows() const { return rows() * row_weight; }
};

}  // namespace imagegen

#endif  // IMAGEGEN_CORE_ENGINE_JOB_H_
