#include "core/image/png_codec.h"

#include <png.h>

#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace imagegen {
namespace {

png_uint_32 FormatFor(int channels) {
  switch (channels) {
    case 1: return PNG_FORMAT_GRAY;
    case 3: return PNG_FORMAT_RGB;
    case 4: return PNG_FORMAT_RGBA;
    default: return 0;
  }
}

}  // namespace

absl::StatusOr<std::string> EncodePng(const RasterImage& image) {
  const png_uint_32 format = FormatFor(image.channels);
  if (format == 0 && image.channels != 1) {
    return absl::InvalidArgumentError(absl::StrCat("PNG: channels is ", image.channels, "; allowed 1, 3, 4"));
  }
  if (image.width <= 0 || image.height <= 0 ||
      image.pixels.size() != static_cast<size_t>(image.width) * image.height * image.channels) {
    return absl::InvalidArgumentError(absl::StrCat("PNG: ", image.width, "x", image.height, "x",
                                                   image.channels, " does not match ",
                                                   image.pixels.size(), " bytes of pixels"));
  }
  png_image png;
  std::memset(&png, 0, sizeof(png));
  png.version = PNG_IMAGE_VERSION;
  png.width = image.width;
  png.height = image.height;
  png.format = format;
  png_alloc_size_t size = 0;
  // First call measures, second writes (libpng's simplified API).
  if (!png_image_write_to_memory(&png, nullptr, &size, 0, image.pixels.data(), 0, nullptr)) {
    return absl::InternalError(absl::StrCat("PNG encode: ", png.message));
  }
  std::string out(size, '\0');
  if (!png_image_write_to_memory(&png, out.data(), &size, 0, image.pixels.data(), 0, nullptr)) {
    return absl::InternalError(absl::StrCat("PNG encode: ", png.message));
  }
  out.resize(size);
  return out;
}

absl::Status CheckDecodeSize(absl::string_view format, uint64_t width, uint64_t height, const DecodeLimits& limits) {
  const uint64_t side = static_cast<uint64_t>(limits.max_side);
  if (width <= side && height <= side && width * height <= static_cast<uint64_t>(limits.max_pixels)) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat("a ", format, " of ", width, "x", height, " pixels; allowed: at most ",
                                                 limits.max_side, " per side and ", limits.max_pixels, " pixels"));
}

absl::StatusOr<RasterImage> DecodePng(absl::string_view data, const DecodeLimits& limits) {
  png_image png;
  std::memset(&png, 0, sizeof(png));
  png.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&png, data.data(), data.size())) {
    return absl::InvalidArgumentError(absl::StrCat("not a decodable PNG: ", png.message));
  }
  if (absl::Status size = CheckDecodeSize("PNG", png.width, png.height, limits); !size.ok()) {
    png_image_free(&png);
    return size;
  }
  RasterImage out;
  if (png.format & PNG_FORMAT_FLAG_COLOR) {
    png.format = (png.format & PNG_FORMAT_FLAG_ALPHA) ? PNG_FORMAT_RGBA : PNG_FORMAT_RGB;
  } else {
    png.format = PNG_FORMAT_GRAY;
  }
  out.width = static_cast<int>(png.width);
  out.height = static_cast<int>(png.height);
  out.channels = static_cast<int>(PNG_IMAGE_PIXEL_CHANNELS(png.format));
  out.pixels.resize(PNG_IMAGE_SIZE(png));
  if (!png_image_finish_read(&png, nullptr, out.pixels.data(), 0, nullptr)) {
    png_image_free(&png);
    return absl::InvalidArgumentError(absl::StrCat("not a decodable PNG: ", png.message));
  }
  return out;
}

absl::Status CheckLossyEncodable(absl::string_view format, const RasterImage& image, int quality, int max_side) {
  if (quality < 1 || quality > 100) {
    return absl::InvalidArgumentError(absl::StrCat(format, ": quality is ", quality, "; allowed 1..100"));
  }
  if (image.channels < 1 || image.channels > 4) {
    return absl::InvalidArgumentError(absl::StrCat(format, ": channels is ", image.channels, "; allowed 1, 2, 3, 4"));
  }
  if (image.width <= 0 || image.height <= 0 ||
      image.pixels.size() != static_cast<size_t>(image.width) * image.height * image.channels) {
    return absl::InvalidArgumentError(absl::StrCat(format, ": ", image.width, "x", image.height, "x",
                                                   image.channels, " does not match ", image.pixels.size(),
                                                   " bytes of pixels"));
  }
  if (image.width > max_side || image.height > max_side) {
    return absl::InvalidArgumentError(absl::StrCat(format, ": ", image.width, "x", image.height,
                                                   " pixels; allowed at most ", max_side, " per side"));
  }
  return absl::OkStatus();
}

}  // namespace imagegen
