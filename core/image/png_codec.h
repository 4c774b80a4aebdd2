// PNG encoding and decoding through libpng.
#ifndef IMAGEGEN_CORE_IMAGE_PNG_CODEC_H_
#define IMAGEGEN_CORE_IMAGE_PNG_CODEC_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace imagegen {

// 8-bit pixels, row-major, channels interleaved (1 gray, 3 RGB, 4 RGBA).
struct RasterImage {
  int width = 0;
  int height = 0;
  int channels = 0;
  std::vector<uint8_t> pixels;  // height * width * channels
};

// The lossy encoders' shared check of their input: OK when `image` has 1 to 4 channels, pixels
// matching its size, sides of at most `max_side`, and `quality` is 1..100; otherwise
// INVALID_ARGUMENT that starts with `format` ("JPEG", "WebP") and names the value.
absl::Status CheckLossyEncodable(absl::string_view format, const RasterImage& image, int quality, int max_side);

// INVALID_ARGUMENT for a size/channel mismatch; INTERNAL if libpng fails. Thread-safe.
absl::StatusOr<std::string> EncodePng(const RasterImage& image);

// How large an image the decoders accept. They check the size the header declares, before any
// pixel is allocated, so that a few bytes declaring a huge image cannot exhaust memory.
inline constexpr int kMaxDecodeSide = 16384;
struct DecodeLimits {
  int max_side = kMaxDecodeSide;  // width and height
  int64_t max_pixels = int64_t{kMaxDecodeSide} * kMaxDecodeSide;  // width * height
};

// OK when a `width` x `height` image fits `limits`; otherwise INVALID_ARGUMENT naming `format`,
// the size and the limits. The decoders' shared check.
absl::Status CheckDecodeSize(absl::string_view format, uint64_t width, uint64_t height, const DecodeLimits& limits);

// The size an image's header declares (PeekPngSize, PeekJpegSize).
struct ImageSize {
  int width = 0;
  int height = 0;
};

// The size in a PNG's header, read without libpng and without decoding: the signature and the
// IHDR chunk (the first 33 bytes), checked as libpng checks them (length, CRC, sides, bit depth
// and colour type, methods). The size is the one DecodePng checks against its limits; OK does not
// promise that the rest decodes. INVALID_ARGUMENT "not a decodable PNG: <reason>" otherwise.
// Thread-safe.
absl::StatusOr<ImageSize> PeekPngSize(absl::string_view data);

// Decodes a PNG to 8-bit pixels: gray stays gray (1 channel); RGB and palette images become RGB
// (3); an alpha channel or a tRNS transparent colour (gray too) gives RGBA (4). 16-bit samples
// are scaled to 8 bits, smaller ones and palettes expanded. Samples are returned as stored:
// gAMA, cHRM, sRGB and iCCP are not applied.
//
// Made for untrusted input (issue 14: a few MB of PNG once took 4 GB and 17 s of CPU to decode):
// its cost follows the image's declared size and the input's length, not what the bytes claim.
//  - The size is read by PeekPngSize and checked against `limits` (CheckDecodeSize) before libpng
//    runs or any pixel is allocated.
//  - Every chunk but IHDR, PLTE, tRNS, IDAT and IEND is skipped unread (only its CRC is
//    computed): text (tEXt, zTXt, iTXt), iCCP and the rest are never inflated or kept.
//  - Reading stops at the last row: the rest of the zlib stream (which may inflate to gigabytes
//    of zeros) and the chunks after the image are never read. (So the CRC of the last IDAT
//    chunk and the stream's Adler-32 go unchecked; libpng checks the CRC of every other chunk
//    it reads.)
//  - libpng's own memory (rows, zlib's window, chunk buffers) is capped at 8 MiB, and it reads no
//    chunk longer than 1 MiB into memory. Beyond the pixels, a decode needs well under 1 MiB.
// INVALID_ARGUMENT "not a decodable PNG: <reason>" for bytes that are not a decodable PNG
// (including image data that ends before the last row), or CheckDecodeSize's error for a size
// outside `limits`. Thread-safe.
absl::StatusOr<RasterImage> DecodePng(absl::string_view data, const DecodeLimits& limits = {});

}  // namespace imagegen

#endif  // IMAGEGEN_CORE_IMAGE_PNG_CODEC_H_
