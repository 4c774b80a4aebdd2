#include "core/image/webp_codec.h"

#include <webp/encode.h>
#include <webp/types.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace imagegen {
namespace {

// Gray (1 channel) to RGB, gray+alpha (2) to RGBA: the layouts libwebp's simple API takes.
std::vector<uint8_t> ExpandGray(const RasterImage& image) {
  const int out_channels = image.channels == 1 ? 3 : 4;
  const size_t count = static_cast<size_t>(image.width) * image.height;
  std::vector<uint8_t> out(count * out_channels);
  for (size_t i = 0; i < count; ++i) {
    const uint8_t gray = image.pixels[i * image.channels];
    uint8_t* pixel = &out[i * out_channels];
    pixel[0] = pixel[1] = pixel[2] = gray;
    if (out_channels == 4) pixel[3] = image.pixels[i * image.channels + 1];
  }
  return out;
}

struct WebPDeleter {
  void operator()(uint8_t* bytes) const { WebPFree(bytes); }
};

}  // namespace

absl::StatusOr<std::string> EncodeWebp(const RasterImage& image, int quality) {
  if (quality < 1 || quality > 100) {
    return absl::InvalidArgumentError(absl::StrCat("WebP: quality is ", quality, "; allowed 1..100"));
  }
  if (image.channels < 1 || image.channels > 4) {
    return absl::InvalidArgumentError(absl::StrCat("WebP: channels is ", image.channels, "; allowed 1, 2, 3, 4"));
  }
  if (image.width <= 0 || image.height <= 0 ||
      image.pixels.size() != static_cast<size_t>(image.width) * image.height * image.channels) {
    return absl::InvalidArgumentError(absl::StrCat("WebP: ", image.width, "x", image.height, "x",
                                                   image.channels, " does not match ", image.pixels.size(),
                                                   " bytes of pixels"));
  }
  if (image.width > WEBP_MAX_DIMENSION || image.height > WEBP_MAX_DIMENSION) {
    return absl::InvalidArgumentError(absl::StrCat("WebP: ", image.width, "x", image.height,
                                                   " pixels; allowed at most ", WEBP_MAX_DIMENSION, " per side"));
  }
  std::vector<uint8_t> expanded;
  const uint8_t* pixels = image.pixels.data();
  int channels = image.channels;
  if (channels <= 2) {
    expanded = ExpandGray(image);
    pixels = expanded.data();
    channels += 2;
  }
  uint8_t* raw = nullptr;
  const int stride = image.width * channels;
  const float factor = static_cast<float>(quality);
  const size_t size = channels == 4 ? WebPEncodeRGBA(pixels, image.width, image.height, stride, factor, &raw)
                                    : WebPEncodeRGB(pixels, image.width, image.height, stride, factor, &raw);
  std::unique_ptr<uint8_t, WebPDeleter> bytes(raw);
  if (size == 0 || bytes == nullptr) {
    return absl::InternalError(absl::StrCat("WebP encode: libwebp failed on a ", image.width, "x", image.height,
                                            "x", channels, " image"));
  }
  return std::string(reinterpret_cast<const char*>(bytes.get()), size);
}

}  // namespace imagegen
