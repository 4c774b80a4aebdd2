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
  if (absl::Status s = CheckLossyEncodable("WebP", image, quality, WEBP_MAX_DIMENSION); !s.ok()) return s;
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
