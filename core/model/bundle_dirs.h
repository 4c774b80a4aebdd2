// Where model bundles are on disk. No LibTorch here: the server finds its bundles cheaply.
#ifndef IMAGEGEN_CORE_MODEL_BUNDLE_DIRS_H_
#define IMAGEGEN_CORE_MODEL_BUNDLE_DIRS_H_

#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace imagegen {

// Finds bundles under `dir`: `dir` itself when it holds a model.json, else each direct
// subfolder that does. Sorted by folder name. NOT_FOUND when there is none.
absl::StatusOr<std::vector<std::string>> FindBundleDirs(const std::string& dir);

// The bytes of one file of a bundle. NOT_FOUND naming the path when it is missing or unreadable.
absl::StatusOr<std::string> ReadBundleFile(const std::filesystem::path& path);

}  // namespace imagegen

#endif  // IMAGEGEN_CORE_MODEL_BUNDLE_DIRS_H_
