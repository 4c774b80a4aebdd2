// A threadless stand-in for the models, and a clock that moves only when the test says so, for
// deterministic tests of the step scheduler (tests/core/step_scheduler_test.cc).
#ifndef IMAGEGEN_TESTS_SUPPORT_FAKE_PIPELINE_H_
#define IMAGEGEN_TESTS_SUPPORT_FAKE_PIPELINE_H_

#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/engine/clock.h"
#include "core/engine/model_failure.h"
#include "core/engine/pipeline.h"

namespace imagegen::test {

class FakeClock : public Clock {
 public:
  absl::Time Now() const override { return now_; }
  void Advance(absl::Duration d) { now_ += d; }

 private:
  absl::Time now_ = absl::FromUnixSeconds(1'000'000);
};

// A job that takes request.steps steps of `calls_per_step` model calls each (2 as heun);
// rows as the engine counts them. `steps` counts model calls made.
class FakeJobState : public JobState {
 public:
  FakeJobState(const JobRequest& r, int calls_per_step)
      : id(r.job_id), total(r.steps), per_step(calls_per_step),
        row_count(r.guidance_scale != 1.0 ? 2 * r.num_images : r.num_images), images(r.num_images) {}
  bool done() const override { return steps >= total * per_step; }
  int steps_done() const override { return steps / per_step; }
  int total_steps() const override { return total; }
  int rows() const override { return row_count; }
  std::vector<std::string> warnings() const override { return {absl::StrCat("fake warning for ", id)}; }

  std::string id;
  int steps = 0;  // model calls
  int total;
  int per_step;
  int row_count;
  int images;
};

// Records every call. Like the real pipeline, its "model calls" run through RunModelCall, and
// fail by throwing there: Step when a job in the batch has the id `poison_job_id`, Start (the
// whole call, as a text encoder) when a request's prompt is "throw start", Preview for the job
// `broken_preview_job_id`. Start refuses a request whose prompt is "fail start".
class FakePipeline : public Pipeline {
 public:
  std::vector<absl::StatusOr<std::unique_ptr<JobState>>> Start(
      const std::vector<const JobRequest*>& requests) override {
    std::vector<std::string> ids;
    std::vector<absl::StatusOr<std::unique_ptr<JobState>>> out;
    for (const JobRequest* r : requests) {
      ids.push_back(r->job_id);
      start_init_pixels.push_back(r->init_image.pixels.size());
      if (r->prompt == "fail start") {
        out.push_back(absl::InvalidArgumentError("sampler refused"));
      } else {
        out.push_back(std::make_unique<FakeJobState>(*r, calls_per_step));
      }
    }
    starts.push_back(ids);
    absl::Status encoded = RunModelCall(requests.front()->model, [&] {
      for (const JobRequest* r : requests) {
        if (r->prompt == "throw start") throw std::runtime_error("fake text encoder failure");
      }
    });
    if (!encoded.ok()) {
      for (auto& entry : out) entry = encoded;
    }
    return out;
  }

  absl::StatusOr<int> Step(const std::vector<JobState*>& batch) override {
    if (during_step) during_step();
    std::vector<std::string> ids;
    int rows = 0;
    absl::Status status = RunModelCall("fake", [&] {
      for (JobState* s : batch) {
        auto* f = static_cast<FakeJobState*>(s);
        if (f->id == poison_job_id) throw std::runtime_error("fake UNet failure");
        ids.push_back(f->id);
        rows += f->rows();
      }
      if (max_rows > 0 && rows > max_rows) throw std::runtime_error("CUDA out of memory (fake, in Step)");
    });
    if (on_call) on_call(ids);
    if (!status.ok()) return status;
    for (JobState* s : batch) ++static_cast<FakeJobState*>(s)->steps;
    calls.push_back(ids);
    call_rows.push_back(rows);
    return rows;
  }

  absl::StatusOr<std::vector<EncodedImage>> Preview(JobState& job) override {
    auto& f = static_cast<FakeJobState&>(job);
    if (f.id == broken_preview_job_id) return absl::InternalError("fake preview encoder failure");
    return std::vector<EncodedImage>(
        f.images, EncodedImage{absl::StrCat("preview ", f.steps_done()), ImageFormat::kPng, 1, 1, 0, 0});
  }

  absl::StatusOr<std::vector<EncodedImage>> Finish(JobState& job) override {
    if (during_finish) during_finish();
    auto& f = static_cast<FakeJobState&>(job);
    return std::vector<EncodedImage>(f.images, EncodedImage{"image", ImageFormat::kPng, 1, 1, 0, 0});
  }

  std::vector<std::vector<std::string>> starts;  // job ids per Start call
  std::vector<size_t> start_init_pixels;         // per request Start saw: its decoded init image's bytes
  std::vector<std::vector<std::string>> calls;   // job ids per Step call
  std::vector<int> call_rows;
  std::string poison_job_id;
  std::string broken_preview_job_id;
  int calls_per_step = 1;  // of the jobs Start makes from now on
  // A Step of more rows runs out of memory (RESOURCE_EXHAUSTED); 0: never.
  int max_rows = 0;
  // Hears the job ids of every Step call that fails for no other reason (before it counts), e.g.
  // to advance a fake clock by what the call would take.
  std::function<void(const std::vector<std::string>& ids)> on_call;
  // Run inside Step and Finish: what another thread does while the model runs.
  std::function<void()> during_step;
  std::function<void()> during_finish;
};

}  // namespace imagegen::test

#endif  // IMAGEGEN_TESTS_SUPPORT_FAKE_PIPELINE_H_
