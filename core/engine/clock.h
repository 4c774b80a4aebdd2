// Where the engine reads the time: the real clock, or in tests a fake that moves only when told
// (tests/support/fake_pipeline.h).
#ifndef IMAGEGEN_CORE_ENGINE_CLOCK_H_
#define IMAGEGEN_CORE_ENGINE_CLOCK_H_

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace imagegen {

// Implementations must be thread-safe.
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

#endif  // IMAGEGEN_CORE_ENGINE_CLOCK_H_
