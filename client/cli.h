// Small pure helpers of the command-line client: parsing flag values, naming output files,
// formatting tables and durations. No gRPC calls and no I/O here, so that each can be tested
// on its own. All functions are thread-compatible (no shared state).
#ifndef IMAGEGEN_CLIENT_CLI_H_
#define IMAGEGEN_CLIENT_CLI_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "imagegen/v1/imagegen.pb.h"

namespace imagegen::client {

struct ImageSize {
  uint32_t width = 0;  // 0: the model's default
  uint32_t height = 0;
};

// Parses "WxH" (for example "512x768") or "N" (a square). "" parses as {0, 0}, the model's
// default size. INVALID_ARGUMENT on anything else, naming the value.
absl::StatusOr<ImageSize> ParseImageSize(absl::string_view text);

// The file extension of an encoding, with its dot: ".png", ".jpg", ".webp" (UNSPECIFIED: PNG).
std::string FileExtension(imagegen::v1::ImageFormat format);

// "PNG", "JPEG", "WebP" (UNSPECIFIED: "PNG"), for messages.
std::string FormatName(imagegen::v1::ImageFormat format);

// Whether `extension` (with its dot, any case) is a usual name of `format`: ".png" of PNG (and
// UNSPECIFIED), ".jpg" and ".jpeg" of JPEG, ".webp" of WebP.
bool ExtensionNamesFormat(absl::string_view extension, imagegen::v1::ImageFormat format);

// The encoding that --out asks for: its extension (any case) .png, .jpg or .jpeg, .webp; PNG when
// it has none or names a directory (`out_is_directory`). INVALID_ARGUMENT naming --out, the
// extension and the allowed ones for any other extension.
absl::StatusOr<imagegen::v1::ImageFormat> OutputFormatFromOut(absl::string_view out,
                                                             bool out_is_directory);

// --preview_format: "png", "jpeg" (or "jpg"), "webp", any case. INVALID_ARGUMENT naming the flag
// and the allowed values otherwise.
absl::StatusOr<imagegen::v1::ImageFormat> ParsePreviewFormat(absl::string_view text);

// --quality: 0 (the server's default) or 1..100, returned as the request's field.
// INVALID_ARGUMENT naming the flag, the value and the range otherwise.
absl::StatusOr<uint32_t> ParseQuality(int64_t value);

// Where the final images go, decided before the call so that a bad --out fails before the
// server spends any compute on it.
class OutputNamer {
 public:
  // `out` is the --out flag. It names a directory when it ends with '/' or is an existing
  // directory (`out_is_directory`); the caller checks the file system, this class does not.
  OutputNamer(std::string out, bool out_is_directory);

  // The path of image `seed` of a result that holds `num_images` images, encoded as `format`
  // (the format the server returned, Image.format). The file always carries an extension of
  // `format`: out's own when it names `format` (".jpeg" stays ".jpeg"), else FileExtension's,
  // added to an out without one or replacing one that names another format.
  //   directory:       DIR/<seed><ext>
  //   one image:       "image.png" -> "image.png"; "image" -> "image.png"; JPEG: "image.jpg"
  //   several images:  "image.png" -> "image-<seed>.png"
  std::string PathFor(uint64_t seed, int num_images, imagegen::v1::ImageFormat format) const;

  bool is_directory() const { return out_is_directory_; }

 private:
  std::string out_;
  bool out_is_directory_;
};

// DIR/step-0001-image-0.png: sorts by step in a file listing, then by image.
std::string PreviewPath(absl::string_view dir, uint32_t step, uint32_t index,
                        imagegen::v1::ImageFormat format);

// "0.123 s", "12.3 s", "2:05": short enough for a progress line.
std::string FormatSeconds(double seconds);

// A plain-text table of ListModels: one row per model, the default model marked with '*'.
std::string FormatModelsTable(const imagegen::v1::ListModelsResponse& response);

// The client's exit status for `status`: the gRPC code number (gRPC and Abseil share the
// numbering), so that scripts can tell UNAVAILABLE (14) from INVALID_ARGUMENT (3).
int ExitCode(const absl::Status& status);

// The bearer token in `contents`, the text of --token_file (or the value of IMAGEGEN_TOKEN): the
// first line that is neither blank nor starts with '#', trimmed, as in the server's
// --auth_tokens_file, so a plain TOKEN line of that file works as is (from a NAME:TOKEN line, the
// client needs the TOKEN alone). INVALID_ARGUMENT naming `source`
// (never the token) when there is none, or when it holds a character other than printable ASCII
// without spaces (what an HTTP/2 header carries unchanged).
absl::StatusOr<std::string> ParseBearerToken(absl::string_view contents, absl::string_view source);

// `text` as a JSON string literal, quotes included: '"', '\\' and control characters escaped
// (\n, \t, ... or \u00XX); other bytes, UTF-8 included, pass through unchanged.
std::string JsonString(absl::string_view text);

// `value` as a JSON number ("%.9g"); NaN and infinities, which JSON lacks, as null.
std::string JsonNumber(double value);

// Scales an RGBA image (`width` x `height`, 4 bytes a pixel, no row padding) to
// `out_width` x `out_height` with nearest-neighbour sampling.
std::vector<uint8_t> ScaleNearestRgba(const std::vector<uint8_t>& rgba, uint32_t width,
                                      uint32_t height, uint32_t out_width, uint32_t out_height);

}  // namespace imagegen::client

#endif  // IMAGEGEN_CLIENT_CLI_H_
