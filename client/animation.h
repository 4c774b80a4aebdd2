// Writes the denoising sequence of a Generate call as one animated WebP (--animation).
// Links libpng (to decode the PNG previews and result) and libwebpmux/libwebp (to encode).
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
