// One entry point for the formats the service returns images in: PNG (lossless), JPEG and
// lossy WebP, each with a quality where the format has one; and for those it reads (init
// images): PNG and JPEG. Pure functions over a RasterImage and bytes: thread-safe, no state, the
// caller owns what they return.
#ifndef IMAGEGEN_CORE_IMAGE_IMAGE_CODEC_H_
#define IMAGEGEN_CORE_IMAGE_IMAGE_CODEC_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
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

// What an encoded image's header says, before any pixel is decoded.
struct ImageHeader {
  ImageFormat format = ImageFormat::kPng;  // kPng or kJpeg: the formats DecodeImage reads
  int width = 0;
  int height = 0;
};

// The format and size of an encoded image from its header alone: for a PNG the signature and
// IHDR (PeekPngSize, 33 bytes), for a JPEG the markers up to the frame header (PeekJpegSize, at
// most kMaxJpegMarkersBeforeFrame of them, each skipped by its length). No pixel is decoded and
// nothing is allocated: microseconds, cheap enough for an RPC thread. The size is the one
// DecodeImage checks against its limits (CheckDecodeSize); OK does not promise that the rest
// decodes. INVALID_ARGUMENT "neither a PNG nor a JPEG (unknown signature)", or "not a decodable
// PNG: <reason>" / "not a decodable JPEG: <reason>" for a malformed header. Thread-safe.
absl::StatusOr<ImageHeader> PeekImageHeader(absl::string_view data);

// Decodes a PNG (DecodePng, png_codec.h) or a JPEG (DecodeJpeg, jpeg_codec.h), told apart by
// their signatures, to 8-bit gray (1 channel), RGB (3) or RGBA (4, PNG only). The size is
// checked against `limits` from the header (as PeekImageHeader reads it), before any pixel is
// allocated; within limits, any input of up to a few MB decodes or is refused within about
// 100 ms of CPU and a few MB beyond the pixels (tests/core/image_bomb_test.cc). INVALID_ARGUMENT
// "neither a PNG nor a JPEG (unknown signature)" for anything else, the decoder's error for a
// malformed file, and CheckDecodeSize's ("a PNG of WxH pixels; allowed: ...") for a size outside
// `limits`. Thread-safe.
absl::StatusOr<RasterImage> DecodeImage(absl::string_view data, const DecodeLimits& limits = {});

}  // namespace imagegen

#endif  // IMAGEGEN_CORE_IMAGE_IMAGE_CODEC_H_
