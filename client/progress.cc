#include "client/progress.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cli.h"

namespace imagegen::client {
namespace {

constexpr int kBarWidth = 24;
// A small model runs hundreds of steps a second; redrawing for each would cost more than it shows.
constexpr absl::Duration kMinRedrawInterval = absl::Milliseconds(50);

std::string Bar(uint32_t step, uint32_t total) {
  const int filled = total == 0 ? 0 : static_cast<int>(uint64_t{step} * kBarWidth / total);
  return absl::StrCat("[", std::string(filled, '#'), std::string(kBarWidth - filled, '.'), "]");
}

// Coarser than FormatSeconds: an estimate to the millisecond would claim a precision it lacks.
std::string FormatEta(double seconds) {
  if (seconds < 10) return absl::StrFormat("%.1f s", seconds);
  if (seconds < 60) return absl::StrFormat("%.0f s", seconds);
  return FormatSeconds(seconds);
}

}  // namespace

ProgressLine::ProgressLine(std::FILE* out, bool interactive)
    : out_(out), interactive_(interactive) {}

void ProgressLine::Accepted(const std::string& job_id, uint32_t queue_position, absl::Time now) {
  job_id_ = job_id;
  if (interactive_) {
    Redraw(absl::StrCat("job ", job_id_, ": queued (position ", queue_position, ")"));
    last_redraw_ = now;
  } else {
    absl::FPrintF(out_, "job %s accepted (queue position %d)\n", job_id_, queue_position);
    std::fflush(out_);
  }
}

void ProgressLine::Queued(uint32_t queue_position, absl::Time now) {
  if (!interactive_) return;
  Redraw(absl::StrCat("job ", job_id_, ": queued (position ", queue_position, ")"));
  last_redraw_ = now;
}

void ProgressLine::Step(uint32_t step, uint32_t total_steps, absl::Time now) {
  if (!first_step_time_) {
    first_step_time_ = now;
    first_step_ = step;
  }
  last_step_ = step;
  total_steps_ = total_steps;
  if (!interactive_) return;
  const bool last = step >= total_steps;
  if (!last && now - last_redraw_ < kMinRedrawInterval) return;
  Redraw(StepText(step, total_steps, now));
  last_redraw_ = now;
}

void ProgressLine::Finish(absl::Time now) {
  if (interactive_) {
    if (line_open_) absl::FPrintF(out_, "\n");
    line_open_ = false;
  } else if (first_step_time_) {
    absl::FPrintF(out_, "job %s: %d/%d steps in %s\n", job_id_, last_step_, total_steps_,
                  FormatSeconds(absl::ToDoubleSeconds(now - *first_step_time_)));
  }
  std::fflush(out_);
}

std::string ProgressLine::StepText(uint32_t step, uint32_t total_steps, absl::Time now) const {
  std::string text = absl::StrCat("job ", job_id_, ": step ", step, "/", total_steps, " ",
                                  Bar(step, total_steps));
  const double elapsed = absl::ToDoubleSeconds(now - *first_step_time_);
  const uint32_t done_since_first = step - first_step_;
  if (done_since_first > 0 && elapsed > 0) {
    const double rate = done_since_first / elapsed;
    absl::StrAppendFormat(&text, " %.1f steps/s", rate);
    if (step < total_steps) {
      absl::StrAppend(&text, " ETA ", FormatEta((total_steps - step) / rate));
    }
  }
  return text;
}

void ProgressLine::Redraw(const std::string& text) {
  // Pad with blanks over the rest of the previous line instead of an ANSI erase sequence, so
  // that terminals without escape support show it cleanly too.
  const size_t pad = last_width_ > text.size() ? last_width_ - text.size() : 0;
  absl::FPrintF(out_, "\r%s%s", text, std::string(pad, ' '));
  std::fflush(out_);
  last_width_ = text.size();
  line_open_ = true;
}

}  // namespace imagegen::client
