#include "core/image/png_codec.h"

#include <png.h>
#include <zlib.h>

#include <csetjmp>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/match.h"
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

namespace {

constexpr char kPngSignature[] = "\x89PNG\r\n\x1a\n";

uint32_t BigEndian32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// What libpng may allocate for itself: its structs, two or three rows, zlib's 32 KiB window, a
// palette. That is well under 1 MiB at the largest sides DecodeLimits allows; the cap makes it a
// bound whatever a file holds (every allocation goes through PngMalloc).
constexpr size_t kMaxPngWorkingBytes = 8 << 20;

// The longest chunk libpng may read into memory. It keeps none but PLTE and tRNS (768 and 256
// bytes at most); a longer chunk of any kind is skipped with a warning (a benign error).
constexpr png_alloc_size_t kMaxPngChunkBytes = 1 << 20;

// The state of one decode, shared with libpng's callbacks. Plain data: libpng longjmps across
// the frames that use it.
struct PngReader {
  uint32_t width = 0;  // as PeekPngSize read them
  uint32_t height = 0;
  RasterImage* out = nullptr;
  int passes = 1;        // 7 for an interlaced image
  size_t allocated = 0;  // by libpng, through PngMalloc
  char message[256] = "";
};

// setjmp's values: an error (message in PngReader), or the last row is in.
constexpr int kPngFailed = 1;
constexpr int kPngRowsComplete = 2;

// Each block starts with its size, so that PngFree can count it back.
constexpr size_t kBlockHeader = alignof(std::max_align_t);

png_voidp PngMalloc(png_structp png, png_alloc_size_t size) {
  auto* reader = static_cast<PngReader*>(png_get_mem_ptr(png));
  if (size > kMaxPngWorkingBytes - reader->allocated) return nullptr;  // libpng reports "out of memory"
  auto* block = static_cast<unsigned char*>(std::malloc(kBlockHeader + size));
  if (block == nullptr) return nullptr;
  std::memcpy(block, &size, sizeof(size));
  reader->allocated += size;
  return block + kBlockHeader;
}

void PngFree(png_structp png, png_voidp pointer) {
  if (pointer == nullptr) return;
  auto* reader = static_cast<PngReader*>(png_get_mem_ptr(png));
  unsigned char* block = static_cast<unsigned char*>(pointer) - kBlockHeader;
  png_alloc_size_t size = 0;
  std::memcpy(&size, block, sizeof(size));
  reader->allocated -= size;
  std::free(block);
}

[[noreturn]] void FailPng(png_structp png, const char* message) {
  auto* reader = static_cast<PngReader*>(png_get_error_ptr(png));
  std::snprintf(reader->message, sizeof(reader->message), "%s", message);
  png_longjmp(png, kPngFailed);
}

void OnPngError(png_structp png, png_const_charp message) { FailPng(png, message); }

void OnPngWarning(png_structp, png_const_charp) {}  // Not worth a log line per request.

// std::vector reports a failed allocation by throwing, which must not unwind through libpng's C
// frames: catch it here and let the caller longjmp instead.
bool AllocatePixels(RasterImage* out, size_t size) noexcept {
  try {
    out->pixels.assign(size, 0);
    return true;
  } catch (...) {
    return false;
  }
}

// After the chunks before the image data: the transforms to 8-bit gray, RGB or RGBA, and the
// pixels.
void OnPngInfo(png_structp png, png_infop info) {
  auto* reader = static_cast<PngReader*>(png_get_progressive_ptr(png));
  png_uint_32 width = 0, height = 0;
  int depth = 0, colour = 0;
  png_get_IHDR(png, info, &width, &height, &depth, &colour, nullptr, nullptr, nullptr);
  if (width != reader->width || height != reader->height) FailPng(png, "IHDR read twice differently");
  const bool has_trns = png_get_valid(png, info, PNG_INFO_tRNS) != 0;
  const bool transparent = (colour & PNG_COLOR_MASK_ALPHA) != 0 || has_trns;
  const int channels = transparent ? 4 : colour == PNG_COLOR_TYPE_GRAY ? 1 : 3;
  if (colour == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (colour == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (has_trns) png_set_tRNS_to_alpha(png);
  if (depth == 16) png_set_scale_16(png);
  if (transparent && (colour & PNG_COLOR_MASK_COLOR) == 0) png_set_gray_to_rgb(png);
  reader->passes = png_set_interlace_handling(png);
  png_read_update_info(png, info);
  if (png_get_bit_depth(png, info) != 8 || png_get_channels(png, info) != channels ||
      png_get_rowbytes(png, info) != size_t{width} * channels) {
    FailPng(png, "libpng's transforms gave an unexpected pixel layout");
  }
  RasterImage* out = reader->out;
  out->width = static_cast<int>(width);
  out->height = static_cast<int>(height);
  out->channels = channels;
  if (!AllocatePixels(out, size_t{width} * height * channels)) FailPng(png, "out of memory for the pixels");
}

// Each row as it completes (an interlaced image: each row of each pass, some of them NULL). The
// last one ends the read: nothing after it (the rest of the zlib stream, later chunks) is read.
void OnPngRow(png_structp png, png_bytep row, png_uint_32 row_number, int pass) {
  auto* reader = static_cast<PngReader*>(png_get_progressive_ptr(png));
  if (row_number >= reader->height) FailPng(png, "a row past the image");
  RasterImage* out = reader->out;
  if (row != nullptr) {
    png_progressive_combine_row(png, out->pixels.data() + size_t{row_number} * out->width * out->channels, row);
  }
  if (row_number + 1 == reader->height && pass == (reader->passes == 1 ? 0 : 6)) png_longjmp(png, kPngRowsComplete);
}

// The part that libpng may longjmp out of: no C++ object of its own lives across the jump (the
// pixels are in the caller's `reader->out`). Returns an empty string on success, else why not.
std::string ReadPng(absl::string_view data, PngReader* reader) {
  png_structp png = png_create_read_struct_2(PNG_LIBPNG_VER_STRING, reader, OnPngError, OnPngWarning, reader,
                                             PngMalloc, PngFree);
  if (png == nullptr) return "libpng cannot start (out of memory)";
  png_infop info = png_create_info_struct(png);
  if (info == nullptr) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    return "libpng cannot start (out of memory)";
  }
  switch (setjmp(png_jmpbuf(png))) {
    case 0:
      break;
    case kPngRowsComplete:
      png_destroy_read_struct(&png, &info, nullptr);
      return "";
    default:
      png_destroy_read_struct(&png, &info, nullptr);
      return reader->message;
  }
  // Skip every chunk but the critical ones and tRNS: libpng's list (-1) holds the text chunks and
  // iCCP, named again in case a version's list does not. Skipping costs a CRC over the bytes.
  png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, nullptr, -1);
  static constexpr png_byte kNeverRead[] = "iCCP\0iTXt\0tEXt\0zTXt";
  png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, kNeverRead, 4);
  png_set_chunk_cache_max(png, 1);  // 1 keeps none (0 would mean no limit)
  png_set_chunk_malloc_max(png, kMaxPngChunkBytes);
  png_set_user_limits(png, reader->width, reader->height);  // exactly the size already checked
  // Benign errors (a chunk longer than kMaxPngChunkBytes, a misplaced ancillary chunk) are
  // warnings, as in the simplified API this replaces. CRC errors: libpng's default (a critical
  // chunk's is an error, an ancillary chunk is dropped).
  png_set_benign_errors(png, 1);
  // The progressive reader, unlike png_read_row, does not inflate the rest of the zlib stream
  // after the last row: OnPngRow stops it there.
  png_set_progressive_read_fn(png, reader, OnPngInfo, OnPngRow, nullptr);
  png_process_data(png, info, reinterpret_cast<png_bytep>(const_cast<char*>(data.data())), data.size());
  png_destroy_read_struct(&png, &info, nullptr);
  return "the data ends before the image's last row";
}

}  // namespace

absl::StatusOr<ImageSize> PeekPngSize(absl::string_view data) {
  auto refuse = [](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("not a decodable PNG: ", why));
  };
  if (!absl::StartsWith(data, absl::string_view(kPngSignature, 8))) return refuse("no PNG signature");
  // Signature (8), then IHDR: length (4), type (4), data (13), CRC (4).
  if (data.size() < 33) {
    return refuse(absl::StrCat("the data ends after ", data.size(), " bytes, before the end of the IHDR chunk"));
  }
  const auto* chunk = reinterpret_cast<const unsigned char*>(data.data()) + 8;
  if (BigEndian32(chunk) != 13 || std::memcmp(chunk + 4, "IHDR", 4) != 0) {
    return refuse("the first chunk is not a 13-byte IHDR");
  }
  if (crc32(0, chunk + 4, 17) != BigEndian32(chunk + 21)) return refuse("IHDR: CRC error");
  const uint32_t width = BigEndian32(chunk + 8);
  const uint32_t height = BigEndian32(chunk + 12);
  const int depth = chunk[16];
  const int colour = chunk[17];
  if (width == 0 || height == 0 || width > PNG_UINT_31_MAX || height > PNG_UINT_31_MAX) {
    return refuse(absl::StrCat("IHDR declares ", width, "x", height, " pixels"));
  }
  bool valid_depth = false;
  switch (colour) {
    case PNG_COLOR_TYPE_GRAY: valid_depth = depth == 1 || depth == 2 || depth == 4 || depth == 8 || depth == 16; break;
    case PNG_COLOR_TYPE_PALETTE: valid_depth = depth == 1 || depth == 2 || depth == 4 || depth == 8; break;
    case PNG_COLOR_TYPE_RGB:
    case PNG_COLOR_TYPE_GRAY_ALPHA:
    case PNG_COLOR_TYPE_RGB_ALPHA: valid_depth = depth == 8 || depth == 16; break;
  }
  if (!valid_depth) return refuse(absl::StrCat("IHDR: colour type ", colour, " with bit depth ", depth));
  if (chunk[18] != 0 || chunk[19] != 0 || chunk[20] > 1) {
    return refuse("IHDR: unknown compression, filter or interlace method");
  }
  return ImageSize{static_cast<int>(width), static_cast<int>(height)};
}

absl::StatusOr<RasterImage> DecodePng(absl::string_view data, const DecodeLimits& limits) {
  absl::StatusOr<ImageSize> size = PeekPngSize(data);
  if (!size.ok()) return size.status();
  if (absl::Status fits = CheckDecodeSize("PNG", size->width, size->height, limits); !fits.ok()) return fits;
  RasterImage out;
  PngReader reader;
  reader.width = static_cast<uint32_t>(size->width);
  reader.height = static_cast<uint32_t>(size->height);
  reader.out = &out;
  if (std::string error = ReadPng(data, &reader); !error.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("not a decodable PNG: ", error));
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
