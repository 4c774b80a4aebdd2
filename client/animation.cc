#include "client/animation.h"

#include <png.h>
#include <webp/decode.h>
#include <webp/encode.h>
#include <webp/mux.h>

// jpeglib.h needs FILE and size_t declared first.
#include <csetjmp>
#include <cstdio>
#include <fstream>
#include <memory>

#include <jpeglib.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/cli.h"

namespace imagegen::client {
namespace {

// Far above any image the server makes (--max_image_side), low enough that a corrupt header
// cannot ask for gigabytes.
constexpr uint32_t kMaxDecodedSide = 8192;

// libjpeg reports errors through a callback that must not return: jump back to the decoder with
// the message, instead of libjpeg's default exit().
struct JpegErrorManager {
  jpeg_error_mgr pub;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void OnJpegError(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

void OnJpegMessage(j_common_ptr) {}  // warnings of a decodable image are not worth a line

// The part that libjpeg may longjmp out of: no C++ object of its own lives across the jump; the
// pixels go to the caller's `out`, whose buffer is sized between libjpeg calls (so that a failed
// allocation never unwinds through libjpeg's C frames). Returns "" on success, else the reason.
std::string ReadJpeg(absl::string_view jpeg, RgbaImage* out) {
  jpeg_decompress_struct cinfo;
  JpegErrorManager err;
  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = OnJpegError;
  err.pub.output_message = OnJpegMessage;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    return err.message;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, reinterpret_cast<const unsigned char*>(jpeg.data()),
               static_cast<unsigned long>(jpeg.size()));
  jpeg_read_header(&cinfo, TRUE);
  if (cinfo.image_width > kMaxDecodedSide || cinfo.image_height > kMaxDecodedSide) {
    jpeg_destroy_decompress(&cinfo);
    return absl::StrCat(cinfo.image_width, "x", cinfo.image_height, " is too large");
  }
  cinfo.out_color_space = JCS_EXT_RGBA;  // libjpeg-turbo: gray and YCbCr alike to RGBA
  jpeg_start_decompress(&cinfo);
  out->width = cinfo.output_width;
  out->height = cinfo.output_height;
  out->pixels.resize(static_cast<size_t>(out->width) * out->height * 4);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = out->pixels.data() + static_cast<size_t>(cinfo.output_scanline) * out->width * 4;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return "";
}

}  // namespace

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

absl::StatusOr<RgbaImage> DecodeJpegToRgba(absl::string_view jpeg) {
  RgbaImage out;
  if (const std::string error = ReadJpeg(jpeg, &out); !error.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("cannot decode JPEG: ", error));
  }
  return out;
}

absl::StatusOr<RgbaImage> DecodeWebpToRgba(absl::string_view webp) {
  const auto* data = reinterpret_cast<const uint8_t*>(webp.data());
  int width = 0;
  int height = 0;
  if (!WebPGetInfo(data, webp.size(), &width, &height)) {
    return absl::InvalidArgumentError("cannot decode WebP: not a WebP image libwebp can read");
  }
  if (static_cast<uint32_t>(width) > kMaxDecodedSide ||
      static_cast<uint32_t>(height) > kMaxDecodedSide) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot decode WebP: ", width, "x", height, " is too large"));
  }
  RgbaImage out;
  out.width = static_cast<uint32_t>(width);
  out.height = static_cast<uint32_t>(height);
  out.pixels.resize(static_cast<size_t>(width) * height * 4);
  if (WebPDecodeRGBAInto(data, webp.size(), out.pixels.data(), out.pixels.size(), width * 4) ==
      nullptr) {
    return absl::InvalidArgumentError("cannot decode WebP: libwebp refused the bitstream");
  }
  return out;
}

absl::StatusOr<RgbaImage> DecodeImageToRgba(absl::string_view bytes) {
  if (absl::StartsWith(bytes, "\x89PNG\r\n\x1a\n")) return DecodePngToRgba(bytes);
  if (absl::StartsWith(bytes, "\xff\xd8\xff")) return DecodeJpegToRgba(bytes);
  if (bytes.size() >= 12 && absl::StartsWith(bytes, "RIFF") && bytes.substr(8, 4) == "WEBP") {
    return DecodeWebpToRgba(bytes);
  }
  return absl::InvalidArgumentError("cannot decode an image that is not PNG, JPEG or WebP");
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
