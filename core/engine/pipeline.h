// What the step scheduler needs from the models, as an interface: the real implementation runs
// LibTorch modules (GenerationPipeline, generation.h); the scheduler's tests use a fake.
#ifndef IMAGEGEN_CORE_ENGINE_PIPELINE_H_
#define IMAGEGEN_CORE_ENGINE_PIPELINE_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/engine/job.h"

namespace imagegen {

// One job's reverse process on a worker. Owned by the worker's scheduler; not thread-safe.
class JobState {
 public:
  virtual ~JobState() = default;
  virtual bool done() const = 0;
  virtual int steps_done() const = 0;   // model calls this job has made
  virtual int total_steps() const = 0;  // model calls it will make
  virtual int rows() const = 0;         // UNet rows per call: images, twice with guidance
};

// The model work of one worker. Methods are called from that worker's thread only. Step,
// Preview and Finish may throw (c10::Error, std::exception) when a model fails; the scheduler
// catches that once per call and fails only the jobs in it.
class Pipeline {
 public:
  virtual ~Pipeline() = default;
  // Prepares new jobs, encoding the text of all of them in as few model calls as possible. One
  // entry per request, in order; an error fails only its own job.
  virtual std::vector<absl::StatusOr<std::unique_ptr<JobState>>> Start(
      const std::vector<const JobRequest*>& requests) = 0;
  // One denoising step of every job in `batch` in one UNet call. Every job is !done() and all
  // have the same model and image size. Returns the UNet rows of the call.
  virtual int Step(const std::vector<JobState*>& batch) = 0;
  virtual absl::StatusOr<std::vector<EncodedImage>> Preview(JobState& job) = 0;
  // The final images of a done() job.
  virtual absl::StatusOr<std::vector<EncodedImage>> Finish(JobState& job) = 0;
};

// Where the scheduler reads the time; tests use a fake that moves only when told.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;
};

class RealClock : public Clock {
 public:
  absl::Time Now() const override { return absl::Now(); }
};

}  // namespace imagegen

#endif  // IMAGEGEN_CORE_ENGINE_PIPELINE_H_
