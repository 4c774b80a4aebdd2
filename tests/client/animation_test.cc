#include "client/animation.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include <jpeglib.h>
#include <png.h>
#include <webp/encode.h>

namespace imagegen::client {
namespace {

// A 4x2 image: the left half red, the right half blue, opaque.
RgbaImage TwoColours() {
  RgbaImage image;
  image.width = 4;
  image.height = 2;
  for (uint32_t y = 0; y < image.height; ++y) {
    for (uint32_t x = 0; x < image.width; ++x) {
      const bool left = x < image.width / 2;
      image.pixels.insert(image.pixels.end(), {uint8_t(left ? 255 : 0), 0,
                                               uint8_t(left ? 0 : 255), 255});
    }
  }
  return image;
}

std::string EncodePng(const RgbaImage& image) {
  png_image png{};
  png.version = PNG_IMAGE_VERSION;
  png.width = image.width;
  png.height = image.height;
  png.format = PNG_FORMAT_RGBA;
  png_alloc_size_t size = 0;
  EXPECT_TRUE(png_image_write_to_memory(&png, nullptr, &size, 0, image.pixels.data(), 0, nullptr));
  std::string bytes(size, '\0');
  EXPECT_TRUE(png_image_write_to_memory(&png, bytes.data(), &size, 0, image.pixels.data(), 0,
                                        nullptr));
  bytes.resize(size);
  return bytes;
}

std::string EncodeWebpLossless(const RgbaImage& image) {
  uint8_t* out = nullptr;
  const size_t size = WebPEncodeLosslessRGBA(image.pixels.data(), static_cast<int>(image.width),
                                             static_cast<int>(image.height),
                                             static_cast<int>(image.width * 4), &out);
  std::string bytes(reinterpret_cast<const char*>(out), size);
  WebPFree(out);
  return bytes;
}

// The best JPEG quality, 4:4:4, so that flat colours come back within a few levels.
std::string EncodeJpeg(const RgbaImage& image) {
  jpeg_compress_struct cinfo;
  jpeg_error_mgr err;
  cinfo.err = jpeg_std_error(&err);
  jpeg_create_compress(&cinfo);
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&cinfo, &buffer, &size);
  cinfo.image_width = image.width;
  cinfo.image_height = image.height;
  cinfo.input_components = 4;
  cinfo.in_color_space = JCS_EXT_RGBA;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, 100, TRUE);
  for (int c = 0; c < cinfo.num_components; ++c) {
    cinfo.comp_info[c].h_samp_factor = 1;
    cinfo.comp_info[c].v_samp_factor = 1;
  }
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    const size_t offset = static_cast<size_t>(cinfo.next_scanline) * image.width * 4;
    JSAMPROW row = const_cast<JSAMPROW>(image.pixels.data() + offset);
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  std::string bytes(reinterpret_cast<const char*>(buffer), size);
  std::free(buffer);
  return bytes;
}

void ExpectNear(const RgbaImage& got, const RgbaImage& want, int tolerance) {
  ASSERT_EQ(got.width, want.width);
  ASSERT_EQ(got.height, want.height);
  ASSERT_EQ(got.pixels.size(), want.pixels.size());
  for (size_t i = 0; i < want.pixels.size(); ++i) {
    EXPECT_NEAR(got.pixels[i], want.pixels[i], tolerance) << "byte " << i;
  }
}

TEST(DecodeImageToRgba, DecodesPng) {
  absl::StatusOr<RgbaImage> image = DecodeImageToRgba(EncodePng(TwoColours()));
  ASSERT_TRUE(image.ok()) << image.status();
  ExpectNear(*image, TwoColours(), 0);
}

TEST(DecodeImageToRgba, DecodesWebp) {
  absl::StatusOr<RgbaImage> image = DecodeImageToRgba(EncodeWebpLossless(TwoColours()));
  ASSERT_TRUE(image.ok()) << image.status();
  ExpectNear(*image, TwoColours(), 0);
}

TEST(DecodeImageToRgba, DecodesJpegWithOpaqueAlpha) {
  absl::StatusOr<RgbaImage> image = DecodeImageToRgba(EncodeJpeg(TwoColours()));
  ASSERT_TRUE(image.ok()) << image.status();
  ExpectNear(*image, TwoColours(), 8);  // lossy, even at quality 100
}

TEST(DecodeImageToRgba, RefusesWhatItCannotRead) {
  EXPECT_EQ(DecodeImageToRgba("GIF89a...").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodeImageToRgba("").status().code(), absl::StatusCode::kInvalidArgument);
  // The right signature and a broken body: the decoder's error, not a crash.
  std::string jpeg = EncodeJpeg(TwoColours());
  jpeg.resize(20);
  const absl::Status status = DecodeImageToRgba(jpeg).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("JPEG"), absl::string_view::npos) << status;
  std::string webp = EncodeWebpLossless(TwoColours());
  webp.resize(16);
  EXPECT_EQ(DecodeImageToRgba(webp).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(AnimationBuilder, WritesAnAnimatedWebpFromFramesOfEveryFormat) {
  AnimationBuilder animation;
  for (const std::string& bytes :
       {EncodePng(TwoColours()), EncodeJpeg(TwoColours()), EncodeWebpLossless(TwoColours())}) {
    absl::StatusOr<RgbaImage> frame = DecodeImageToRgba(bytes);
    ASSERT_TRUE(frame.ok()) << frame.status();
    animation.Add(*std::move(frame));
  }
  const std::string path = ::testing::TempDir() + "animation_test.webp";
  ASSERT_TRUE(animation.Write(path, 100, 1000).ok());
  std::ifstream file(path, std::ios::binary);
  const std::string written(std::istreambuf_iterator<char>(file), {});
  ASSERT_GE(written.size(), 16u);
  EXPECT_EQ(written.substr(0, 4), "RIFF");
  EXPECT_EQ(written.substr(8, 4), "WEBP");
  EXPECT_NE(written.find("ANIM"), std::string::npos);
  std::remove(path.c_str());
}

}  // namespace
}  // namespace imagegen::client
