// JPEG encoding and decoding through libjpeg (libjpeg-turbo).
#ifndef IMAGEGEN_CORE_IMAGE_JPEG_CODEC_H_
#define IMAGEGEN_CORE_IMAGE_JPEG_CODEC_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/image/image_codec.h"  // DecodeImage, once declared here
#include "core/image/png_codec.h"

namespace imagegen {

// Baseline JPEG (4:2:0 chroma for colour) at libjpeg's `quality` scale, 1..100. Gray (1 channel)
// stays gray; RGB (3) is RGB; an alpha channel (2 or 4) is dropped, since JPEG has none.
// INVALID_ARGUMENT naming the value for a quality outside 1..100, for an empty raster, one whose
// pixel count does not match its size, or a side over 65500; INTERNAL naming libjpeg's reason if
// the encoder fails (out of memory). Thread-safe.
absl::StatusOr<std::string> EncodeJpeg(const RasterImage& image, int quality = 90);

// The most scans DecodeJpeg reads. Each scan of a progressive (or multi-scan) JPEG is a pass over
// every block of the components it covers, whatever its size (about 0.5 ms at 768x768): tens of
// KB of repeated scans cost seconds. Real encoders write about ten (libjpeg's progressive script
// writes 10); at this cap a 768x768 file of the costliest scans (full-band refinements) decodes in
// about 35 ms (bench/image_bombs.md).
inline constexpr int kMaxJpegScans = 64;

// The most markers PeekJpegSize walks before the frame header (SOFn). Real files have a handful
// (APPn, DQT, DHT, COM), or some hundreds where an ICC profile or XMP is split over many APPn.
inline constexpr int kMaxJpegMarkersBeforeFrame = 1024;

// The size in a JPEG's frame header (SOFn), read without libjpeg and without decoding: the
// markers after SOI, walked as libjpeg walks them (skipping each segment by its length; at most
// kMaxJpegMarkersBeforeFrame of them), up to the first SOFn, whose fields are checked as libjpeg
// checks them (a frame type it decodes, 8-bit precision, sides 1..65500, 1 to 10 components).
// The size is the one DecodeJpeg checks against its limits; OK does not promise that the rest
// decodes. INVALID_ARGUMENT "not a decodable JPEG: <reason>" otherwise. Thread-safe.
absl::StatusOr<ImageSize> PeekJpegSize(absl::string_view data);

// Decodes a baseline or progressive JPEG: gray stays gray (1 channel); everything else decodes to
// RGB (3). Made for untrusted input (issue 14): the size is read by PeekJpegSize and checked
// against `limits` (CheckDecodeSize) before libjpeg runs; a file with more than kMaxJpegScans
// scans is refused while it is read; APPn and COM segments are skipped, never kept. libjpeg's
// own memory follows the declared size (at most 20 bytes a pixel, for a progressive file's
// coefficients), and truncated or corrupt entropy-coded data is filled in (libjpeg's warnings
// are ignored) at the cost of a normal decode.
// INVALID_ARGUMENT "not a decodable JPEG: <reason>" (libjpeg's, or PeekJpegSize's) for bytes that
// are not a decodable JPEG, or CheckDecodeSize's error for a size outside `limits`. Thread-safe.
absl::StatusOr<RasterImage> DecodeJpeg(absl::string_view data, const DecodeLimits& limits = {});

}  // namespace imagegen

#endif  // IMAGEGEN_CORE_IMAGE_JPEG_CODEC_H_
