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

// INVALID_ARGUMENT for a size/channel mismatch; INTERNAL if libpng fails. Thread-safe.
absl::StatusOr<std::string> EncodePng(const RasterImage& image);

// The largest width or height the decoders accept unless told a smaller one.
inline constexpr int kMaxDecodeSide = 16384;

// INVALID_ARGUMENT naming libpng's reason for bytes that are not a decodable PNG, or for a
// width or height above `max_side` (checked from the header, before any pixel is allocated, so
// that a few bytes declaring a huge image cannot exhaust memory).
// Gray stays gray (1 channel); everything else decodes to RGB (3) or RGBA (4). Thread-safe.
absl::StatusOr<RasterImage> DecodePng(absl::string_view data, int max_side = kMaxDecodeSide);

}  // namespace imagegen

#endif  // IMAGEGEN_CORE_IMAGE_PNG_CODEC_H_
