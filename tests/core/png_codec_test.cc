// PNG encoding and decoding through libpng; JPEG decoding; DecodeImage and PeekImageHeader.
#include "core/image/png_codec.h"

#include <png.h>
#include <zlib.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "core/image/image_codec.h"
#include "core/image/jpeg_codec.h"

namespace imagegen {
namespace {

// Pixels whose every byte differs from its neighbours, so that a swapped channel, row or
// column shows.
RasterImage Pattern(int width, int height, int channels) {
  RasterImage image;
  image.width = width;
  image.height = height;
  image.channels = channels;
  for (int i = 0; i < width * height * channels; ++i) image.pixels.push_back(static_cast<uint8_t>((i * 37 + 11) % 256));
  return image;
}

void ExpectRoundTrip(const RasterImage& image) {
  auto png = EncodePng(image);
  ASSERT_TRUE(png.ok()) << png.status();
  ASSERT_GE(png->size(), 8u);
  EXPECT_EQ(png->substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  auto decoded = DecodePng(*png);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->width, image.width);
  EXPECT_EQ(decoded->height, image.height);
  EXPECT_EQ(decoded->channels, image.channels);
  EXPECT_EQ(decoded->pixels, image.pixels);
}

TEST(PngCodec, GrayRoundTripIsExact) { ExpectRoundTrip(Pattern(7, 5, 1)); }

TEST(PngCodec, RgbRoundTripIsExact) { ExpectRoundTrip(Pattern(5, 7, 3)); }

TEST(PngCodec, RgbaRoundTripIsExact) { ExpectRoundTrip(Pattern(3, 2, 4)); }

TEST(PngCodec, OnePixelRoundTrips) { ExpectRoundTrip(Pattern(1, 1, 1)); }

TEST(PngCodec, UndecodableBytesAreInvalidArgument) {
  for (const std::string& data : {std::string(), std::string("not a png at all"),
                                  std::string("\x89PNG\r\n\x1a\n", 8) + std::string(40, '\0')}) {
    auto decoded = DecodePng(data);
    ASSERT_FALSE(decoded.ok()) << "decoded " << data.size() << " bytes";
    EXPECT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(decoded.status().message().find("not a decodable PNG"), absl::string_view::npos)
        << decoded.status();
  }
}

TEST(PngCodec, TruncatedPngIsInvalidArgument) {
  auto png = EncodePng(Pattern(16, 16, 3));
  ASSERT_TRUE(png.ok()) << png.status();
  auto decoded = DecodePng(absl::string_view(*png).substr(0, png->size() / 2));
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(PngCodec, PixelCountThatDoesNotMatchTheSizeIsRejected) {
  RasterImage image = Pattern(4, 4, 3);
  image.pixels.pop_back();
  auto png = EncodePng(image);
  ASSERT_FALSE(png.ok());
  EXPECT_EQ(png.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(png.status().message().find("4x4x3"), absl::string_view::npos) << png.status();
  EXPECT_NE(png.status().message().find("47 bytes"), absl::string_view::npos) << png.status();

  image = Pattern(4, 4, 1);
  image.width = 5;
  EXPECT_EQ(EncodePng(image).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(PngCodec, EmptyOrUnsupportedShapesAreRejected) {
  RasterImage empty;
  empty.channels = 1;
  EXPECT_EQ(EncodePng(empty).status().code(), absl::StatusCode::kInvalidArgument);
  RasterImage two_channels = Pattern(2, 2, 2);
  auto png = EncodePng(two_channels);
  ASSERT_FALSE(png.ok());
  EXPECT_EQ(png.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(png.status().message().find("channels"), absl::string_view::npos) << png.status();
}

TEST(JpegCodec, RoundTripKeepsSizeChannelsAndApproximatePixels) {
  for (int channels : {1, 3}) {
    RasterImage flat;
    flat.width = 24;
    flat.height = 16;
    flat.channels = channels;
    flat.pixels.assign(24 * 16 * channels, 180);
    auto jpeg = EncodeJpeg(flat, 95);
    ASSERT_TRUE(jpeg.ok()) << jpeg.status();
    auto back = DecodeJpeg(*jpeg);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->width, 24);
    EXPECT_EQ(back->height, 16);
    EXPECT_EQ(back->channels, channels);
    for (uint8_t v : back->pixels) EXPECT_NEAR(v, 180, 3);
  }
}

TEST(JpegCodec, GarbageIsInvalidArgumentWithLibjpegsReason) {
  auto bad = DecodeJpeg(std::string("\xff\xd8\xff\xe0 truncated", 14));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("JPEG"), std::string::npos);
}

// The size comes from the header and is checked before the pixels are allocated: a few bytes
// declaring a huge image must not cost memory (tests/fuzz/regressions/ has two such requests).
TEST(DecodeImage, RefusesImagesOutsideTheLimitsByTheirHeader) {
  RasterImage gray = Pattern(32, 16, 1);
  auto png = EncodePng(gray);
  auto jpeg = EncodeJpeg(gray);
  ASSERT_TRUE(png.ok() && jpeg.ok());
  for (const std::string* data : {&*png, &*jpeg}) {
    EXPECT_TRUE(DecodeImage(*data, DecodeLimits{32, 32 * 16}).ok());
    for (const DecodeLimits& limits : {DecodeLimits{31, 10000}, DecodeLimits{64, 32 * 16 - 1}}) {
      auto refused = DecodeImage(*data, limits);
      ASSERT_FALSE(refused.ok());
      EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_NE(refused.status().message().find("32x16"), std::string::npos) << refused.status();
      EXPECT_NE(refused.status().message().find(absl::StrCat("at most ", limits.max_side, " per side and ",
                                                             limits.max_pixels, " pixels")),
                std::string::npos)
          << refused.status();
    }
  }
}

std::string ReadTestData(const std::string& name) {
  std::ifstream in(std::string(IMAGEGEN_TEST_DATA_DIR) + "/" + name, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Each scan of a progressive JPEG is a pass over the whole image: a file of many small scans
// would cost seconds of decoding on a gRPC thread (tests/data/README.md says how these were made).
TEST(JpegCodec, RefusesMoreThanTheScanLimit) {
  const std::string normal = ReadTestData("progressive_6_scans.jpg");
  const std::string bomb = ReadTestData("progressive_156_scans.jpg");
  ASSERT_FALSE(normal.empty());
  ASSERT_FALSE(bomb.empty());
  auto decoded = DecodeJpeg(normal);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->width, 32);
  auto refused = DecodeJpeg(bomb);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find(absl::StrCat("more than ", kMaxJpegScans, " progressive scans")),
            std::string::npos)
      << refused.status();
}

TEST(DecodeImage, TellsPngFromJpegAndRefusesOthers) {
  RasterImage gray = Pattern(8, 8, 1);
  auto png = EncodePng(gray);
  auto jpeg = EncodeJpeg(gray);
  ASSERT_TRUE(png.ok() && jpeg.ok());
  EXPECT_TRUE(DecodeImage(*png).ok());
  EXPECT_TRUE(DecodeImage(*jpeg).ok());
  auto gif = DecodeImage("GIF89a....");
  ASSERT_FALSE(gif.ok());
  EXPECT_EQ(gif.status().code(), absl::StatusCode::kInvalidArgument);
}

// ---- Every kind of PNG, written by libpng itself ----

// What to write: IHDR's fields, and PLTE and tRNS where given.
struct PngSpec {
  int width = 13;
  int height = 7;
  int depth = 8;
  int colour = PNG_COLOR_TYPE_RGB;
  bool interlaced = false;
  std::vector<png_color> palette;
  std::vector<png_byte> palette_alpha;  // tRNS of a palette image
  int transparent_sample = -1;          // tRNS of a gray or RGB image: this value in every channel
};

int SamplesPerPixel(int colour) {
  switch (colour) {
    case PNG_COLOR_TYPE_GRAY_ALPHA: return 2;
    case PNG_COLOR_TYPE_RGB: return 3;
    case PNG_COLOR_TYPE_RGB_ALPHA: return 4;
    default: return 1;  // gray, palette
  }
}

// Samples that cover the depth's range (16-bit ones are b * 257, which scale exactly to b); the
// first pixel has every channel equal to `spec.transparent_sample` where one is set.
std::vector<int> Samples(const PngSpec& spec) {
  const int count = spec.width * spec.height * SamplesPerPixel(spec.colour);
  const int levels = spec.colour == PNG_COLOR_TYPE_PALETTE ? static_cast<int>(spec.palette.size())
                     : spec.depth == 16                   ? 256
                                                          : 1 << spec.depth;
  std::vector<int> samples;
  for (int i = 0; i < count; ++i) {
    const int level = (i * 37 + i / 5) % levels;
    samples.push_back(spec.depth == 16 ? level * 257 : level);
  }
  if (spec.transparent_sample >= 0) {
    for (int c = 0; c < SamplesPerPixel(spec.colour); ++c) samples[c] = spec.transparent_sample;
  }
  return samples;
}

void AppendPng(png_structp png, png_bytep data, size_t size) {
  static_cast<std::string*>(png_get_io_ptr(png))->append(reinterpret_cast<const char*>(data), size);
}

// `spec` as libpng writes it, in IDAT chunks of `idat_bytes` or less.
std::string WritePng(const PngSpec& spec, const std::vector<int>& samples, size_t idat_bytes = 8192) {
  std::string out;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  png_set_write_fn(png, &out, AppendPng, nullptr);
  png_set_compression_buffer_size(png, idat_bytes);
  png_set_IHDR(png, info, spec.width, spec.height, spec.depth, spec.colour,
               spec.interlaced ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  if (!spec.palette.empty()) png_set_PLTE(png, info, spec.palette.data(), static_cast<int>(spec.palette.size()));
  png_color_16 transparent{};
  transparent.gray = transparent.red = transparent.green = transparent.blue =
      static_cast<png_uint_16>(spec.transparent_sample);
  if (!spec.palette_alpha.empty()) {
    png_set_tRNS(png, info, spec.palette_alpha.data(), static_cast<int>(spec.palette_alpha.size()), nullptr);
  } else if (spec.transparent_sample >= 0) {
    png_set_tRNS(png, info, nullptr, 0, &transparent);
  }
  png_write_info(png, info);
  // Rows packed as PNG stores them: samples below 8 bits from the high bits, 16 bits big-endian.
  const int per_row = spec.width * SamplesPerPixel(spec.colour);
  std::vector<std::vector<png_byte>> rows(spec.height);
  std::vector<png_bytep> pointers;
  for (int y = 0; y < spec.height; ++y) {
    std::vector<png_byte>& row = rows[y];
    row.assign((static_cast<size_t>(per_row) * spec.depth + 7) / 8, 0);
    for (int i = 0; i < per_row; ++i) {
      const int v = samples[static_cast<size_t>(y) * per_row + i];
      if (spec.depth == 16) {
        row[2 * i] = static_cast<png_byte>(v >> 8);
        row[2 * i + 1] = static_cast<png_byte>(v);
      } else {
        const int bit = i * spec.depth;
        row[bit / 8] |= static_cast<png_byte>(v << (8 - spec.depth - bit % 8));
      }
    }
    pointers.push_back(row.data());
  }
  png_set_interlace_handling(png);
  png_write_image(png, pointers.data());
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return out;
}

// What DecodePng promises for `spec`: 8-bit gray (1), RGB (3), or RGBA (4) when there is any
// transparency.
RasterImage ExpectedDecode(const PngSpec& spec, const std::vector<int>& samples) {
  RasterImage image;
  image.width = spec.width;
  image.height = spec.height;
  const bool alpha = (spec.colour & PNG_COLOR_MASK_ALPHA) != 0 || spec.transparent_sample >= 0 ||
                     !spec.palette_alpha.empty();
  image.channels = alpha ? 4 : spec.colour == PNG_COLOR_TYPE_GRAY ? 1 : 3;
  auto to8 = [&spec](int v) {
    return static_cast<uint8_t>(spec.depth == 16 ? v / 257 : v * 255 / ((1 << spec.depth) - 1));
  };
  const int per_pixel = SamplesPerPixel(spec.colour);
  for (int p = 0; p < spec.width * spec.height; ++p) {
    const int* s = &samples[static_cast<size_t>(p) * per_pixel];
    uint8_t rgba[4] = {0, 0, 0, 255};
    switch (spec.colour) {
      case PNG_COLOR_TYPE_PALETTE:
        rgba[0] = spec.palette[s[0]].red;
        rgba[1] = spec.palette[s[0]].green;
        rgba[2] = spec.palette[s[0]].blue;
        if (s[0] < static_cast<int>(spec.palette_alpha.size())) rgba[3] = spec.palette_alpha[s[0]];
        break;
      case PNG_COLOR_TYPE_GRAY:
      case PNG_COLOR_TYPE_GRAY_ALPHA:
        rgba[0] = rgba[1] = rgba[2] = to8(s[0]);
        if (per_pixel == 2) rgba[3] = to8(s[1]);
        if (s[0] == spec.transparent_sample) rgba[3] = 0;
        break;
      default:
        for (int c = 0; c < 3; ++c) rgba[c] = to8(s[c]);
        if (per_pixel == 4) rgba[3] = to8(s[3]);
        if (s[0] == spec.transparent_sample && s[1] == spec.transparent_sample && s[2] == spec.transparent_sample) {
          rgba[3] = 0;
        }
    }
    if (image.channels == 1) {
      image.pixels.push_back(rgba[0]);
    } else {
      image.pixels.insert(image.pixels.end(), rgba, rgba + image.channels);
    }
  }
  return image;
}

std::vector<png_color> Palette(int entries) {
  std::vector<png_color> palette;
  for (int i = 0; i < entries; ++i) {
    palette.push_back(png_color{static_cast<png_byte>(i * 7), static_cast<png_byte>(255 - i),
                                static_cast<png_byte>(i * 3 + 1)});
  }
  return palette;
}

// One of each colour type and bit depth, with and without tRNS.
std::vector<PngSpec> EveryKindOfPng() {
  std::vector<PngSpec> specs;
  auto add = [&specs](int colour, int depth) {
    PngSpec spec;
    spec.colour = colour;
    spec.depth = depth;
    if (colour == PNG_COLOR_TYPE_PALETTE) spec.palette = Palette(1 << std::min(depth, 6));
    specs.push_back(spec);
    return &specs.back();
  };
  for (int depth : {1, 2, 4, 8, 16}) add(PNG_COLOR_TYPE_GRAY, depth);
  for (int depth : {1, 2, 4, 8}) add(PNG_COLOR_TYPE_PALETTE, depth);
  for (int depth : {8, 16}) {
    add(PNG_COLOR_TYPE_RGB, depth);
    add(PNG_COLOR_TYPE_GRAY_ALPHA, depth);
    add(PNG_COLOR_TYPE_RGB_ALPHA, depth);
  }
  add(PNG_COLOR_TYPE_GRAY, 2)->transparent_sample = 1;
  add(PNG_COLOR_TYPE_GRAY, 16)->transparent_sample = 3 * 257;
  add(PNG_COLOR_TYPE_RGB, 8)->transparent_sample = 9;
  add(PNG_COLOR_TYPE_PALETTE, 4)->palette_alpha = {0, 128, 255, 7};
  return specs;
}

std::string Describe(const PngSpec& spec) {
  const bool trns = spec.transparent_sample >= 0 || !spec.palette_alpha.empty();
  return absl::StrCat(spec.width, "x", spec.height, " colour type ", spec.colour, " depth ", spec.depth,
                      spec.interlaced ? " interlaced" : "", trns ? " tRNS" : "");
}

void ExpectDecodesAsPromised(const PngSpec& spec) {
  const std::vector<int> samples = Samples(spec);
  const std::string png = WritePng(spec, samples);
  auto decoded = DecodePng(png);
  ASSERT_TRUE(decoded.ok()) << Describe(spec) << ": " << decoded.status();
  const RasterImage expected = ExpectedDecode(spec, samples);
  EXPECT_EQ(decoded->width, expected.width) << Describe(spec);
  EXPECT_EQ(decoded->height, expected.height) << Describe(spec);
  EXPECT_EQ(decoded->channels, expected.channels) << Describe(spec);
  EXPECT_TRUE(decoded->pixels == expected.pixels) << Describe(spec);
}

TEST(DecodePng, EveryColourTypeAndDepthDecodesToGrayRgbOrRgba) {
  for (PngSpec spec : EveryKindOfPng()) {
    ExpectDecodesAsPromised(spec);
    spec.interlaced = true;
    ExpectDecodesAsPromised(spec);
  }
}

// Adam7 leaves passes empty in small images: the read must still end at the last row.
TEST(DecodePng, InterlacedImagesOfEverySmallSizeDecode) {
  for (int width : {1, 2, 3, 4, 5, 8, 9}) {
    for (int height : {1, 2, 3, 4, 5, 6, 8, 9, 17}) {
      for (int colour : {PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_RGB_ALPHA}) {
        PngSpec spec;
        spec.width = width;
        spec.height = height;
        spec.colour = colour;
        spec.interlaced = true;
        ExpectDecodesAsPromised(spec);
      }
    }
  }
}

// The rows are complete before the zlib stream's end and the chunks after the image: what comes
// after them is not read (tests/core/image_bomb_test.cc has the costly cases).
TEST(DecodePng, ReadingEndsAtTheLastRow) {
  PngSpec spec;
  const std::vector<int> samples = Samples(spec);
  const std::string png = WritePng(spec, samples);
  const size_t iend = png.size() - 12;
  auto decoded = DecodePng(png.substr(0, iend));  // no IEND
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_TRUE(decoded->pixels == ExpectedDecode(spec, samples).pixels);
  EXPECT_TRUE(DecodePng(png.substr(0, iend) + "any bytes at all").ok());
}

// libpng checks the CRC of every critical chunk it reads. (Not of the last IDAT chunk, whose end
// it does not read: the read stops at the last row.)
TEST(DecodePng, ACorruptCriticalChunkIsRefused) {
  PngSpec spec;
  spec.width = spec.height = 64;
  std::string png = WritePng(spec, Samples(spec), /*idat_bytes=*/100);
  const size_t second_idat = png.find("IDAT", png.find("IDAT") + 4);
  ASSERT_NE(second_idat, std::string::npos);
  png[second_idat - 8 - 1] ^= 1;  // the last byte of the first IDAT chunk's data
  auto decoded = DecodePng(png);
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(decoded.status().message().find("not a decodable PNG: IDAT: CRC error"), std::string::npos)
      << decoded.status();
}

// ---- PeekImageHeader ----

std::string ProgressiveJpeg() { return ReadTestData("progressive_6_scans.jpg"); }

TEST(PeekImageHeader, AgreesWithDecodeImage) {
  std::vector<std::pair<std::string, std::string>> files;  // what, bytes
  for (PngSpec spec : EveryKindOfPng()) {
    spec.width = 21;
    spec.height = 4;
    files.emplace_back(Describe(spec), WritePng(spec, Samples(spec)));
  }
  for (int channels : {1, 3}) {
    auto jpeg = EncodeJpeg(Pattern(19, 11, channels));
    ASSERT_TRUE(jpeg.ok()) << jpeg.status();
    files.emplace_back(absl::StrCat("baseline JPEG x", channels), *jpeg);
  }
  files.emplace_back("progressive JPEG", ProgressiveJpeg());
  for (const auto& [what, data] : files) {
    auto header = PeekImageHeader(data);
    auto decoded = DecodeImage(data);
    ASSERT_TRUE(header.ok()) << what << ": " << header.status();
    ASSERT_TRUE(decoded.ok()) << what << ": " << decoded.status();
    EXPECT_EQ(header->format, data[0] == '\xff' ? ImageFormat::kJpeg : ImageFormat::kPng) << what;
    EXPECT_EQ(header->width, decoded->width) << what;
    EXPECT_EQ(header->height, decoded->height) << what;
  }
}

// What the lead's RPC thread relies on: the size that PeekImageHeader reports is the one
// DecodeImage refuses (or accepts) by its limits, without a pixel decoded.
TEST(PeekImageHeader, ReportsTheSizeThatDecodeImageChecks) {
  PngSpec spec;
  std::string png = WritePng(spec, Samples(spec)).substr(0, 33);  // signature and IHDR only
  auto png_header = PeekImageHeader(png);
  ASSERT_TRUE(png_header.ok()) << png_header.status();
  EXPECT_EQ(png_header->width, 13);
  EXPECT_EQ(png_header->height, 7);
  auto refused = DecodeImage(png, DecodeLimits{12, 1000});
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("a PNG of 13x7 pixels; allowed: at most 12 per side"), std::string::npos)
      << refused.status();

  auto jpeg = EncodeJpeg(Pattern(40, 30, 3));
  ASSERT_TRUE(jpeg.ok());
  auto jpeg_header = PeekImageHeader(*jpeg);
  ASSERT_TRUE(jpeg_header.ok()) << jpeg_header.status();
  EXPECT_EQ(jpeg_header->format, ImageFormat::kJpeg);
  EXPECT_EQ(jpeg_header->width, 40);
  EXPECT_EQ(jpeg_header->height, 30);
  refused = DecodeImage(*jpeg, DecodeLimits{40, 40 * 30 - 1});
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("a JPEG of 40x30 pixels"), std::string::npos) << refused.status();
}

// libjpeg skips bytes between markers that are not a marker (with a warning); so does the peek.
// (DecodeImage itself wants a marker right after SOI: its signature is FF D8 FF.)
TEST(PeekImageHeader, SkipsWhatLibjpegSkipsBeforeTheFrameHeader) {
  auto jpeg = EncodeJpeg(Pattern(24, 8, 1));
  ASSERT_TRUE(jpeg.ok());
  const size_t dqt = jpeg->find("\xff\xdb");  // after APP0
  ASSERT_NE(dqt, std::string::npos);
  const std::string padded = jpeg->substr(0, dqt) + std::string("junk\xff\x00more", 10) + jpeg->substr(dqt);
  auto header = PeekImageHeader(padded);
  ASSERT_TRUE(header.ok()) << header.status();
  auto decoded = DecodeImage(padded);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(header->width, 24);
  EXPECT_EQ(decoded->width, 24);
}

// Each refusal is DecodeImage's own, word for word.
void ExpectRefusedAlike(const std::string& what, const std::string& data, const std::string& needle) {
  auto header = PeekImageHeader(data);
  ASSERT_FALSE(header.ok()) << what << ": " << header->width << "x" << header->height;
  EXPECT_EQ(header.status().code(), absl::StatusCode::kInvalidArgument) << what;
  EXPECT_NE(header.status().message().find(needle), std::string::npos) << what << ": " << header.status();
  auto decoded = DecodeImage(data);
  ASSERT_FALSE(decoded.ok()) << what;
  EXPECT_EQ(decoded.status(), header.status()) << what;
}

TEST(PeekImageHeader, RefusesGarbageAndTruncatedHeaders) {
  ExpectRefusedAlike("empty", "", "neither a PNG nor a JPEG (unknown signature)");
  ExpectRefusedAlike("GIF", "GIF89a\x01\x00\x01\x00", "neither a PNG nor a JPEG");
  ExpectRefusedAlike("WebP", "RIFF\x10\x00\x00\x00WEBPVP8 ", "neither a PNG nor a JPEG");

  PngSpec spec;
  const std::string png = WritePng(spec, Samples(spec));
  for (size_t length = 8; length < 33; ++length) {
    ExpectRefusedAlike(absl::StrCat("PNG cut at ", length), png.substr(0, length),
                       "not a decodable PNG: the data ends");
  }
  std::string bad = png;
  bad[29] ^= 1;  // IHDR's CRC
  ExpectRefusedAlike("PNG IHDR CRC", bad, "not a decodable PNG: IHDR: CRC error");
  bad = png;
  bad[12] = 'i';  // IHDR -> iHDR
  ExpectRefusedAlike("PNG first chunk", bad, "not a decodable PNG: the first chunk is not a 13-byte IHDR");
  std::string ihdr = png.substr(12, 17);  // type and data
  ihdr[12] = 3;                           // bit depth 8 -> 3
  ihdr[13] = 3;                           // colour type RGB -> palette
  const uLong crc = crc32(0, reinterpret_cast<const Bytef*>(ihdr.data()), 17);
  bad = png.substr(0, 12) + ihdr + std::string{static_cast<char>(crc >> 24), static_cast<char>(crc >> 16),
                                               static_cast<char>(crc >> 8), static_cast<char>(crc)} + png.substr(33);
  ExpectRefusedAlike("PNG bit depth", bad, "not a decodable PNG: IHDR: colour type 3 with bit depth 3");

  auto jpeg = EncodeJpeg(Pattern(16, 16, 3));
  ASSERT_TRUE(jpeg.ok());
  const size_t sof = jpeg->find("\xff\xc0");
  ASSERT_NE(sof, std::string::npos);
  for (size_t length = 3; length < sof + 10; length += 7) {
    ExpectRefusedAlike(absl::StrCat("JPEG cut at ", length), jpeg->substr(0, length),
                       "not a decodable JPEG: the data ends");
  }
  std::string lossless = *jpeg;
  lossless[sof + 1] = '\xc3';
  ExpectRefusedAlike("JPEG SOF3", lossless, "not a decodable JPEG: SOF3 (lossless or hierarchical) is not supported");
  std::string empty = *jpeg;
  empty[sof + 5] = empty[sof + 6] = '\0';  // height 0
  ExpectRefusedAlike("JPEG height 0", empty, "not a decodable JPEG: the frame header declares 16x0 pixels");
  ExpectRefusedAlike("JPEG scan first", jpeg->substr(0, 2) + jpeg->substr(jpeg->find("\xff\xda")),
                     "not a decodable JPEG: no frame header (SOFn) before the image data");
  ExpectRefusedAlike("JPEG unknown marker", jpeg->substr(0, 2) + std::string("\xff\xf3\x00\x02", 4) + jpeg->substr(2),
                     "not a decodable JPEG: unsupported marker 0xf3");
  // EncodeJpeg writes three markers before SOF0 (APP0, two DQT): with these, the most allowed.
  std::string comments;
  const std::string comment("\xff\xfe\x00\x03x", 5);
  for (int i = 0; i < kMaxJpegMarkersBeforeFrame - 3; ++i) comments += comment;
  auto at_limit = PeekImageHeader(jpeg->substr(0, 2) + comments + jpeg->substr(2));
  ASSERT_TRUE(at_limit.ok()) << at_limit.status();
  EXPECT_EQ(at_limit->width, 16);
  ExpectRefusedAlike("JPEG many markers", jpeg->substr(0, 2) + comments + comment + jpeg->substr(2),
                     absl::StrCat("more than ", kMaxJpegMarkersBeforeFrame, " markers before the frame header"));
}

}  // namespace
}  // namespace imagegen
