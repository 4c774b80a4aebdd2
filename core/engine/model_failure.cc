#include "core/engine/model_failure.h"

#include <vector>

#include <c10/util/Exception.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"

namespace imagegen {
namespace {

// What the TorchScript interpreter puts before the error of a failed op (torch 1.13,
// torch/csrc/jit/runtime/interpreter.cpp): this line, then one or two tracebacks whose lines are
// indented, then "ErrorType: message" unindented.
constexpr absl::string_view kInterpreterPreamble = "The following operation failed in the TorchScript interpreter.";

std::string ErrorLine(const std::string& what) {
  const std::vector<absl::string_view> lines = absl::StrSplit(what, '\n');
  absl::string_view line = lines.front();
  if (absl::StartsWith(what, kInterpreterPreamble)) {
    size_t last_traceback = 0;
    for (size_t i = 0; i < lines.size(); ++i) {
      if (absl::StartsWith(lines[i], "Traceback of TorchScript")) last_traceback = i;
    }
    for (size_t i = last_traceback + 1; i < lines.size(); ++i) {
      if (!lines[i].empty() && lines[i].front() != ' ') {
        line = lines[i];
        break;
      }
    }
    // "builtins.RuntimeError: ..." is how a module's own `raise RuntimeError(...)` arrives.
    absl::ConsumePrefix(&line, "builtins.");
  }
  return std::string(line);
}

bool IsOutOfMemory(const std::exception& e, absl::string_view line) {
  if (dynamic_cast<const c10::OutOfMemoryError*>(&e) != nullptr) return true;
  // The interpreter rethrows an op's c10 error as std::runtime_error, so the type is lost there:
  // the allocators' own words remain (CPU in 1.13 "can't allocate memory", later "not enough
  // memory"; CUDA "out of memory").
  return absl::StrContains(line, "can't allocate memory") || absl::StrContains(line, "not enough memory") ||
         absl::StrContains(line, "out of memory");
}

}  // namespace

absl::Status ModelFailure(const std::string& model, const std::exception& e) {
  const std::string line = ErrorLine(e.what());
  if (IsOutOfMemory(e, line)) {
    return absl::ResourceExhaustedError(absl::StrCat("model ", model, " ran out of memory: ", line));
  }
  return absl::InternalError(absl::StrCat("model ", model, " failed: ", line));
}

absl::Status RunModelCall(const std::string& model, const std::function<void()>& call) {
  try {
    call();
  } catch (const std::exception& e) {
    return ModelFailure(model, e);
  }
  return absl::OkStatus();
}

}  // namespace imagegen
