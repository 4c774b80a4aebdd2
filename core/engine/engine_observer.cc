#include "core/engine/engine_observer.h"

namespace imagegen {

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

}  // namespace imagegen
