// PNG encoding and decoding through libpng.
#include "core/image/png_codec.h"
#include "core/image/jpeg_codec.h"

#include <fstream>
#include <iterator>
#include <string>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"

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
TEST(JpegCodec, RefusesMoreThanAHundredProgressiveScans) {
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
  EXPECT_NE(refused.status().message().find("more than 100 progressive scans"), std::string::npos)
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

}  // namespace
}  // namespace imagegen
