#include "core/model/bundle_dirs.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace imagegen {

namespace fs = std::filesystem;

absl::StatusOr<std::vector<std::string>> FindBundleDirs(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return absl::NotFoundError(absl::StrCat(dir, ": not a folder"));
  if (fs::exists(fs::path(dir) / "model.json")) return std::vector<std::string>{dir};
  std::vector<std::string> out;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.is_directory() && fs::exists(entry.path() / "model.json")) out.push_back(entry.path().string());
  }
  std::sort(out.begin(), out.end());
  if (out.empty()) return absl::NotFoundError(absl::StrCat(dir, ": holds no model bundle (no model.json)"));
  return out;
}

absl::StatusOr<std::string> ReadBundleFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path.string(), ": missing or unreadable"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace imagegen
