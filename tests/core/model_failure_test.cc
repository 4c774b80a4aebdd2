// ModelFailure on the exceptions LibTorch 1.13 throws: the interpreter's wrapping of a module's
// own raise and of an allocator failure (messages as recorded from tests/server/fault_test.cc's
// tiny-faulty bundle), and c10 errors thrown outside TorchScript.
#include "core/engine/model_failure.h"

#include <stdexcept>

#include <c10/util/Exception.h>
#include <gtest/gtest.h>

namespace imagegen {
namespace {

constexpr char kRaised[] = R"(The following operation failed in the TorchScript interpreter.
Traceback of TorchScript, serialized code (most recent call last):
  File "code/__torch__/___torch_mangle_50.py", line 12, in forward
    if torch.eq(torch.size(x, 3), 16):
      ops.prim.RaiseException(_0, "builtins.RuntimeError")
      ~~~~~~~~~~~~~~~~~~~~~~~ <--- HERE

Traceback of TorchScript, original code (most recent call last):
  File "export_random.py", line 68, in forward
        if x.size(3) == self.throw_width:
            raise RuntimeError("tiny-faulty UNet: this latent width always fails")
            ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~ <--- HERE
builtins.RuntimeError: tiny-faulty UNet: this latent width always fails
)";

constexpr char kAllocation[] = R"(The following operation failed in the TorchScript interpreter.
Traceback of TorchScript, serialized code (most recent call last):
  File "code/__torch__/___torch_mangle_50.py", line 16, in forward
      waste = torch.new_empty(x, [1125899906842624], dtype=0)
              ~~~~~~~~~~~~~~~ <--- HERE
RuntimeError: [enforce fail at alloc_cpu.cpp:75] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to allocate 1125899906842624 bytes. Error code 12 (Cannot allocate memory)
)";

TEST(ModelFailure, AModulesOwnErrorIsInternalWithTheErrorLineOnly) {
  const absl::Status s = ModelFailure("tiny", std::runtime_error(kRaised));
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(s.message(), "model tiny failed: RuntimeError: tiny-faulty UNet: this latent width always fails");
}

TEST(ModelFailure, AnAllocationFailureIsResourceExhausted) {
  const absl::Status s = ModelFailure("tiny", std::runtime_error(kAllocation));
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(s.message(),
            "model tiny ran out of memory: RuntimeError: [enforce fail at alloc_cpu.cpp:75] err == 0. "
            "DefaultCPUAllocator: can't allocate memory: you tried to allocate 1125899906842624 bytes. "
            "Error code 12 (Cannot allocate memory)");
}

TEST(ModelFailure, AC10ErrorKeepsItsFirstLineAndOutOfMemoryIsKnownByItsType) {
  const absl::Status error = ModelFailure("tiny", c10::Error("shapes do not match", "frame #0: at::cat\nframe #1: ..."));
  EXPECT_EQ(error.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(error.message(), "model tiny failed: shapes do not match");
  const absl::Status oom = ModelFailure("tiny", c10::OutOfMemoryError("Tried to allocate 2.00 GiB", "frame #0: ..."));
  EXPECT_EQ(oom.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(oom.message(), "model tiny ran out of memory: Tried to allocate 2.00 GiB");
}

}  // namespace
}  // namespace imagegen
