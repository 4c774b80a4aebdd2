// Progress of one Generate call on the terminal.
#ifndef IMAGEGEN_CLIENT_PROGRESS_H_
#define IMAGEGEN_CLIENT_PROGRESS_H_

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>

#include "absl/time/time.h"

namespace imagegen::client {

// Shows how far a job has come on `out` (stderr). On a terminal it keeps one line up to date
// with '\r': "queued (position 2)", then "step 7/20 [#####.....] 3.1 steps/s ETA 4.2 s". Elsewhere
// (a log file, a pipe) carriage returns would only make noise, so it writes one line when the
// job is accepted and one when it ends.
//
// Not thread-safe: one thread (the one reading the stream) calls it. Does not own `out`.
class ProgressLine {
 public:
  ProgressLine(std::FILE* out, bool interactive);

  void Accepted(const std::string& job_id, uint32_t queue_position, absl::Time now);
  void Step(uint32_t step, uint32_t total_steps, absl::Time now);
  // While queued: the server's newer queue position (shown on a terminal only).
  void Queued(uint32_t queue_position, absl::Time now);
  // Ends the line (success or not), so that what is printed next starts on a fresh line.
  void Finish(absl::Time now);

 private:
  void Redraw(const std::string& text);
  std::string StepText(uint32_t step, uint32_t total_steps, absl::Time now) const;

  std::FILE* out_;
  bool interactive_;
  std::string job_id_;
  bool line_open_ = false;      // an interactive line has been drawn and not yet ended
  size_t last_width_ = 0;       // characters of the last drawn line, to blank what is left
  absl::Time last_redraw_ = absl::InfinitePast();
  // The rate is measured from the first step seen, not from acceptance, so that queue time and
  // text encoding do not make the steps look slow.
  std::optional<absl::Time> first_step_time_;
  uint32_t first_step_ = 0;
  uint32_t last_step_ = 0;
  uint32_t total_steps_ = 0;
};

}  // namespace imagegen::client

#endif  // IMAGEGEN_CLIENT_PROGRESS_H_
