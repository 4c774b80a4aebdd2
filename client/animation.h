// Writes the denoising sequence of a Generate call as one animated WebP (--animation).
// Links libpng, libjpeg and libwebp (to decode the previews and the result, whichever of the
// three encodings the server sent) and libwebpmux (to encode).
#ifndef IMAGEGEN_CLIENT_ANIMATION_H_
#define IMAGEGEN_CLIENT_ANIMATION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace imagegen::client {

// An 8-bit RGBA image, rows top to bottom, no padding.
struct RgbaImage {
  uint32_t width = 0;
  uint32_t height = 0;
  std::vector<uint8_t> pixels;  // width * height * 4
};

// Decodes a PNG (gray, gray+alpha, RGB, RGBA, palette) into RGBA. INVALID_ARGUMENT when the
// bytes are not a PNG libpng can read.
absl::StatusOr<RgbaImage> DecodePngToRgba(absl::string_view png);

// Decodes a baseline or progressive JPEG (gray or colour) into RGBA, alpha 255.
// INVALID_ARGUMENT when libjpeg cannot read it or it is larger than 8192 pixels a side.
absl::StatusOr<RgbaImage> DecodeJpegToRgba(absl::string_view jpeg);

// Decodes a still WebP (lossy or lossless) into RGBA. INVALID_ARGUMENT when libwebp cannot or
// it is larger than 8192 pixels a side.
absl::StatusOr<RgbaImage> DecodeWebpToRgba(absl::string_view webp);

// Decodes a PNG, JPEG or WebP, told apart by their signatures rather than by a format field that
// might disagree with the bytes. INVALID_ARGUMENT for anything else or what its decoder refuses.
absl::StatusOr<RgbaImage> DecodeImageToRgba(absl::string_view bytes);

// Collects frames, then encodes them. Each frame is shown `frame_ms`; the last `last_frame_ms`.
// Frames of another size than the last one added are scaled to it (nearest neighbour) at Write.
class AnimationBuilder {
 public:
  void Add(RgbaImage frame) { frames_.push_back(std::move(frame)); }
  size_t size() const { return frames_.size(); }
  // Encodes all frames into `path` as an animated WebP (lossless frames).
  absl::Status Write(const std::string& path, int frame_ms, int last_frame_ms) const;

 private:
  std::vector<RgbaImage> frames_;
};

}  // namespace imagegen::client

#endif  // IMAGEGEN_CLIENT_ANIMATION_H_
