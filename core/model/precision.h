// The floating-point precision a model bundle's modules run in (--dtype). Torch-free, so that the
// server's flag parsing and metrics need no LibTorch header.
#ifndef IMAGEGEN_CORE_MODEL_PRECISION_H_
#define IMAGEGEN_CORE_MODEL_PRECISION_H_

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace imagegen {

// float16 and bfloat16 need a CUDA device (ModelBundle::Load refuses them on the CPU). Samplers
// keep float32 latents whatever the precision: only the model calls run in it.
enum class Precision { kFloat32, kFloat16, kBfloat16 };

// "float32", "float16" or "bfloat16"; anything else is INVALID_ARGUMENT naming the value and
// what is allowed.
absl::StatusOr<Precision> ParsePrecision(absl::string_view name);

// The name ParsePrecision takes: "float32", "float16" or "bfloat16".
const char* PrecisionName(Precision precision);

}  // namespace imagegen

#endif  // IMAGEGEN_CORE_MODEL_PRECISION_H_
