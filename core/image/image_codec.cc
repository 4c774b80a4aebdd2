#include "core/image/image_codec.h"

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/match.h"
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

namespace {

constexpr absl::string_view kPngSignature("\x89PNG\r\n\x1a\n", 8);
constexpr absl::string_view kJpegSignature("\xff\xd8\xff", 3);

absl::Status UnknownSignature() {
  return absl::InvalidArgumentError("neither a PNG nor a JPEG (unknown signature)");
}

}  // namespace

absl::StatusOr<ImageHeader> PeekImageHeader(absl::string_view data) {
  ImageFormat format;
  absl::StatusOr<ImageSize> size;
  if (absl::StartsWith(data, kPngSignature)) {
    format = ImageFormat::kPng;
    size = PeekPngSize(data);
  } else if (absl::StartsWith(data, kJpegSignature)) {
    format = ImageFormat::kJpeg;
    size = PeekJpegSize(data);
  } else {
    return UnknownSignature();
  }
  if (!size.ok()) return size.status();
  return ImageHeader{format, size->width, size->height};
}

absl::StatusOr<RasterImage> DecodeImage(absl::string_view data, const DecodeLimits& limits) {
  if (absl::StartsWith(data, kPngSignature)) return DecodePng(data, limits);
  if (absl::StartsWith(data, kJpegSignature)) return DecodeJpeg(data, limits);
  return UnknownSignature();
}

}  // namespace imagegen
