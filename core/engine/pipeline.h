// What the step scheduler needs from the models, as an interface: the real implementation runs
// LibTorch modules (GenerationPipeline, generation.h); the scheduler's tests use a fake.
#ifndef IMAGEGEN_CORE_ENGINE_PIPELINE_H_
#define IMAGEGEN_CORE_ENGINE_PIPELINE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/engine/job.h"

namespace imagegen {

// One job's reverse process on a worker. Owned by the worker's scheduler; not thread-safe.
// Progress is counted in denoising steps (Sampler::steps_done), whatever the model calls.
class JobState {
 public:
  virtual ~JobState() = default;
  virtual bool done() const = 0;
  virtual int steps_done() const = 0;   // denoising steps complete
  virtual int total_steps() const = 0;  // denoising steps it runs (StepsToRun)
  virtual int rows() const = 0;         // UNet rows per call: images, twice with guidance
  // What of the request the model could not take (TokenizerWarnings), for the client.
  virtual std::vector<std::string> warnings() const { return {}; }
  // How many of this job's VAE decodes (previews and result) were redone in float32 because
  // their reduced-precision output was not finite (DecodeWithUpcast, generation.h).
  virtual int vae_upcasts() const { return 0; }
};

// The model work of one worker. Methods are called from that worker's thread only and never
// throw: a failing model call is caught at the implementation's one boundary per call
// (RunModelCall, model_failure.h) and comes back as the status of the jobs in that call.
class Pipeline {
 public:
  virtual ~Pipeline() = default;
  // Prepares new jobs, encoding the text of all of them in as few model calls as possible. One
  // entry per request, in order; an error fails only its own job (a failing text encoder
  // fails every job of that call).
  virtual std::vector<absl::StatusOr<std::unique_ptr<JobState>>> Start(
      const std::vector<const JobRequest*>& requests) = 0;
  // One model call of every job in `batch` in one UNet call. Every job is !done() and all have
  // the same model and image size. Returns the UNet rows of the call; an error fails every job
  // in the batch.
  virtual absl::StatusOr<int> Step(const std::vector<JobState*>& batch) = 0;
  // A preview of the job's current latents, one image per image of the job.
  virtual absl::StatusOr<std::vector<EncodedImage>> Preview(JobState& job) = 0;
  // The final images of a done() job.
  virtual absl::StatusOr<std::vector<EncodedImage>> Finish(JobState& job) = 0;
};

}  // namespace imagegen

#endif  // IMAGEGEN_CORE_ENGINE_PIPELINE_H_
