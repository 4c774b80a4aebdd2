// Decoding bombs (issue 14): small files that cost a decoder far more CPU or memory than their
// pixels. Each is made here, in memory, in a few milliseconds; each test checks the outcome
// (decoded right, or INVALID_ARGUMENT) and that the decode stays within a generous CPU and memory
// bound: these are "can fail" bounds against a regression to seconds and gigabytes, not
// benchmarks. The printed cost lines are what bench/image_bombs.md records.
#include <malloc.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <jpeglib.h>
#include <zlib.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/image/jpeg_codec.h"
#include "core/image/png_codec.h"

namespace imagegen {
namespace {

// The service's default limits for an init image (768 per side, 4 MiB encoded).
constexpr DecodeLimits kServiceLimits{768, 1024 * 1024};
constexpr size_t kMaxEncodedBytes = 4 << 20;

// The bounds every bomb must decode or be refused within. The target is 100 ms and 64 MiB; the
// bounds leave room for a slow, shared machine and sanitizer builds.
constexpr double kMaxCpuMs = 1000;
constexpr double kMaxExtraMiB = 64;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif

// ---- Measurement ----

double ThreadCpuMs() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

// A field of /proc/self/status in KiB ("VmRSS", "VmHWM"); -1 if unreadable.
long StatusKib(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const std::string prefix = std::string(field) + ":";
  while (std::getline(in, line)) {
    if (line.compare(0, prefix.size(), prefix) == 0) return std::atol(line.c_str() + prefix.size());
  }
  return -1;
}

// Resets the peak RSS (VmHWM) to the current RSS (Linux >= 4.0); false where not allowed.
bool ResetPeakRss() {
  std::FILE* f = std::fopen("/proc/self/clear_refs", "w");
  if (f == nullptr) return false;
  const bool ok = std::fputs("5", f) >= 0;
  return std::fclose(f) == 0 && ok;
}

struct Cost {
  double cpu_ms = 0;
  double extra_mib = -1;  // peak RSS above the RSS before; -1 if it could not be measured
};

// Runs `decode`, measuring this thread's CPU time and the peak RSS it adds. Freed memory is
// returned to the system first, so that the peak counts pages the decode really touches.
Cost Measure(const std::function<void()>& decode) {
  malloc_trim(0);
  const bool peak_known = ResetPeakRss();
  const long before = StatusKib("VmRSS");
  const double start = ThreadCpuMs();
  decode();
  Cost cost;
  cost.cpu_ms = ThreadCpuMs() - start;
  const long peak = StatusKib("VmHWM");
  if (peak_known && before >= 0 && peak >= 0) cost.extra_mib = (peak - before) / 1024.0;
  return cost;
}

// Decodes `data` with the service's limits and checks the cost; `image_bytes` is the size of the
// decoded image, which the memory bound does not count.
absl::StatusOr<RasterImage> DecodeWithinBudget(const std::string& name, const std::string& data,
                                               size_t image_bytes = 0) {
  EXPECT_LE(data.size(), kMaxEncodedBytes) << name;
  absl::StatusOr<RasterImage> result = absl::UnknownError("not run");
  const Cost cost = Measure([&] { result = DecodeImage(data, kServiceLimits); });
  std::printf("[ bomb     ] %-34s %8zu bytes  cpu %8.1f ms  peak RSS +%7.1f MiB  %s\n", name.c_str(), data.size(),
              cost.cpu_ms, cost.extra_mib, result.ok() ? "decoded" : std::string(result.status().message()).c_str());
  EXPECT_LT(cost.cpu_ms, kMaxCpuMs) << name;
  if (!kSanitized && cost.extra_mib >= 0) {
    EXPECT_LT(cost.extra_mib, kMaxExtraMiB + image_bytes / 1048576.0) << name;
  }
  return result;
}

void ExpectInvalidArgument(const absl::StatusOr<RasterImage>& result, const std::string& needle) {
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << result.status();
  EXPECT_NE(result.status().message().find(needle), std::string::npos) << result.status();
}

// ---- PNG, byte by byte ----

void AppendBigEndian(std::string* out, uint32_t v) {
  const char bytes[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
                         static_cast<char>(v)};
  out->append(bytes, 4);
}

// A chunk: length, type, data, CRC-32 of type and data (PNG spec, 5.3).
std::string PngChunk(absl::string_view type, absl::string_view data) {
  std::string chunk;
  AppendBigEndian(&chunk, static_cast<uint32_t>(data.size()));
  chunk.append(type.data(), 4);
  chunk.append(data.data(), data.size());
  uLong crc = crc32(0, reinterpret_cast<const Bytef*>(type.data()), 4);
  crc = crc32(crc, reinterpret_cast<const Bytef*>(data.data()), static_cast<uInt>(data.size()));
  AppendBigEndian(&chunk, static_cast<uint32_t>(crc));
  return chunk;
}

const std::string kPngSignature("\x89PNG\r\n\x1a\n", 8);

// Signature and IHDR of an 8-bit, non-interlaced image.
std::string PngHead(int width, int height, int colour_type) {
  std::string ihdr;
  AppendBigEndian(&ihdr, width);
  AppendBigEndian(&ihdr, height);
  ihdr += static_cast<char>(8);
  ihdr += static_cast<char>(colour_type);
  ihdr.append(3, '\0');  // deflate, adaptive filtering, no interlace
  return kPngSignature + PngChunk("IHDR", ihdr);
}

// The filtered rows (filter byte 0, "None") of an 8-bit RGB pattern, and the pattern itself.
std::string RgbRows(int width, int height, std::vector<uint8_t>* pixels) {
  std::string rows;
  for (int y = 0; y < height; ++y) {
    rows += '\0';
    for (int i = 0; i < width * 3; ++i) {
      const uint8_t v = static_cast<uint8_t>((y * 7 + i * 13) % 251);
      rows += static_cast<char>(v);
      pixels->push_back(v);
    }
  }
  return rows;
}

std::string Compress(absl::string_view data, int level = 9) {
  uLongf size = compressBound(static_cast<uLong>(data.size()));
  std::string out(size, '\0');
  EXPECT_EQ(compress2(reinterpret_cast<Bytef*>(out.data()), &size, reinterpret_cast<const Bytef*>(data.data()),
                      static_cast<uLong>(data.size()), level),
            Z_OK);
  out.resize(size);
  return out;
}

// Feeds `data` to `z` with `flush`, returning what deflate wrote.
std::string Deflate(z_stream* z, absl::string_view data, int flush) {
  std::string out;
  z->next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z->avail_in = static_cast<uInt>(data.size());
  char buffer[1 << 16];
  do {
    z->next_out = reinterpret_cast<Bytef*>(buffer);
    z->avail_out = sizeof(buffer);
    EXPECT_NE(deflate(z, flush), Z_STREAM_ERROR);
    out.append(buffer, sizeof(buffer) - z->avail_out);
  } while (z->avail_out == 0 || z->avail_in > 0);
  return out;
}

// A zlib stream (RFC 1950) of `data` followed by `zero_mib` MiB of zeros, made without deflating
// all the zeros: after a MiB of zeros, the deflate blocks (ended by a sync flush, so byte-aligned)
// of a further MiB refer only to zeros, so one copy of them stands for every further MiB. The
// stream ends properly (final block and Adler-32 of everything), so a decoder that reads it all
// finds nothing wrong.
std::string ZlibWithTrailingZeros(absl::string_view data, int zero_mib) {
  z_stream z{};
  EXPECT_EQ(deflateInit(&z, 9), Z_OK);
  const std::string zeros(1 << 20, '\0');
  std::string out = Deflate(&z, data, Z_SYNC_FLUSH);
  out += Deflate(&z, zeros, Z_SYNC_FLUSH);
  const std::string mib_of_zeros = Deflate(&z, zeros, Z_SYNC_FLUSH);
  deflateEnd(&z);
  for (int i = 1; i < zero_mib; ++i) out += mib_of_zeros;
  out.append("\x03\x00", 2);  // a final, empty block with fixed codes (RFC 1951, 3.2.6)
  const uLong zeros_adler = adler32(1, reinterpret_cast<const Bytef*>(zeros.data()), 1 << 20);
  uLong adler = adler32(1, reinterpret_cast<const Bytef*>(data.data()), static_cast<uInt>(data.size()));
  for (int i = 0; i < zero_mib; ++i) adler = adler32_combine(adler, zeros_adler, 1 << 20);
  AppendBigEndian(&out, static_cast<uint32_t>(adler));
  return out;
}

// `stream` as IDAT chunks of at most 256 KiB, then IEND.
std::string IdatAndEnd(absl::string_view stream) {
  std::string out;
  for (size_t at = 0; at < stream.size(); at += 256 << 10) out += PngChunk("IDAT", stream.substr(at, 256 << 10));
  return out + PngChunk("IEND", "");
}

// A valid 256x256 RGB image; `before_idat` goes between IHDR and the image data.
std::string RgbPng(const std::string& before_idat, std::vector<uint8_t>* pixels) {
  return PngHead(256, 256, 2) + before_idat + IdatAndEnd(Compress(RgbRows(256, 256, pixels)));
}

void ExpectRgbImage(const absl::StatusOr<RasterImage>& decoded, const std::vector<uint8_t>& pixels) {
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->width, 256);
  EXPECT_EQ(decoded->height, 256);
  EXPECT_EQ(decoded->channels, 3);
  EXPECT_TRUE(decoded->pixels == pixels);
}

// 500 zTXt chunks, each inflating to 8 MB: 3.9 MB that libpng's defaults (8 MB a chunk, 1000
// chunks kept) would inflate into 4 GB of text.
TEST(ImageBomb, PngWithManyCompressedTextChunksIsDecodedWithoutInflatingThem) {
  const std::string text = "Comment" + std::string(1, '\0') + std::string(1, '\0') +  // keyword, method 0
                           Compress(std::string(7999000, 'a'));
  std::string chunks;
  for (int i = 0; i < 500; ++i) chunks += PngChunk("zTXt", text);
  std::vector<uint8_t> pixels;
  const std::string png = RgbPng(chunks, &pixels);
  ExpectRgbImage(DecodeWithinBudget("PNG 500 zTXt x 8 MB", png), pixels);
}

// The same with iTXt (compressed) and tEXt chunks, after the image data too.
TEST(ImageBomb, PngTextChunksAfterTheImageAreNotRead) {
  const std::string itxt = "XML:com.adobe.xmp" + std::string(1, '\0') + std::string(1, '\1') +  // compressed
                           std::string(1, '\0') + std::string(2, '\0') +  // method 0, no language or key
                           Compress(std::string(7999000, 'x'));
  std::string after;
  const std::string text = std::string("Comment\0", 8) + std::string(8000, 't');
  for (int i = 0; i < 200; ++i) after += PngChunk("iTXt", itxt) + PngChunk("tEXt", text);
  std::vector<uint8_t> pixels;
  std::string png = RgbPng("", &pixels);
  png.insert(png.size() - 12, after);  // before IEND
  ExpectRgbImage(DecodeWithinBudget("PNG 200 iTXt x 8 MB after IDAT", png), pixels);
}

// An ICC profile (iCCP) that inflates to 8 MB: a plausible header (PCS XYZ, D50, no tags) and
// zeros. libpng would inflate and keep it; the codecs do not use colour profiles.
TEST(ImageBomb, PngWithAHugeIccProfileIsDecodedWithoutInflatingIt) {
  std::string profile(7990000, '\0');
  auto put = [&profile](size_t at, absl::string_view bytes) {
    profile.replace(at, bytes.size(), bytes.data(), bytes.size());
  };
  std::string length;
  AppendBigEndian(&length, static_cast<uint32_t>(profile.size()));
  put(0, length);
  put(8, absl::string_view("\x02\x10\x00\x00", 4));  // version 2.1
  put(12, "mntr");
  put(16, "RGB ");
  put(20, "XYZ ");
  put(36, "acsp");
  put(68, absl::string_view("\x00\x00\xf6\xd6\x00\x01\x00\x00\x00\x00\xd3\x2d", 12));  // D50
  const std::string iccp = "icc" + std::string(1, '\0') + std::string(1, '\0') + Compress(profile);
  std::vector<uint8_t> pixels;
  const std::string png = RgbPng(PngChunk("iCCP", iccp), &pixels);
  ExpectRgbImage(DecodeWithinBudget("PNG iCCP inflating to 8 MB", png), pixels);
}

// 300,000 empty unknown ancillary chunks before the image: each must cost next to nothing.
TEST(ImageBomb, PngWithManyTinyChunksIsDecoded) {
  const std::string tiny = PngChunk("zzZz", "");
  std::string chunks;
  chunks.reserve(300000 * tiny.size());
  for (int i = 0; i < 300000; ++i) chunks += tiny;
  std::vector<uint8_t> pixels;
  const std::string png = RgbPng(chunks, &pixels);
  ExpectRgbImage(DecodeWithinBudget("PNG 300k empty chunks", png), pixels);
}

// A valid 256x256 image whose zlib stream goes on with 3.8 GB of zeros after the rows (3.7 MB
// of IDAT), as in the report: a decoder that reads the stream to its end (libpng's
// png_read_end, or its check for the stream's end after the last row) inflates all of it.
TEST(ImageBomb, PngWithGigabytesOfZerosAfterTheRowsStopsAtTheLastRow) {
  std::vector<uint8_t> pixels;
  const std::string rows = RgbRows(256, 256, &pixels);
  const std::string png = PngHead(256, 256, 2) + IdatAndEnd(ZlibWithTrailingZeros(rows, 3600));
  ExpectRgbImage(DecodeWithinBudget("PNG 3.8 GB of zeros after the rows", png), pixels);
}

// The largest image the limits allow, as incompressible RGBA: the honest worst case.
TEST(ImageBomb, PngOfTheLargestAllowedSizeDecodesWithinTheBudget) {
  std::string rows;
  uint32_t x = 12345;
  for (int y = 0; y < 768; ++y) {
    rows += '\0';
    for (int i = 0; i < 768 * 4; ++i) {
      x = x * 1103515245 + 12345;
      rows += static_cast<char>(x >> 24);
    }
  }
  const std::string png = PngHead(768, 768, 6) + IdatAndEnd(Compress(rows, 1));
  auto decoded = DecodeWithinBudget("PNG 768x768 RGBA noise", png, 768 * 768 * 4);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->channels, 4);
}

// Truncated image data, and image data that declares the largest size but holds almost nothing.
TEST(ImageBomb, TruncatedPngsAreRefusedQuickly) {
  std::vector<uint8_t> pixels;
  const std::string png = RgbPng("", &pixels);
  ExpectInvalidArgument(DecodeWithinBudget("PNG cut in half", png.substr(0, png.size() / 2)), "not a decodable PNG");

  const std::string empty_rows = PngHead(768, 768, 6) + IdatAndEnd(Compress(std::string(1000, '\0')));
  ExpectInvalidArgument(DecodeWithinBudget("PNG 768x768 with 1000 bytes of rows", empty_rows),
                        "not a decodable PNG");
}

// ---- JPEG ----

// A smooth 768x768 image (JPEG compresses it to little, so that scans are cheap to repeat).
std::vector<uint8_t> SmoothRgb(int side) {
  std::vector<uint8_t> pixels;
  for (int y = 0; y < side; ++y) {
    for (int x = 0; x < side; ++x) {
      pixels.push_back(static_cast<uint8_t>(x / 3));
      pixels.push_back(static_cast<uint8_t>(y / 3));
      pixels.push_back(static_cast<uint8_t>((x + y) / 6));
    }
  }
  return pixels;
}

// A JPEG of `pixels` (RGB, side x side), progressive with libjpeg's default script (10 scans),
// or with `script` when given; `before_frame` is written as COM markers after the header.
std::string EncodeTestJpeg(const std::vector<uint8_t>& pixels, int side, bool progressive,
                           const std::vector<jpeg_scan_info>& script = {}, int com_markers = 0,
                           int com_bytes = 0) {
  jpeg_compress_struct cinfo;
  jpeg_error_mgr err;
  cinfo.err = jpeg_std_error(&err);
  jpeg_create_compress(&cinfo);
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&cinfo, &buffer, &size);
  cinfo.image_width = side;
  cinfo.image_height = side;
  cinfo.input_components = 3;
  cinfo.in_color_space = JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, 90, TRUE);
  if (progressive) jpeg_simple_progression(&cinfo);
  if (!script.empty()) {
    cinfo.scan_info = script.data();
    cinfo.num_scans = static_cast<int>(script.size());
  }
  jpeg_start_compress(&cinfo, TRUE);
  const std::string comment(com_bytes, 'c');
  for (int i = 0; i < com_markers; ++i) {
    jpeg_write_marker(&cinfo, JPEG_COM, reinterpret_cast<const JOCTET*>(comment.data()), com_bytes);
  }
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<JSAMPROW>(pixels.data() + cinfo.next_scanline * side * 3);
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  std::string out(reinterpret_cast<char*>(buffer), size);
  std::free(buffer);
  return out;
}

// Where each SOS marker segment starts, and where the EOI marker is.
std::vector<size_t> ScanOffsets(const std::string& jpeg, size_t* eoi) {
  std::vector<size_t> scans;
  size_t at = 2;
  while (at + 4 <= jpeg.size()) {
    const uint8_t marker = static_cast<uint8_t>(jpeg[at + 1]);
    if (marker == 0xd9) break;
    const size_t length = (static_cast<uint8_t>(jpeg[at + 2]) << 8) | static_cast<uint8_t>(jpeg[at + 3]);
    if (marker != 0xda) {
      at += 2 + length;
      continue;
    }
    scans.push_back(at);
    at += 2 + length;  // entropy-coded data: up to the next marker that is not a stuffed 0 or RSTn
    while (at + 1 < jpeg.size() &&
           !(jpeg[at] == '\xff' && jpeg[at + 1] != '\0' && (static_cast<uint8_t>(jpeg[at + 1]) & 0xf8) != 0xd0)) {
      ++at;
    }
  }
  *eoi = at;
  return scans;
}

// `jpeg` with its last scan (for libjpeg's default script: the luma's full-band refinement, the
// costliest kind) repeated until the file has `scans` scans. A decoder warns of the bogus
// progression and decodes each repetition: a pass over every luma block and 63 coefficients.
std::string WithLastScanRepeated(const std::string& jpeg, int scans) {
  size_t eoi = 0;
  const std::vector<size_t> offsets = ScanOffsets(jpeg, &eoi);
  EXPECT_EQ(offsets.size(), 10u);
  const std::string last = jpeg.substr(offsets.back(), eoi - offsets.back());
  std::string out = jpeg.substr(0, eoi);
  for (int i = static_cast<int>(offsets.size()); i < scans; ++i) out += last;
  return out + jpeg.substr(eoi);
}

TEST(ImageBomb, ProgressiveJpegAtTheScanLimitDecodesWithinTheBudget) {
  const std::vector<uint8_t> pixels = SmoothRgb(768);
  const std::string jpeg = EncodeTestJpeg(pixels, 768, /*progressive=*/true);
  auto decoded = DecodeWithinBudget(absl::StrCat("JPEG 768x768, ", kMaxJpegScans, " scans"),
                                    WithLastScanRepeated(jpeg, kMaxJpegScans), 768 * 768 * 3);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->width, 768);
}

TEST(ImageBomb, ProgressiveJpegWithTooManyScansIsRefused) {
  const std::vector<uint8_t> pixels = SmoothRgb(768);
  const std::string jpeg = EncodeTestJpeg(pixels, 768, /*progressive=*/true);
  ExpectInvalidArgument(DecodeWithinBudget(absl::StrCat("JPEG 768x768, ", kMaxJpegScans + 1, " scans"),
                                           WithLastScanRepeated(jpeg, kMaxJpegScans + 1)),
                        absl::StrCat("more than ", kMaxJpegScans, " progressive scans"));
  ExpectInvalidArgument(DecodeWithinBudget("JPEG 768x768, 600 scans", WithLastScanRepeated(jpeg, 600)),
                        absl::StrCat("more than ", kMaxJpegScans, " progressive scans"));
}

// A valid progression of 190 scans (the DC, then each AC coefficient of each component alone).
TEST(ImageBomb, ValidProgressiveJpegWithManyScansIsRefused) {
  std::vector<jpeg_scan_info> script;
  script.push_back(jpeg_scan_info{3, {0, 1, 2, 0}, 0, 0, 0, 0});
  for (int c = 0; c < 3; ++c) {
    for (int k = 1; k < 64; ++k) script.push_back(jpeg_scan_info{1, {c, 0, 0, 0}, k, k, 0, 0});
  }
  const std::string jpeg = EncodeTestJpeg(SmoothRgb(256), 256, /*progressive=*/false, script);
  ExpectInvalidArgument(DecodeWithinBudget("JPEG 256x256, 190 valid scans", jpeg),
                        absl::StrCat("more than ", kMaxJpegScans, " progressive scans"));
}

// Truncated entropy-coded data, and garbage in its place: decoded (libjpeg fills what is missing)
// or refused, but quickly either way.
TEST(ImageBomb, TruncatedOrGarbageJpegEndsQuickly) {
  const std::vector<uint8_t> pixels = SmoothRgb(768);
  for (bool progressive : {false, true}) {
    const std::string jpeg = EncodeTestJpeg(pixels, 768, progressive);
    size_t eoi = 0;
    const size_t first_scan = ScanOffsets(jpeg, &eoi).front();
    const std::string kind = progressive ? "progressive" : "baseline";
    auto cut = DecodeWithinBudget("JPEG 768x768 " + kind + ", cut short", jpeg.substr(0, first_scan + 200),
                                  768 * 768 * 3);
    if (cut.ok()) {
      EXPECT_EQ(cut->width, 768);
    }

    std::string garbage = jpeg.substr(0, first_scan + 14);  // the headers and the first SOS
    uint32_t x = 99;
    while (garbage.size() < kMaxEncodedBytes - 2) {  // no 0xFF: no markers, only bad codes
      x = x * 1103515245 + 12345;
      garbage += static_cast<char>(std::min<uint32_t>(x >> 24, 0xfe));
    }
    auto noise = DecodeWithinBudget("JPEG 768x768 " + kind + ", 4 MiB of noise", garbage, 768 * 768 * 3);
    if (noise.ok()) {
      EXPECT_EQ(noise->width, 768);
    }
  }
}

// Comment markers are skipped, not kept: 60 of 64 KB each; a million empty ones between the frame
// header and the first scan (libjpeg walks them); and before the frame header, where
// PeekJpegSize refuses more than kMaxJpegMarkersBeforeFrame.
TEST(ImageBomb, JpegMarkersAreSkipped) {
  const std::vector<uint8_t> pixels = SmoothRgb(64);
  auto large = DecodeWithinBudget("JPEG 60 COM x 64 KB", EncodeTestJpeg(pixels, 64, false, {}, 60, 65000));
  ASSERT_TRUE(large.ok()) << large.status();

  const std::string jpeg = EncodeTestJpeg(pixels, 64, false);
  std::string empty_comments;
  for (int i = 0; i < 1000000; ++i) empty_comments.append("\xff\xfe\x00\x02", 4);
  size_t eoi = 0;
  const size_t first_scan = ScanOffsets(jpeg, &eoi).front();
  auto after_frame = DecodeWithinBudget("JPEG 1M empty COM before SOS",
                                        jpeg.substr(0, first_scan) + empty_comments + jpeg.substr(first_scan));
  ASSERT_TRUE(after_frame.ok()) << after_frame.status();
  EXPECT_EQ(after_frame->width, 64);

  ExpectInvalidArgument(
      DecodeWithinBudget("JPEG 1M empty COM before SOF", jpeg.substr(0, 2) + empty_comments + jpeg.substr(2)),
      absl::StrCat("more than ", kMaxJpegMarkersBeforeFrame, " markers before the frame header"));
}

}  // namespace
}  // namespace imagegen
