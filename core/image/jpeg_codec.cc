#include "core/image/jpeg_codec.h"

#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <string>

#include <jpeglib.h>

#include "absl/status/status.h"
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

void OnProgress(j_common_ptr cinfo) {
  auto* decompress = reinterpret_cast<j_decompress_ptr>(cinfo);
  if (decompress->input_scan_number <= kMaxJpegScans) return;
  auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
  std::snprintf(err->message, sizeof(err->message), "more than %d progressive scans", kMaxJpegScans);
  std::longjmp(err->jump, 1);
}

// Stops the encoder with `message` (it becomes the INTERNAL status's reason).
void FailWith(j_common_ptr cinfo, const char* message) {
  auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
  std::snprintf(err->message, sizeof(err->message), "%s", message);
  std::longjmp(err->jump, 1);
}

// The encoder's destination: fixed chunks appended to a string that the caller of WriteJpeg
// owns, so that a longjmp out of libjpeg skips no destructor and leaks nothing. Not
// jpeg_mem_dest: once that grows its buffer, the pointer it handed out is freed and the live
// buffer is reachable only through libjpeg's private state, so an error could not free it.
struct StringDestination {
  jpeg_destination_mgr pub;
  std::string* out;
  JOCTET chunk[16384];
};

// std::string reports a failed allocation by throwing, which must not unwind through libjpeg's
// C frames: catch it here and let the caller longjmp instead.
bool Append(std::string* out, const JOCTET* data, size_t size) noexcept {
  try {
    out->append(reinterpret_cast<const char*>(data), size);
    return true;
  } catch (...) {
    return false;
  }
}

void InitDestination(j_compress_ptr cinfo) {
  auto* dest = reinterpret_cast<StringDestination*>(cinfo->dest);
  dest->pub.next_output_byte = dest->chunk;
  dest->pub.free_in_buffer = sizeof(dest->chunk);
}

boolean EmptyDestination(j_compress_ptr cinfo) {
  auto* dest = reinterpret_cast<StringDestination*>(cinfo->dest);
  // libjpeg calls this with the whole chunk full, whatever free_in_buffer says.
  if (!Append(dest->out, dest->chunk, sizeof(dest->chunk))) {
    FailWith(reinterpret_cast<j_common_ptr>(cinfo), "out of memory for the encoded bytes");
  }
  InitDestination(cinfo);
  return TRUE;
}

void TermDestination(j_compress_ptr cinfo) {
  auto* dest = reinterpret_cast<StringDestination*>(cinfo->dest);
  if (!Append(dest->out, dest->chunk, sizeof(dest->chunk) - dest->pub.free_in_buffer)) {
    FailWith(reinterpret_cast<j_common_ptr>(cinfo), "out of memory for the encoded bytes");
  }
}

// The part that libjpeg may longjmp out of, like ReadJpeg below: no C++ object of its own
// lives across the jump; the bytes go to the caller's `out`. `image` has 1 or 3 channels and
// a consistent size. Returns an empty string on success, else libjpeg's reason.
std::string WriteJpeg(const RasterImage& image, int quality, std::string* out) {
  jpeg_compress_struct cinfo;
  ErrorManager err;
  StringDestination dest;
  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = OnError;
  err.pub.output_message = OnMessage;
  if (setjmp(err.jump)) {
    jpeg_destroy_compress(&cinfo);
    return err.message;
  }
  jpeg_create_compress(&cinfo);
  dest.pub.init_destination = InitDestination;
  dest.pub.empty_output_buffer = EmptyDestination;
  dest.pub.term_destination = TermDestination;
  dest.out = out;
  cinfo.dest = &dest.pub;
  cinfo.image_width = static_cast<JDIMENSION>(image.width);
  cinfo.image_height = static_cast<JDIMENSION>(image.height);
  cinfo.input_components = image.channels;
  cinfo.in_color_space = image.channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&cinfo);  // Baseline, Huffman-optimised off, 4:2:0 chroma for RGB.
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  const size_t stride = static_cast<size_t>(image.width) * image.channels;
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<JSAMPROW>(image.pixels.data() + cinfo.next_scanline * stride);
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  return "";
}

// The same pixels without their alpha channel (2 -> 1, 4 -> 3 channels).
RasterImage DropAlpha(const RasterImage& image) {
  RasterImage opaque;
  opaque.width = image.width;
  opaque.height = image.height;
  opaque.channels = image.channels - 1;
  const size_t count = static_cast<size_t>(image.width) * image.height;
  opaque.pixels.resize(count * opaque.channels);
  for (size_t i = 0; i < count; ++i) {
    for (int c = 0; c < opaque.channels; ++c) {
      opaque.pixels[i * opaque.channels + c] = image.pixels[i * image.channels + c];
    }
  }
  return opaque;
}

}  // namespace

absl::StatusOr<std::string> EncodeJpeg(const RasterImage& image, int quality) {
  if (absl::Status s = CheckLossyEncodable("JPEG", image, quality, JPEG_MAX_DIMENSION); !s.ok()) return s;
  std::string out;
  const bool has_alpha = image.channels == 2 || image.channels == 4;
  if (std::string error = has_alpha ? WriteJpeg(DropAlpha(image), quality, &out) : WriteJpeg(image, quality, &out);
      !error.empty()) {
    return absl::InternalError(absl::StrCat("JPEG encode: ", error));
  }
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
  // APPn and COM segments are skipped, never kept (libjpeg's default, stated here): a file may
  // hold thousands of them.
  for (int app = 0; app < 16; ++app) jpeg_save_markers(&cinfo, JPEG_APP0 + app, 0);
  jpeg_save_markers(&cinfo, JPEG_COM, 0);
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

absl::StatusOr<ImageSize> PeekJpegSize(absl::string_view data) {
  auto refuse = [](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("not a decodable JPEG: ", why));
  };
  const auto* bytes = reinterpret_cast<const unsigned char*>(data.data());
  const size_t size = data.size();
  if (size < 2 || bytes[0] != 0xff || bytes[1] != 0xd8) return refuse("no JPEG signature (SOI)");
  size_t at = 2;
  for (int markers = 0;; ++markers) {
    if (markers > kMaxJpegMarkersBeforeFrame) {
      return refuse(absl::StrCat("more than ", kMaxJpegMarkersBeforeFrame, " markers before the frame header"));
    }
    // The next marker as libjpeg finds it (next_marker in jdmarker.c): bytes up to a 0xFF are
    // skipped as garbage, then fill bytes (0xFF); 0xFF 0x00 is garbage too.
    int code = 0;
    while (code == 0) {
      const void* ff = at < size ? std::memchr(bytes + at, 0xff, size - at) : nullptr;
      if (ff == nullptr) return refuse("the data ends before the frame header (SOFn)");
      at = static_cast<const unsigned char*>(ff) - bytes;
      while (at < size && bytes[at] == 0xff) ++at;
      if (at == size) return refuse("the data ends before the frame header (SOFn)");
      code = bytes[at++];
    }
    if (code == 0x01 || (code >= 0xd0 && code <= 0xd7)) continue;  // TEM, RSTn: no segment
    // Markers libjpeg reads before a frame (read_markers in jdmarker.c); it refuses the others.
    const bool frame = code >= 0xc0 && code <= 0xcf && code != 0xc4 && code != 0xc8 && code != 0xcc;
    const bool known = frame || code == 0xc4 || code == 0xcc || code == 0xdb || code == 0xdc || code == 0xdd ||
                       (code >= 0xe0 && code <= 0xef) || code == 0xfe;
    auto name = [code] { return absl::StrCat("0x", absl::Hex(code, absl::kZeroPad2)); };
    if (!known) {
      return refuse(code == 0xd9 || code == 0xda ? "no frame header (SOFn) before the image data"
                                                 : absl::StrCat("unsupported marker ", name()));
    }
    if (size - at < 2) return refuse("the data ends before the frame header (SOFn)");
    const size_t length = (size_t{bytes[at]} << 8) | bytes[at + 1];
    if (length < 2) return refuse(absl::StrCat("marker ", name(), " has a length of ", length));
    if (!frame) {
      at += length;
      continue;
    }
    // SOFn: length (2), precision (1), height (2), width (2), components (1), 3 bytes each.
    if (size - at < 8) return refuse("the data ends in the frame header (SOFn)");
    const unsigned char* sof = bytes + at;
    const int height = (sof[3] << 8) | sof[4];
    const int width = (sof[5] << 8) | sof[6];
    const int components = sof[7];
    if (code != 0xc0 && code != 0xc1 && code != 0xc2 && code != 0xc9 && code != 0xca) {
      return refuse(absl::StrCat("SOF", code - 0xc0, " (lossless or hierarchical) is not supported"));
    }
    if (sof[2] != 8) return refuse(absl::StrCat("a precision of ", int{sof[2]}, " bits; supported: 8"));
    if (width == 0 || height == 0) {
      return refuse(absl::StrCat("the frame header declares ", width, "x", height, " pixels"));
    }
    if (width > JPEG_MAX_DIMENSION || height > JPEG_MAX_DIMENSION) {
      return refuse(absl::StrCat("the frame header declares ", width, "x", height, " pixels; libjpeg's limit is ",
                                 JPEG_MAX_DIMENSION, " per side"));
    }
    if (components < 1 || components > 10 || length != 8 + 3 * static_cast<size_t>(components)) {
      return refuse(absl::StrCat("the frame header declares ", components, " components in ", length, " bytes"));
    }
    return ImageSize{width, height};
  }
}

absl::StatusOr<RasterImage> DecodeJpeg(absl::string_view data, const DecodeLimits& limits) {
  absl::StatusOr<ImageSize> size = PeekJpegSize(data);
  if (!size.ok()) return size.status();
  if (absl::Status fits = CheckDecodeSize("JPEG", size->width, size->height, limits); !fits.ok()) return fits;
  RasterImage out;
  if (std::string error = ReadJpeg(data, limits, &out); !error.empty()) {
    return absl::InvalidArgumentError(error);
  }
  return out;
}

}  // namespace imagegen
