// JPEG encoding and decoding through libjpeg (libjpeg-turbo).
#ifndef IMAGEGEN_CORE_IMAGE_JPEG_CODEC_H_
#define IMAGEGEN_CORE_IMAGE_JPEG_CODEC_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/image/png_codec.h"

namespace imagegen {

// Baseline JPEG (4:2:0 chroma for colour) at libjpeg's `quality` scale, 1..100. Gray (1 channel)
// stays gray; RGB (3) is RGB; an alpha channel (2 or 4) is dropped, since JPEG has none.
// INVALID_ARGUMENT naming the value for a quality outside 1..100, for an empty raster, one whose
// pixel count does not match its size, or a side over 65500; INTERNAL naming libjpeg's reason if
// the encoder fails (out of memory). Thread-safe.
absl::StatusOr<std::string> EncodeJpeg(const RasterImage& image, int quality = 90);

// INVALID_ARGUMENT naming libjpeg's reason for bytes that are not a decodable JPEG, or the size
// for one outside `limits` (CheckDecodeSize). Gray stays gray (1 channel); everything else
// decodes to RGB (3). Thread-safe.
absl::StatusOr<RasterImage> DecodeJpeg(absl::string_view data, const DecodeLimits& limits = {});

// Decodes a PNG or a JPEG, told apart by their signatures; INVALID_ARGUMENT for anything else
// and for a size outside `limits` (read from the header, before allocating).
absl::StatusOr<RasterImage> DecodeImage(absl::string_view data, const DecodeLimits& limits = {});

}  // namespace imagegen

#endif  // IMAGEGEN_CORE_IMAGE_JPEG_CODEC_H_
