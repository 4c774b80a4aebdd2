// One entry point for the formats the service returns images in: PNG (lossless), JPEG and
// lossy WebP, each with a quality where the format has one. Pure functions over a RasterImage:
// thread-safe, no state, the caller owns the returned bytes.
#ifndef IMAGEGEN_CORE_IMAGE_IMAGE_CODEC_H_
#define IMAGEGEN_CORE_IMAGE_IMAGE_CODEC_H_

#include <string>

#include "absl/status/statusor.h"
#include "core/image/png_codec.h"

namespace imagegen {

enum class ImageFormat { kPng, kJpeg, kWebp };

// "png", "jpeg" or "webp" (lowercase, for messages, metrics labels and logs); "unknown" for a
// value outside the enum.
const char* ImageFormatName(ImageFormat format);

// The quality range of the lossy formats (JPEG, WebP): libjpeg's and libwebp's own scales.
inline constexpr int kMinImageQuality = 1;
inline constexpr int kMaxImageQuality = 100;

// Encodes `image` (1 gray, 2 gray+alpha, 3 RGB or 4 RGBA channels) as `format`:
//   kPng   lossless; `quality` is ignored; gray+alpha is written as RGBA, the rest as given.
//   kJpeg  EncodeJpeg (jpeg_codec.h): alpha is dropped.
//   kWebp  EncodeWebp (webp_codec.h): lossy, alpha kept; gray is written as RGB.
// INVALID_ARGUMENT, naming the format and the value, for a quality outside
// kMinImageQuality..kMaxImageQuality (JPEG, WebP), an empty raster, one whose pixel count does
// not match its size, an unsupported channel count or a side too large for the format;
// INTERNAL if the codec library fails. Thread-safe.
absl::StatusOr<std::string> EncodeImage(const RasterImage& image, ImageFormat format, int quality);

}  // namespace imagegen

#endif  // IMAGEGEN_CORE_IMAGE_IMAGE_CODEC_H_
