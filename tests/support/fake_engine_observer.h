// An EngineObserver that counts what the engine reports.
#ifndef IMAGEGEN_TESTS_SUPPORT_FAKE_ENGINE_OBSERVER_H_
#define IMAGEGEN_TESTS_SUPPORT_FAKE_ENGINE_OBSERVER_H_

#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "core/engine/engine_observer.h"

namespace imagegen::test {

// Thread-safe and never blocks (a mutex held only to copy a counter), as EngineObserver requires.
// Outlives the engine it observes.
class FakeEngineObserver : public EngineObserver {
 public:
  int jobs_finished(JobOutcome outcome) const;
  int jobs_started() const;
  int jobs_rejected() const;
  int first_previews() const;
  int images_finished() const;  // the `images` of every OnJobFinished, summed
  // The `rows` of every OnModelCall, in order.
  std::vector<int> model_call_rows() const;
  // The `job_steps` of every OnModelCall, in order.
  std::vector<int> model_call_steps() const;
  // The job ids of every OnPreviewFailed, in order.
  std::vector<std::string> preview_failures() const;
  std::vector<int> batch_splits() const;  // the rows of every call that was split

  void OnJobRejected(const std::string& model) override;
  void OnJobStarted(const std::string& model, absl::Duration queue_time) override;
  void OnModelCall(const std::string& model, int rows, int job_steps, absl::Duration duration) override;
  void OnFirstPreview(const std::string& model, absl::Duration since_accepted) override;
  void OnBatchSplit(const std::string& model, int rows) override;
  void OnPreviewFailed(const std::string& model, const std::string& job_id, const absl::Status& status) override;
  void OnJobFinished(const std::string& model, JobOutcome outcome, absl::Duration total,
                     int images) override;

 private:
  mutable absl::Mutex mu_;
  std::map<JobOutcome, int> finished_ ABSL_GUARDED_BY(mu_);
  int started_ ABSL_GUARDED_BY(mu_) = 0;
  int rejected_ ABSL_GUARDED_BY(mu_) = 0;
  int first_previews_ ABSL_GUARDED_BY(mu_) = 0;
  int images_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<int> rows_ ABSL_GUARDED_BY(mu_);
  std::vector<int> steps_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> preview_failures_ ABSL_GUARDED_BY(mu_);
  std::vector<int> batch_splits_ ABSL_GUARDED_BY(mu_);
};

}  // namespace imagegen::test

#endif  // IMAGEGEN_TESTS_SUPPORT_FAKE_ENGINE_OBSERVER_H_
