// Reads a .safetensors file (the reference data's format): an 8-byte little-endian header
// length, a JSON header {name: {dtype, shape, data_offsets}}, then the raw little-endian data.
#ifndef IMAGEGEN_TESTS_SUPPORT_SAFETENSORS_H_
#define IMAGEGEN_TESTS_SUPPORT_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace imagegen::test {

struct SafeTensor {
  std::string dtype;  // "F32", "I64", ...
  std::vector<int64_t> shape;
  std::string data;  // raw little-endian bytes
};

// Every tensor of the file by name. NOT_FOUND for a missing file; INVALID_ARGUMENT, naming the
// file, for a malformed header or offsets past the end.
absl::StatusOr<std::map<std::string, SafeTensor>> ReadSafetensors(const std::string& path);

// The F32 tensor's values. REQUIRES: tensor.dtype == "F32".
std::vector<float> Floats(const SafeTensor& tensor);

}  // namespace imagegen::test

#endif  // IMAGEGEN_TESTS_SUPPORT_SAFETENSORS_H_
