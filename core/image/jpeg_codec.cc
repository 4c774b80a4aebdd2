#include "core/image/jpeg_codec.h"

#include <csetjmp>
#include <cstdio>

#include <jpeglib.h>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace imagegen {
namespace {

// libjpeg reports errors through a callback that must not return: jump back to the caller
// with the message, instead of libjpeg's default exit().
struct ErrorManager {
  jpeg_error_mgr pub;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void OnError(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

void OnMessage(j_common_ptr) {}  // Warnings are not worth a log line per request.

// A progressive JPEG may hold any number of scans, each a full pass over the image: a few KB of
// them cost seconds of decoding on the gRPC thread. Real encoders write about ten; refuse more
// than this (the cap libjpeg-turbo's djpeg -maxscans suggests for untrusted input).
constexpr int kMaxJpegScans = 100;

void OnProgress(j_common_ptr cinfo) {
  auto* decompress = reinterpret_cast<j_decompress_ptr>(cinfo);
  if (decompress->input_scan_number <= kMaxJpegScans) return;
  auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
  std::snprintf(err->message, sizeof(err->message), "more than %d progressive scans", kMaxJpegScans);
  std::longjmp(err->jump, 1);
}

}  // namespace

absl::StatusOr<std::string> EncodeJpeg(const RasterImage& image, int quality) {
  if (image.channels != 1 && image.channels != 3) {
    return absl::InvalidArgumentError(absl::StrCat("JPEG: channels is ", image.channels, "; allowed 1, 3"));
  }
  if (image.width <= 0 || image.height <= 0 ||
      image.pixels.size() != static_cast<size_t>(image.width) * image.height * image.channels) {
    return absl::InvalidArgumentError(absl::StrCat("JPEG: ", image.width, "x", image.height, "x",
                                                   image.channels, " does not match ", image.pixels.size(),
                                                   " bytes of pixels"));
  }
  jpeg_compress_struct cinfo;
  ErrorManager err;
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = OnError;
  err.pub.output_message = OnMessage;
  if (setjmp(err.jump)) {
    jpeg_destroy_compress(&cinfo);
    free(buffer);
    return absl::InternalError(absl::StrCat("JPEG encode: ", err.message));
  }
  jpeg_create_compress(&cinfo);
  jpeg_mem_dest(&cinfo, &buffer, &size);
  cinfo.image_width = image.width;
  cinfo.image_height = image.height;
  cinfo.input_components = image.channels;
  cinfo.in_color_space = image.channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  const int stride = image.width * image.channels;
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<JSAMPROW>(image.pixels.data() + cinfo.next_scanline * stride);
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  std::string out(reinterpret_cast<const char*>(buffer), size);
  free(buffer);
  return out;
}

namespace {

// The part that libjpeg may longjmp out of. It keeps no C++ object of its own alive across the
// jump: the pixels live in the caller's `out`, written only through the pointer. Returns an
// empty string on success, else why it failed (the message of an INVALID_ARGUMENT).
std::string ReadJpeg(absl::string_view data, const DecodeLimits& limits, RasterImage* out) {
  jpeg_decompress_struct cinfo;
  ErrorManager err;
  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = OnError;
  err.pub.output_message = OnMessage;
  jpeg_progress_mgr progress{};
  progress.progress_monitor = OnProgress;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    return absl::StrCat("not a decodable JPEG: ", err.message);
  }
  jpeg_create_decompress(&cinfo);
  cinfo.progress = &progress;
  jpeg_mem_src(&cinfo, reinterpret_cast<const unsigned char*>(data.data()), data.size());
  jpeg_read_header(&cinfo, TRUE);
  if (absl::Status size = CheckDecodeSize("JPEG", cinfo.image_width, cinfo.image_height, limits); !size.ok()) {
    jpeg_destroy_decompress(&cinfo);
    return std::string(size.message());
  }
  cinfo.out_color_space = cinfo.jpeg_color_space == JCS_GRAYSCALE ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_start_decompress(&cinfo);
  out->width = static_cast<int>(cinfo.output_width);
  out->height = static_cast<int>(cinfo.output_height);
  out->channels = cinfo.output_components;
  out->pixels.resize(static_cast<size_t>(out->width) * out->height * out->channels);
  const size_t stride = static_cast<size_t>(out->width) * out->channels;
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = out->pixels.data() + cinfo.output_scanline * stride;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return "";
}

}  // namespace

absl::StatusOr<RasterImage> DecodeJpeg(absl::string_view data, const DecodeLimits& limits) {
  RasterImage out;
  if (std::string error = ReadJpeg(data, limits, &out); !error.empty()) {
    return absl::InvalidArgumentError(error);
  }
  return out;
}

absl::StatusOr<RasterImage> DecodeImage(absl::string_view data, const DecodeLimits& limits) {
  if (absl::StartsWith(data, "\x89PNG\r\n\x1a\n")) return DecodePng(data, limits);
  if (absl::StartsWith(data, "\xff\xd8\xff")) return DecodeJpeg(data, limits);
  return absl::InvalidArgumentError("neither a PNG nor a JPEG (unknown signature)");
}

}  // namespace imagegen
