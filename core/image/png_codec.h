// PNG encoding and decoding through libpng.
#ifndef IMAGEGEN_CORE_IMAGE_PNG_CODEC_H_
#define IMAGEGEN_CORE_IMAGE_PNG_CODEC_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace imagegen {

// 8-bit pixels, row-major, channels interleaved (1 gray, 3 RGB, 4 RGBA).
struct RasterImage {
  int width = 0;
  int height = 0;
  int channels = 0;
  std::vector<uint8_t> pixels;  // height * width * channels
};

// The lossy encoders' shared check of their input: OK when `image` has 1 to 4 channels, pixels
// matching its size, sides of at most `max_side`, and `quality` is 1..100; otherwise
// INVALID_ARGUMENT that starts with `format` ("JPEG", "WebP") and names the value.
absl::Status CheckLossyEncodable(absl::string_view format, const RasterImage& image, int quality, int max_side);

// INVALID_ARGUMENT for a size/channel mismatch; INTERNAL if libpng fails. Thread-safe.
absl::StatusOr<std::string> EncodePng(const RasterImage& image);

// How large an image the decoders accept. They check the size the header declares, before any
// pixel is allocated, so that a few bytes declaring a huge image cannot exhaust memory.
inline constexpr int kMaxDecodeSide = 16384;
struct DecodeLimits {
  int max_side = kMaxDecodeSide;  // width and height
  int64_t max_pixels = int64_t{kMaxDecodeSide} * kMaxDecodeSide;  // width * height
};

// OK when a `width` x `height` image fits `limits`; otherwise INVALID_ARGUMENT naming `format`,
// the size and the limits. The decoders' shared check.
absl::Status CheckDecodeSize(absl::string_view format, uint64_t width, uint64_t height, const DecodeLimits& limits);

// INVALID_ARGUMENT naming libpng's reason for bytes that are not a decodable PNG, or the size
// for one outside `limits` (CheckDecodeSize).
// Gray stays gray (1 channel); everything else decodes to RGB (3) or RGBA (4). Thread-safe.
absl::StatusOr<RasterImage> DecodePng(absl::string_view data, const DecodeLimits& limits = {});

}  // namespace imagegen

#endif  // IMAGEGEN_CORE_IMAGE_PNG_CODEC_H_
