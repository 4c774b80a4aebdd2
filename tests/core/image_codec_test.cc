// EncodeImage and the JPEG and WebP encoders: each format's bytes decode back to the image.
#include "core/image/image_codec.h"

#include <webp/decode.h>
#include <webp/types.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "core/image/jpeg_codec.h"
#include "core/image/png_codec.h"
#include "core/image/webp_codec.h"

namespace imagegen {
namespace {

// A smooth image, like a decoded latent: each channel a different linear ramp, so that a swapped
// channel or a transposed image shows as a large error. Alpha (channel 1 of 2, 3 of 4) is a
// ramp across the rows.
RasterImage Gradient(int width, int height, int channels) {
  RasterImage image;
  image.width = width;
  image.height = height;
  image.channels = channels;
  image.pixels.resize(static_cast<size_t>(width) * height * channels);
  const bool alpha = channels == 2 || channels == 4;
  const int colours = alpha ? channels - 1 : channels;
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      uint8_t* pixel = &image.pixels[(static_cast<size_t>(y) * width + x) * channels];
      const int ramps[3] = {255 * x / (width - 1), 255 * y / (height - 1), 255 * (x + y) / (width + height - 2)};
      for (int c = 0; c < colours; ++c) pixel[c] = static_cast<uint8_t>(colours == 1 ? ramps[2] : ramps[c]);
      if (alpha) pixel[channels - 1] = static_cast<uint8_t>(64 + 191 * y / (height - 1));
    }
  }
  return image;
}

// Smooth but not linear, like a decoded image: a product of slow sines per channel. (A linear
// ramp would flatter PNG, whose row filters predict it exactly.)
RasterImage SmoothScene(int width, int height) {
  RasterImage image;
  image.width = width;
  image.height = height;
  image.channels = 3;
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      for (int c = 0; c < 3; ++c) {
        const double v = 128 + 100 * std::sin(x / 7.0 + 2.1 * c) * std::cos(y / 9.0 - 1.3 * c);
        image.pixels.push_back(static_cast<uint8_t>(std::lround(v)));
      }
    }
  }
  return image;
}

double MeanAbsoluteError(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  EXPECT_EQ(a.size(), b.size());
  if (a.size() != b.size() || a.empty()) return 1e9;
  double sum = 0;
  for (size_t i = 0; i < a.size(); ++i) sum += std::abs(int{a[i]} - int{b[i]});
  return sum / static_cast<double>(a.size());
}

// The colour channels of `image` (alpha dropped), as a JPEG decodes them.
std::vector<uint8_t> ColourOf(const RasterImage& image) {
  if (image.channels == 1 || image.channels == 3) return image.pixels;
  std::vector<uint8_t> out;
  for (size_t i = 0; i < image.pixels.size(); ++i) {
    if ((i + 1) % image.channels != 0) out.push_back(image.pixels[i]);
  }
  return out;
}

// `image` as RGB (gray repeated), as WebPDecodeRGB returns it.
std::vector<uint8_t> AsRgb(const RasterImage& image) {
  std::vector<uint8_t> colour = ColourOf(image);
  if (image.channels >= 3) return colour;
  std::vector<uint8_t> rgb;
  for (uint8_t gray : colour) rgb.insert(rgb.end(), 3, gray);
  return rgb;
}

struct DecodedWebp {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> pixels;
};

// libwebp's own decoder: RGB, or RGBA when `rgba`.
DecodedWebp DecodeWebpForTest(const std::string& data, bool rgba) {
  DecodedWebp out;
  const auto* bytes = reinterpret_cast<const uint8_t*>(data.data());
  uint8_t* pixels = rgba ? WebPDecodeRGBA(bytes, data.size(), &out.width, &out.height)
                         : WebPDecodeRGB(bytes, data.size(), &out.width, &out.height);
  if (pixels == nullptr) {
    ADD_FAILURE() << "libwebp cannot decode " << data.size() << " bytes";
    return out;
  }
  out.pixels.assign(pixels, pixels + static_cast<size_t>(out.width) * out.height * (rgba ? 4 : 3));
  WebPFree(pixels);
  return out;
}

bool HasMagic(const std::string& data, ImageFormat format) {
  switch (format) {
    case ImageFormat::kPng: return data.compare(0, 8, std::string("\x89PNG\r\n\x1a\n", 8)) == 0;
    case ImageFormat::kJpeg: return data.compare(0, 3, "\xFF\xD8\xFF") == 0;
    case ImageFormat::kWebp:
      return data.size() >= 12 && data.compare(0, 4, "RIFF") == 0 && data.compare(8, 4, "WEBP") == 0;
  }
  return false;
}

constexpr ImageFormat kFormats[] = {ImageFormat::kPng, ImageFormat::kJpeg, ImageFormat::kWebp};

TEST(ImageFormatName, NamesEachFormat) {
  EXPECT_STREQ(ImageFormatName(ImageFormat::kPng), "png");
  EXPECT_STREQ(ImageFormatName(ImageFormat::kJpeg), "jpeg");
  EXPECT_STREQ(ImageFormatName(ImageFormat::kWebp), "webp");
  EXPECT_STREQ(ImageFormatName(static_cast<ImageFormat>(17)), "unknown");
}

TEST(EncodeImage, WritesEachFormatsSignatureForEveryChannelCount) {
  for (ImageFormat format : kFormats) {
    for (int channels = 1; channels <= 4; ++channels) {
      auto encoded = EncodeImage(Gradient(16, 8, channels), format, 80);
      ASSERT_TRUE(encoded.ok()) << ImageFormatName(format) << " x" << channels << ": " << encoded.status();
      EXPECT_TRUE(HasMagic(*encoded, format)) << ImageFormatName(format) << " x" << channels;
      for (ImageFormat other : kFormats) {
        if (other != format) {
          EXPECT_FALSE(HasMagic(*encoded, other)) << ImageFormatName(format);
        }
      }
    }
  }
}

TEST(EncodeImage, PngIsLosslessAndIgnoresQuality) {
  const RasterImage rgb = Gradient(20, 12, 3);
  for (int quality : {0, 50, 1000}) {
    auto png = EncodeImage(rgb, ImageFormat::kPng, quality);
    ASSERT_TRUE(png.ok()) << quality << ": " << png.status();
    auto back = DecodeImage(*png);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->pixels, rgb.pixels);
  }
}

TEST(EncodeImage, PngWritesGrayAlphaAsRgba) {
  const RasterImage gray_alpha = Gradient(9, 7, 2);
  auto png = EncodeImage(gray_alpha, ImageFormat::kPng, 0);
  ASSERT_TRUE(png.ok()) << png.status();
  auto back = DecodePng(*png);
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->channels, 4);
  for (size_t i = 0; i < 9 * 7; ++i) {
    for (int c = 0; c < 3; ++c) ASSERT_EQ(back->pixels[i * 4 + c], gray_alpha.pixels[i * 2]) << i;
    ASSERT_EQ(back->pixels[i * 4 + 3], gray_alpha.pixels[i * 2 + 1]) << i;
  }
}

TEST(EncodeImage, QualityOutsideOneToHundredIsRefusedWithTheValue) {
  const RasterImage rgb = Gradient(8, 8, 3);
  for (ImageFormat format : {ImageFormat::kJpeg, ImageFormat::kWebp}) {
    for (int quality : {0, 101, -5}) {
      auto encoded = EncodeImage(rgb, format, quality);
      ASSERT_FALSE(encoded.ok()) << ImageFormatName(format) << " " << quality;
      EXPECT_EQ(encoded.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_NE(encoded.status().message().find(absl::StrCat("quality is ", quality, ";")), std::string::npos)
          << encoded.status();
      EXPECT_NE(encoded.status().message().find("1..100"), std::string::npos) << encoded.status();
    }
    EXPECT_TRUE(EncodeImage(rgb, format, 1).ok()) << ImageFormatName(format);
    EXPECT_TRUE(EncodeImage(rgb, format, 100).ok()) << ImageFormatName(format);
  }
}

TEST(EncodeImage, EmptyOrInconsistentRastersAreInvalidArgument) {
  RasterImage empty;
  empty.channels = 3;
  RasterImage short_pixels = Gradient(4, 4, 3);
  short_pixels.pixels.pop_back();
  RasterImage wrong_width = Gradient(4, 4, 1);
  wrong_width.width = 5;
  RasterImage five_channels = Gradient(2, 2, 1);
  five_channels.channels = 5;
  five_channels.pixels.resize(2 * 2 * 5);
  RasterImage zero_channels;
  zero_channels.width = 2;
  zero_channels.height = 2;
  for (ImageFormat format : kFormats) {
    for (const RasterImage* bad : {&empty, &short_pixels, &wrong_width, &five_channels, &zero_channels}) {
      auto encoded = EncodeImage(*bad, format, 80);
      ASSERT_FALSE(encoded.ok()) << ImageFormatName(format) << " " << bad->width << "x" << bad->height << "x"
                                 << bad->channels;
      EXPECT_EQ(encoded.status().code(), absl::StatusCode::kInvalidArgument) << encoded.status();
    }
  }
  auto jpeg = EncodeJpeg(short_pixels, 80);
  ASSERT_FALSE(jpeg.ok());
  EXPECT_NE(jpeg.status().message().find("4x4x3 does not match 47 bytes"), std::string::npos) << jpeg.status();
}

TEST(EncodeImage, SidesBeyondTheFormatsLimitAreInvalidArgument) {
  RasterImage wide;
  wide.width = 16384;  // WEBP_MAX_DIMENSION + 1
  wide.height = 1;
  wide.channels = 1;
  wide.pixels.assign(16384, 128);
  auto webp = EncodeWebp(wide, 80);
  ASSERT_FALSE(webp.ok());
  EXPECT_EQ(webp.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(webp.status().message().find("16383"), std::string::npos) << webp.status();
  EXPECT_TRUE(EncodeJpeg(wide, 80).ok());

  wide.width = 65501;  // JPEG_MAX_DIMENSION + 1
  wide.pixels.assign(65501, 128);
  auto jpeg = EncodeJpeg(wide, 80);
  ASSERT_FALSE(jpeg.ok());
  EXPECT_EQ(jpeg.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(jpeg.status().message().find("65500"), std::string::npos) << jpeg.status();
}

class JpegEncodeTest : public testing::TestWithParam<int> {};  // channels

TEST_P(JpegEncodeTest, RoundTripsThroughDecodeImageWithQualityBoundedError) {
  const int channels = GetParam();
  const RasterImage image = Gradient(64, 48, channels);
  auto fine = EncodeImage(image, ImageFormat::kJpeg, 90);
  auto coarse = EncodeImage(image, ImageFormat::kJpeg, 10);
  ASSERT_TRUE(fine.ok() && coarse.ok()) << fine.status() << coarse.status();
  auto fine_back = DecodeImage(*fine);
  auto coarse_back = DecodeImage(*coarse);
  ASSERT_TRUE(fine_back.ok() && coarse_back.ok()) << fine_back.status() << coarse_back.status();
  const int colours = channels == 2 || channels == 4 ? channels - 1 : channels;
  for (const RasterImage* back : {&*fine_back, &*coarse_back}) {
    EXPECT_EQ(back->width, 64);
    EXPECT_EQ(back->height, 48);
    EXPECT_EQ(back->channels, colours);  // Alpha dropped; gray stays gray.
  }
  const double fine_error = MeanAbsoluteError(fine_back->pixels, ColourOf(image));
  const double coarse_error = MeanAbsoluteError(coarse_back->pixels, ColourOf(image));
  EXPECT_LT(fine_error, 1.5);
  EXPECT_GT(coarse_error, 2 * fine_error);
  EXPECT_LT(coarse->size(), fine->size());
}

INSTANTIATE_TEST_SUITE_P(Channels, JpegEncodeTest, testing::Values(1, 2, 3, 4));

class WebpEncodeTest : public testing::TestWithParam<int> {};  // channels

TEST_P(WebpEncodeTest, DecodesWithLibwebpToTheSameSizeAndNearbyPixels) {
  const int channels = GetParam();
  const RasterImage image = Gradient(64, 48, channels);
  auto webp = EncodeImage(image, ImageFormat::kWebp, 90);
  ASSERT_TRUE(webp.ok()) << webp.status();
  const DecodedWebp back = DecodeWebpForTest(*webp, /*rgba=*/false);
  EXPECT_EQ(back.width, 64);
  EXPECT_EQ(back.height, 48);
  EXPECT_LT(MeanAbsoluteError(back.pixels, AsRgb(image)), 3.0);
}

INSTANTIATE_TEST_SUITE_P(Channels, WebpEncodeTest, testing::Values(1, 2, 3, 4));

TEST(EncodeWebp, KeepsAlpha) {
  for (int channels : {2, 4}) {
    const RasterImage image = Gradient(32, 32, channels);
    auto webp = EncodeWebp(image, 75);
    ASSERT_TRUE(webp.ok()) << webp.status();
    const DecodedWebp back = DecodeWebpForTest(*webp, /*rgba=*/true);
    ASSERT_EQ(back.pixels.size(), 32u * 32 * 4);
    for (size_t i = 0; i < 32 * 32; ++i) {
      ASSERT_NEAR(back.pixels[i * 4 + 3], image.pixels[i * channels + channels - 1], 2) << channels << " " << i;
    }
  }
}

TEST(EncodeWebp, LowerQualityIsSmallerAndCoarser) {
  const RasterImage image = Gradient(64, 64, 3);
  auto fine = EncodeWebp(image, 95);
  auto coarse = EncodeWebp(image, 5);
  ASSERT_TRUE(fine.ok() && coarse.ok());
  EXPECT_LT(coarse->size(), fine->size());
  EXPECT_GT(MeanAbsoluteError(DecodeWebpForTest(*coarse, false).pixels, image.pixels),
            MeanAbsoluteError(DecodeWebpForTest(*fine, false).pixels, image.pixels));
}

// The point of offering lossy formats: on a smooth 64x64 RGB image, measured with Debian 12's
// libwebp 1.2.4 and libjpeg-turbo 2.1.5: PNG 4924 bytes, JPEG q75 1196 (0.24), WebP q75 498
// (0.10). The bounds leave room for other library versions.
TEST(EncodeImage, LossyFormatsAreMuchSmallerThanPngOnASmoothImage) {
  const RasterImage image = SmoothScene(64, 64);
  auto png = EncodeImage(image, ImageFormat::kPng, 75);
  auto jpeg = EncodeImage(image, ImageFormat::kJpeg, 75);
  auto webp = EncodeImage(image, ImageFormat::kWebp, 75);
  ASSERT_TRUE(png.ok() && jpeg.ok() && webp.ok());
  const double png_size = static_cast<double>(png->size());
  EXPECT_LT(static_cast<double>(webp->size()), 0.3 * png_size) << webp->size() << " vs PNG " << png->size();
  EXPECT_LT(static_cast<double>(jpeg->size()), 0.6 * png_size) << jpeg->size() << " vs PNG " << png->size();
  EXPECT_LT(webp->size(), jpeg->size());
  // And still the same picture.
  EXPECT_LT(MeanAbsoluteError(DecodeWebpForTest(*webp, false).pixels, image.pixels), 6.0);
}

}  // namespace
}  // namespace imagegen
