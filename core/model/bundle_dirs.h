// Where model bundles are on disk. No LibTorch here: the server finds its bundles cheaply.
#ifndef IMAGEGEN_CORE_MODEL_BUNDLE_DIRS_H_
#define IMAGEGEN_CORE_MODEL_BUNDLE_DIRS_H_

#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace imagegen {

// Finds bundles under `dir`: `dir` itself when it holds a model.json, else each direct
// subfolder that does. Sorted by folder name. NOT_FOUND when there is none.
absl::StatusOr<std::vector<std::string>> FindBundleDirs(const std::string& dir);

// OK when `path` may be read as a file of a bundle: a symbolic link is followed only to a file
// inside the folder that holds the link (Kubernetes' ConfigMap mounts link each file into a
// hidden subfolder), so that a bundle cannot make the server read, and report on, a file
// elsewhere. INVALID_ARGUMENT naming the path otherwise (never the link's target).
absl::Status CheckBundleFile(const std::filesystem::path& path);

// The bytes of one file of a bundle (CheckBundleFile first). NOT_FOUND naming the path when it
// is missing or unreadable.
absl::StatusOr<std::string> ReadBundleFile(const std::filesystem::path& path);

// What an error may quote of a bundle file's text (a token, a key): at most 32 bytes, with
// "..." when cut. Errors never quote whole lines.
std::string QuoteBundleText(absl::string_view text);

}  // namespace imagegen

#endif  // IMAGEGEN_CORE_MODEL_BUNDLE_DIRS_H_
