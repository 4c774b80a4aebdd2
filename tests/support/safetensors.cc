#include "tests/support/safetensors.h"

#include <cstring>
#include <fstream>
#include <iterator>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

namespace imagegen::test {

absl::StatusOr<std::map<std::string, SafeTensor>> ReadSafetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": missing or unreadable"));
  const std::string bytes((std::istreambuf_iterator<char>(in)), {});
  auto malformed = [&](const std::string& why) { return absl::InvalidArgumentError(absl::StrCat(path, ": ", why)); };
  if (bytes.size() < 8) return malformed("shorter than its 8-byte header length");
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = header_size << 8 | static_cast<unsigned char>(bytes[i]);
  if (header_size > bytes.size() - 8) return malformed("header length past the end of the file");
  const nlohmann::json header = nlohmann::json::parse(bytes.substr(8, header_size), nullptr, false);
  if (!header.is_object()) return malformed("the header is not a JSON object");
  const size_t data_start = 8 + header_size;
  std::map<std::string, SafeTensor> out;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    const std::vector<uint64_t> offsets = entry.at("data_offsets").get<std::vector<uint64_t>>();
    if (offsets.size() != 2 || offsets[0] > offsets[1] || data_start + offsets[1] > bytes.size()) {
      return malformed(absl::StrCat(name, ": data_offsets past the end"));
    }
    SafeTensor t;
    t.dtype = entry.at("dtype").get<std::string>();
    t.shape = entry.at("shape").get<std::vector<int64_t>>();
    t.data = bytes.substr(data_start + offsets[0], offsets[1] - offsets[0]);
    out.emplace(name, std::move(t));
  }
  return out;
}

std::vector<float> Floats(const SafeTensor& tensor) {
  std::vector<float> values(tensor.data.size() / sizeof(float));
  std::memcpy(values.data(), tensor.data.data(), values.size() * sizeof(float));  // x86-64: little-endian
  return values;
}

}  // namespace imagegen::test
