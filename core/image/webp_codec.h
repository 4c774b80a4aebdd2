// Lossy WebP encoding through libwebp's simple API (WebPEncodeRGB / WebPEncodeRGBA).
#ifndef IMAGEGEN_CORE_IMAGE_WEBP_CODEC_H_
#define IMAGEGEN_CORE_IMAGE_WEBP_CODEC_H_

#include <string>

#include "absl/status/statusor.h"
#include "core/image/png_codec.h"

namespace imagegen {

// Lossy WebP (VP8, 4:2:0 chroma) at libwebp's `quality` scale, 1..100. WebP has no gray mode:
// gray (1 channel) is encoded as RGB with equal channels, gray+alpha (2) as RGBA. An alpha
// channel (2 or 4) is kept (VP8L-compressed alpha; colour under fully transparent pixels may
// change). INVALID_ARGUMENT naming the value for a quality outside 1..100, for an empty raster,
// one whose pixel count does not match its size, or a side over 16383 (WEBP_MAX_DIMENSION);
// INTERNAL if libwebp fails (it gives no reason; out of memory). Thread-safe.
absl::StatusOr<std::string> EncodeWebp(const RasterImage& image, int quality = 75);

}  // namespace imagegen

#endif  // IMAGEGEN_CORE_IMAGE_WEBP_CODEC_H_
