#include "core/model/precision.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace imagegen {

absl::StatusOr<Precision> ParsePrecision(absl::string_view name) {
  for (Precision p : {Precision::kFloat32, Precision::kFloat16, Precision::kBfloat16}) {
    if (name == PrecisionName(p)) return p;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("dtype \"", name, "\" is not a precision; allowed: float32, float16, bfloat16"));
}

const char* PrecisionName(Precision precision) {
  switch (precision) {
    case Precision::kFloat32: return "float32";
    case Precision::kFloat16: return "float16";
    case Precision::kBfloat16: return "bfloat16";
  }
  return "float32";
}

}  // namespace imagegen
