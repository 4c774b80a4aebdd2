#include "core/image/image_codec.h"

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/image/jpeg_codec.h"
#include "core/image/webp_codec.h"

namespace imagegen {
namespace {

// libpng's simplified writer has no gray+alpha format that EncodePng accepts: write it as RGBA.
RasterImage GrayAlphaToRgba(const RasterImage& image) {
  RasterImage rgba;
  rgba.width = image.width;
  rgba.height = image.height;
  rgba.channels = 4;
  const size_t count = static_cast<size_t>(image.width) * image.height;
  rgba.pixels.resize(count * 4);
  for (size_t i = 0; i < count; ++i) {
    uint8_t* pixel = &rgba.pixels[i * 4];
    pixel[0] = pixel[1] = pixel[2] = image.pixels[i * 2];
    pixel[3] = image.pixels[i * 2 + 1];
  }
  return rgba;
}

}  // namespace

const char* ImageFormatName(ImageFormat format) {
  switch (format) {
    case ImageFormat::kPng: return "png";
    case ImageFormat::kJpeg: return "jpeg";
    case ImageFormat::kWebp: return "webp";
  }
  return "unknown";
}

absl::StatusOr<std::string> EncodeImage(const RasterImage& image, ImageFormat format, int quality) {
  switch (format) {
    case ImageFormat::kPng:
      if (image.channels == 2 &&
          image.pixels.size() == static_cast<size_t>(image.width) * image.height * 2 && image.width > 0 &&
          image.height > 0) {
        return EncodePng(GrayAlphaToRgba(image));
      }
      return EncodePng(image);
    case ImageFormat::kJpeg:
      return EncodeJpeg(image, quality);
    case ImageFormat::kWebp:
      return EncodeWebp(image, quality);
  }
  return absl::InvalidArgumentError(absl::StrCat("image format ", static_cast<int>(format), " is unknown"));
}

}  // namespace imagegen
