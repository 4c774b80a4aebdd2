#include "client/animation.h"

#include <png.h>
#include <webp/encode.h>
#include <webp/mux.h>

#include <cstdio>
#include <fstream>
#include <memory>

#include "absl/strings/str_cat.h"
#include "client/cli.h"

namespace imagegen::client {

absl::StatusOr<RgbaImage> DecodePngToRgba(absl::string_view png) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&image, png.data(), png.size())) {
    return absl::InvalidArgumentError(absl::StrCat("cannot decode PNG: ", image.message));
  }
  image.format = PNG_FORMAT_RGBA;
  RgbaImage out;
  out.width = image.width;
  out.height = image.height;
  out.pixels.resize(PNG_IMAGE_SIZE(image));
  if (!png_image_finish_read(&image, nullptr, out.pixels.data(), 0, nullptr)) {
    const std::string message = image.message;
    png_image_free(&image);
    return absl::InvalidArgumentError(absl::StrCat("cannot decode PNG: ", message));
  }
  return out;
}

absl::Status AnimationBuilder::Write(const std::string& path, int frame_ms,
                                     int last_frame_ms) const {
  if (frames_.empty()) return absl::FailedPreconditionError("--animation: no frames to write");
  const uint32_t width = frames_.back().width;
  const uint32_t height = frames_.back().height;

  WebPAnimEncoderOptions options;
  if (!WebPAnimEncoderOptionsInit(&options)) {
    return absl::InternalError("libwebp: version mismatch (WebPAnimEncoderOptionsInit)");
  }
  options.anim_params.loop_count = 0;  // loop forever
  std::unique_ptr<WebPAnimEncoder, void (*)(WebPAnimEncoder*)> encoder(
      WebPAnimEncoderNew(static_cast<int>(width), static_cast<int>(height), &options),
      WebPAnimEncoderDelete);
  if (!encoder) return absl::InternalError("libwebp: cannot create the animation encoder");

  WebPConfig config;
  if (!WebPConfigInit(&config)) return absl::InternalError("libwebp: version mismatch");
  // Lossless: with lossy frames the encoder treats nearly equal frames (the last denoising
  // steps) as unchanged and folds them together, so the animation would lose steps.
  config.lossless = 1;
  config.quality = 75;  // effort of the lossless encoder

  int timestamp_ms = 0;
  for (size_t i = 0; i < frames_.size(); ++i) {
    const RgbaImage& frame = frames_[i];
    std::vector<uint8_t> scaled;
    const uint8_t* rgba = frame.pixels.data();
    if (frame.width != width || frame.height != height) {
      scaled = ScaleNearestRgba(frame.pixels, frame.width, frame.height, width, height);
      rgba = scaled.data();
    }
    WebPPicture picture;
    if (!WebPPictureInit(&picture)) return absl::InternalError("libwebp: version mismatch");
    picture.use_argb = 1;
    picture.width = static_cast<int>(width);
    picture.height = static_cast<int>(height);
    if (!WebPPictureImportRGBA(&picture, rgba, static_cast<int>(width * 4))) {
      WebPPictureFree(&picture);
      return absl::ResourceExhaustedError("libwebp: cannot import a frame");
    }
    const bool added = WebPAnimEncoderAdd(encoder.get(), &picture, timestamp_ms, &config);
    WebPPictureFree(&picture);
    if (!added) {
      return absl::InternalError(
          absl::StrCat("libwebp: cannot add frame ", i, ": ", WebPAnimEncoderGetError(encoder.get())));
    }
    timestamp_ms += i + 1 == frames_.size() ? last_frame_ms : frame_ms;
  }
  // A null frame at the end time sets the duration of the last frame.
  if (!WebPAnimEncoderAdd(encoder.get(), nullptr, timestamp_ms, nullptr)) {
    return absl::InternalError(
        absl::StrCat("libwebp: ", WebPAnimEncoderGetError(encoder.get())));
  }
  WebPData data;
  WebPDataInit(&data);
  if (!WebPAnimEncoderAssemble(encoder.get(), &data)) {
    return absl::InternalError(
        absl::StrCat("libwebp: cannot assemble: ", WebPAnimEncoderGetError(encoder.get())));
  }
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file.write(reinterpret_cast<const char*>(data.bytes), static_cast<std::streamsize>(data.size));
  file.close();
  WebPDataClear(&data);
  if (!file) return absl::PermissionDeniedError(absl::StrCat("cannot write --animation ", path));
  return absl::OkStatus();
}

}  // namespace imagegen::client
