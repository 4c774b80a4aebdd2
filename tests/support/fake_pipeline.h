// A threadless stand-in for the models, and a clock that moves only when the test says so, for
// deterministic tests of the step scheduler (tests/core/step_scheduler_test.cc).
#ifndef IMAGEGEN_TESTS_SUPPORT_FAKE_PIPELINE_H_
#define IMAGEGEN_TESTS_SUPPORT_FAKE_PIPELINE_H_

#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/engine/pipeline.h"

namespace imagegen::test {

class FakeClock : public Clock {
 public:
  absl::Time Now() const override { return now_; }
  void Advance(absl::Duration d) { now_ += d; }

 private:
  absl::Time now_ = absl::FromUnixSeconds(1'000'000);
};

// A job that takes request.steps steps; rows as the engine counts them.
class FakeJobState : public JobState {
 public:
  explicit FakeJobState(const JobRequest& r)
      : id(r.job_id), total(r.steps), row_count(r.guidance_scale != 1.0 ? 2 * r.num_images : r.num_images),
        images(r.num_images) {}
  bool done() const override { return steps >= total; }
  int steps_done() const override { return steps; }
  int total_steps() const override { return total; }
  int rows() const override { return row_count; }

  std::string id;
  int steps = 0;
  int total;
  int row_count;
  int images;
};

// Records every call; throws from Step when a job in the batch has the id `poison_job_id`, and
// from Start when a request's prompt is "throw start"; Start refuses a request whose prompt is
// "fail start".
class FakePipeline : public Pipeline {
 public:
  std::vector<absl::StatusOr<std::unique_ptr<JobState>>> Start(
      const std::vector<const JobRequest*>& requests) override {
    std::vector<std::string> ids;
    std::vector<absl::StatusOr<std::unique_ptr<JobState>>> out;
    for (const JobRequest* r : requests) {
      ids.push_back(r->job_id);
      if (r->prompt == "fail start") {
        out.push_back(absl::InvalidArgumentError("sampler refused"));
      } else {
        out.push_back(std::make_unique<FakeJobState>(*r));
      }
    }
    starts.push_back(ids);
    for (const JobRequest* r : requests) {
      if (r->prompt == "throw start") throw std::runtime_error("fake text encoder failure");
    }
    return out;
  }

  int Step(const std::vector<JobState*>& batch) override {
    if (during_step) during_step();
    std::vector<std::string> ids;
    int rows = 0;
    for (JobState* s : batch) {
      auto* f = static_cast<FakeJobState*>(s);
      if (f->id == poison_job_id) throw std::runtime_error("fake UNet failure");
      ids.push_back(f->id);
      rows += f->rows();
    }
    for (JobState* s : batch) ++static_cast<FakeJobState*>(s)->steps;
    calls.push_back(ids);
    call_rows.push_back(rows);
    return rows;
  }

  absl::StatusOr<std::vector<EncodedImage>> Preview(JobState& job) override {
    auto& f = static_cast<FakeJobState&>(job);
    return std::vector<EncodedImage>(f.images, EncodedImage{absl::StrCat("preview ", f.steps), 1, 1, 0, 0});
  }

  absl::StatusOr<std::vector<EncodedImage>> Finish(JobState& job) override {
    if (during_finish) during_finish();
    auto& f = static_cast<FakeJobState&>(job);
    return std::vector<EncodedImage>(f.images, EncodedImage{"image", 1, 1, 0, 0});
  }

  std::vector<std::vector<std::string>> starts;  // job ids per Start call
  std::vector<std::vector<std::string>> calls;   // job ids per Step call
  std::vector<int> call_rows;
  std::string poison_job_id;
  // Run inside Step and Finish: what another thread does while the model runs.
  std::function<void()> during_step;
  std::function<void()> during_finish;
};

}  // namespace imagegen::test

#endif  // IMAGEGEN_TESTS_SUPPORT_FAKE_PIPELINE_H_
