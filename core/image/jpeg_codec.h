// JPEG encoding and decoding through libjpeg (libjpeg-turbo).
#ifndef IMAGEGEN_CORE_IMAGE_JPEG_CODEC_H_
#define IMAGEGEN_CORE_IMAGE_JPEG_CODEC_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/image/png_codec.h"

namespace imagegen {

// `quality` 1..100. INVALID_ARGUMENT for a size/channel mismatch (1 or 3 channels). Thread-safe.
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
