#include "client/cli.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <string>

#include "absl/time/time.h"
#include "client/progress.h"

namespace imagegen::client {
namespace {

using imagegen::v1::IMAGE_FORMAT_JPEG;
using imagegen::v1::IMAGE_FORMAT_PNG;
using imagegen::v1::IMAGE_FORMAT_UNSPECIFIED;
using imagegen::v1::IMAGE_FORMAT_WEBP;

TEST(ParseImageSize, AcceptsWidthByHeightAndSquare) {
  ASSERT_TRUE(ParseImageSize("512x768").ok());
  EXPECT_EQ(ParseImageSize("512x768")->width, 512u);
  EXPECT_EQ(ParseImageSize("512x768")->height, 768u);
  EXPECT_EQ(ParseImageSize("64")->height, 64u);
  EXPECT_EQ(ParseImageSize("")->width, 0u);  // the model's default
}

TEST(ParseImageSize, RejectsGarbageAndZero) {
  for (const char* text : {"12y", "x", "1x2x3", "-5x5", "0x8", "8x0", "ax8"}) {
    const absl::Status status = ParseImageSize(text).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_NE(status.message().find(text), absl::string_view::npos) << status;
  }
}

TEST(OutputNamer, OneImageUsesOutAsGiven) {
  EXPECT_EQ(OutputNamer("a/image.png", false).PathFor(7, 1, IMAGE_FORMAT_PNG), "a/image.png");
}

TEST(OutputNamer, SeveralImagesAddTheSeed) {
  const OutputNamer namer("a/image.png", false);
  EXPECT_EQ(namer.PathFor(7, 2, IMAGE_FORMAT_PNG), "a/image-7.png");
  EXPECT_EQ(namer.PathFor(8, 2, IMAGE_FORMAT_PNG), "a/image-8.png");
  EXPECT_EQ(OutputNamer("image", false).PathFor(7, 2, IMAGE_FORMAT_PNG), "image-7.png");
}

TEST(OutputNamer, DirectoryGetsSeedNames) {
  EXPECT_EQ(OutputNamer("out/", true).PathFor(42, 1, IMAGE_FORMAT_UNSPECIFIED), "out/42.png");
  EXPECT_EQ(OutputNamer("out", true).PathFor(42, 3, IMAGE_FORMAT_PNG), "out/42.png");
}

TEST(OutputNamer, AddsTheFormatsExtensionWhenOutHasNone) {
  EXPECT_EQ(OutputNamer("a/image", false).PathFor(7, 1, IMAGE_FORMAT_PNG), "a/image.png");
  EXPECT_EQ(OutputNamer("image", false).PathFor(7, 1, IMAGE_FORMAT_UNSPECIFIED), "image.png");
  EXPECT_EQ(OutputNamer("image", false).PathFor(7, 1, IMAGE_FORMAT_WEBP), "image.webp");
}

TEST(OutputNamer, KeepsAnExtensionThatNamesTheFormat) {
  EXPECT_EQ(OutputNamer("a/x.jpeg", false).PathFor(7, 1, IMAGE_FORMAT_JPEG), "a/x.jpeg");
  EXPECT_EQ(OutputNamer("a/x.JPG", false).PathFor(7, 1, IMAGE_FORMAT_JPEG), "a/x.JPG");
  EXPECT_EQ(OutputNamer("x.jpg", false).PathFor(7, 2, IMAGE_FORMAT_JPEG), "x-7.jpg");
  EXPECT_EQ(OutputNamer("x.webp", false).PathFor(9, 3, IMAGE_FORMAT_WEBP), "x-9.webp");
}

TEST(OutputNamer, ReplacesAnExtensionOfAnotherFormatWithTheOneSent) {
  // A server that does not know the format asked for sends PNG: the name says what it holds.
  EXPECT_EQ(OutputNamer("a/x.jpg", false).PathFor(7, 1, IMAGE_FORMAT_PNG), "a/x.png");
  EXPECT_EQ(OutputNamer("x.webp", false).PathFor(7, 2, IMAGE_FORMAT_PNG), "x-7.png");
  EXPECT_EQ(OutputNamer("x.png", false).PathFor(7, 1, IMAGE_FORMAT_JPEG), "x.jpg");
}

TEST(OutputNamer, DirectoryNamesFollowTheFormatSent) {
  EXPECT_EQ(OutputNamer("out/", true).PathFor(42, 2, IMAGE_FORMAT_WEBP), "out/42.webp");
  EXPECT_EQ(OutputNamer("out/", true).PathFor(42, 1, IMAGE_FORMAT_JPEG), "out/42.jpg");
}

TEST(OutputFormatFromOut, TheExtensionPicksTheFormatInAnyCase) {
  EXPECT_EQ(*OutputFormatFromOut("x.png", false), IMAGE_FORMAT_PNG);
  EXPECT_EQ(*OutputFormatFromOut("x.jpg", false), IMAGE_FORMAT_JPEG);
  EXPECT_EQ(*OutputFormatFromOut("dir/x.JPEG", false), IMAGE_FORMAT_JPEG);
  EXPECT_EQ(*OutputFormatFromOut("x.WebP", false), IMAGE_FORMAT_WEBP);
}

TEST(OutputFormatFromOut, NoExtensionOrADirectoryIsPng) {
  EXPECT_EQ(*OutputFormatFromOut("image", false), IMAGE_FORMAT_PNG);
  EXPECT_EQ(*OutputFormatFromOut("out/", true), IMAGE_FORMAT_PNG);
  // A directory's name is not an extension, whatever it looks like.
  EXPECT_EQ(*OutputFormatFromOut("frames.gif", true), IMAGE_FORMAT_PNG);
  EXPECT_EQ(*OutputFormatFromOut("", false), IMAGE_FORMAT_PNG);
}

TEST(OutputFormatFromOut, RefusesAnUnknownExtensionNamingItAndTheAllowedOnes) {
  const absl::Status status = OutputFormatFromOut("a/x.gif", false).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  for (const char* part : {"--out", "a/x.gif", "\".gif\"", ".png", ".jpg", ".jpeg", ".webp"}) {
    EXPECT_NE(status.message().find(part), absl::string_view::npos) << part << ": " << status;
  }
}

TEST(ParsePreviewFormat, AcceptsTheThreeFormats) {
  EXPECT_EQ(*ParsePreviewFormat("png"), IMAGE_FORMAT_PNG);
  EXPECT_EQ(*ParsePreviewFormat("jpeg"), IMAGE_FORMAT_JPEG);
  EXPECT_EQ(*ParsePreviewFormat("jpg"), IMAGE_FORMAT_JPEG);
  EXPECT_EQ(*ParsePreviewFormat("WEBP"), IMAGE_FORMAT_WEBP);
}

TEST(ParsePreviewFormat, RefusesOthersNamingTheFlag) {
  for (const char* text : {"", "gif", "png "}) {
    const absl::Status status = ParsePreviewFormat(text).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_NE(status.message().find("--preview_format"), absl::string_view::npos) << status;
    EXPECT_NE(status.message().find("png, jpeg, webp"), absl::string_view::npos) << status;
  }
}

TEST(ParseQuality, ZeroToOneHundred) {
  EXPECT_EQ(*ParseQuality(0), 0u);  // the server's default
  EXPECT_EQ(*ParseQuality(1), 1u);
  EXPECT_EQ(*ParseQuality(100), 100u);
  for (const int64_t bad : {-1, 101, 1000}) {
    const absl::Status status = ParseQuality(bad).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(status.message().find("--quality"), absl::string_view::npos) << status;
    EXPECT_NE(status.message().find(std::to_string(bad)), absl::string_view::npos) << status;
  }
}

TEST(ExtensionNamesFormat, KnowsTheUsualNames) {
  EXPECT_TRUE(ExtensionNamesFormat(".png", IMAGE_FORMAT_UNSPECIFIED));
  EXPECT_TRUE(ExtensionNamesFormat(".Jpeg", IMAGE_FORMAT_JPEG));
  EXPECT_FALSE(ExtensionNamesFormat(".jpg", IMAGE_FORMAT_WEBP));
  EXPECT_FALSE(ExtensionNamesFormat("", IMAGE_FORMAT_PNG));
  EXPECT_EQ(FormatName(IMAGE_FORMAT_WEBP), "WebP");
  EXPECT_EQ(FormatName(IMAGE_FORMAT_UNSPECIFIED), "PNG");
}

TEST(PreviewPath, PadsTheStepSoThatNamesSort) {
  EXPECT_EQ(PreviewPath("prev", 3, 1, IMAGE_FORMAT_PNG), "prev/step-0003-image-1.png");
}

TEST(PreviewPath, TakesTheExtensionOfThePreviewsFormat) {
  EXPECT_EQ(PreviewPath("prev", 12, 0, IMAGE_FORMAT_WEBP), "prev/step-0012-image-0.webp");
  EXPECT_EQ(PreviewPath("prev", 1, 2, IMAGE_FORMAT_JPEG), "prev/step-0001-image-2.jpg");
}

TEST(FormatSeconds, ShortensWithSize) {
  EXPECT_EQ(FormatSeconds(0.1234), "0.123 s");
  EXPECT_EQ(FormatSeconds(12.34), "12.3 s");
  EXPECT_EQ(FormatSeconds(125), "2:05");
  EXPECT_EQ(FormatSeconds(3725), "1:02:05");
  EXPECT_EQ(FormatSeconds(-1), "?");
}

TEST(FormatModelsTable, MarksTheDefaultAndAlignsColumns) {
  imagegen::v1::ListModelsResponse response;
  auto* a = response.add_models();
  a->set_name("fashion");
  a->set_default_width(32);
  a->set_default_height(32);
  a->set_default_sampler("ddim");
  a->set_default_steps(50);
  a->set_default_guidance_scale(3);
  a->add_samplers("ddpm");
  a->add_samplers("ddim");
  a->set_is_default(true);
  a->set_max_image_side(256);
  a->set_max_images(8);
  a->set_max_steps(200);
  auto* b = response.add_models();
  b->set_name("tiny-random");
  b->set_default_width(16);
  b->set_default_height(16);
  EXPECT_EQ(FormatModelsTable(response),
            "   NAME         SIZE   SAMPLER  STEPS  GUIDANCE  MAX SIDE/IMAGES/STEPS  SAMPLERS   DESCRIPTION\n"
            "*  fashion      32x32  ddim     50     3         256/8/200              ddpm,ddim\n"
            "   tiny-random  16x16           0      0         -\n");
}

TEST(FormatModelsTable, SaysWhenThereAreNoModels) {
  EXPECT_NE(FormatModelsTable({}).find("no models"), std::string::npos);
}

TEST(ParseBearerToken, TakesTheFirstTokenLineLikeTheServersFile) {
  auto token = ParseBearerToken("# my token\n\n  s3cr3t-Token_1  \r\nsecond\n", "t.txt");
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_EQ(*token, "s3cr3t-Token_1");
}

TEST(ParseBearerToken, RefusesNoTokenOrABadOneWithoutEchoingIt) {
  auto none = ParseBearerToken("# only a comment\n\n", "t.txt");
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(none.status().message().find("t.txt"), std::string::npos) << none.status();
  auto spaced = ParseBearerToken("two words-secret\n", "t.txt");
  ASSERT_FALSE(spaced.ok());
  EXPECT_EQ(spaced.status().message().find("words-secret"), std::string::npos) << spaced.status();
}

TEST(ExitCode, IsTheStatusCodeNumber) {
  EXPECT_EQ(ExitCode(absl::OkStatus()), 0);
  EXPECT_EQ(ExitCode(absl::CancelledError("")), 1);
  EXPECT_EQ(ExitCode(absl::UnavailableError("")), 14);
}

// Reads back what a ProgressLine wrote to a temporary file.
class ProgressLineTest : public ::testing::Test {
 protected:
  void SetUp() override { file_ = std::tmpfile(); }
  void TearDown() override { std::fclose(file_); }
  std::string Written() {
    std::fflush(file_);
    std::rewind(file_);
    std::string text;
    for (int c; (c = std::fgetc(file_)) != EOF;) text.push_back(static_cast<char>(c));
    return text;
  }
  std::FILE* file_ = nullptr;
  const absl::Time t0_ = absl::FromUnixSeconds(1000);
};

TEST_F(ProgressLineTest, NotInteractiveWritesOneLineAtEachEnd) {
  ProgressLine progress(file_, /*interactive=*/false);
  progress.Accepted("j1", 2, t0_);
  for (uint32_t step = 1; step <= 4; ++step) progress.Step(step, 4, t0_ + absl::Seconds(step));
  progress.Finish(t0_ + absl::Seconds(4));
  EXPECT_EQ(Written(), "job j1 accepted (queue position 2)\njob j1: 4/4 steps in 3.000 s\n");
}

TEST_F(ProgressLineTest, InteractiveRedrawsOneLineWithRateAndEta) {
  ProgressLine progress(file_, /*interactive=*/true);
  progress.Accepted("j1", 0, t0_);
  progress.Step(1, 4, t0_ + absl::Seconds(1));
  progress.Step(2, 4, t0_ + absl::Seconds(1.5));  // 2 steps/s from step 1
  progress.Finish(t0_ + absl::Seconds(2));
  const std::string text = Written();
  EXPECT_NE(text.find("\rjob j1: queued (position 0)"), std::string::npos) << text;
  EXPECT_NE(text.find("\rjob j1: step 2/4 [############............] 2.0 steps/s ETA 1.0 s"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.back(), '\n');
  EXPECT_EQ(text.find('\n'), text.size() - 1);  // one line, ended once
}

TEST_F(ProgressLineTest, InteractiveSkipsRedrawsFasterThanTheEye) {
  ProgressLine progress(file_, /*interactive=*/true);
  progress.Accepted("j1", 0, t0_);
  progress.Step(1, 100, t0_ + absl::Seconds(1));
  progress.Step(2, 100, t0_ + absl::Seconds(1.001));  // 1 ms later: not drawn
  progress.Step(100, 100, t0_ + absl::Seconds(1.002));  // the last step is always drawn
  const std::string text = Written();
  EXPECT_EQ(text.find("step 2/100"), std::string::npos) << text;
  EXPECT_NE(text.find("step 100/100"), std::string::npos) << text;
}

TEST(JsonString, QuotesAndEscapes) {
  EXPECT_EQ(JsonString(""), "\"\"");
  EXPECT_EQ(JsonString("a \"b\" c\\d"), "\"a \\\"b\\\" c\\\\d\"");
  EXPECT_EQ(JsonString("x\ny\tz\r"), "\"x\\ny\\tz\\r\"");
  EXPECT_EQ(JsonString(std::string("\x01\x1f", 2)), "\"\\u0001\\u001f\"");
  EXPECT_EQ(JsonString("caf\xc3\xa9"), "\"caf\xc3\xa9\"");  // UTF-8 passes through
}

TEST(JsonNumber, FiniteAndNot) {
  EXPECT_EQ(JsonNumber(7.5), "7.5");
  EXPECT_EQ(JsonNumber(0), "0");
  EXPECT_EQ(JsonNumber(std::nan("")), "null");
  EXPECT_EQ(JsonNumber(HUGE_VAL), "null");
}

TEST(ScaleNearestRgba, UpscalesAndKeepsSameSize) {
  // 2x1: red, blue -> 4x2.
  const std::vector<uint8_t> in = {255, 0, 0, 255, 0, 0, 255, 255};
  const std::vector<uint8_t> out = ScaleNearestRgba(in, 2, 1, 4, 2);
  ASSERT_EQ(out.size(), 4u * 2u * 4u);
  for (int y = 0; y < 2; ++y) {
    for (int x = 0; x < 4; ++x) {
      const size_t p = (y * 4 + x) * 4;
      EXPECT_EQ(out[p], x < 2 ? 255 : 0) << x << "," << y;
      EXPECT_EQ(out[p + 2], x < 2 ? 0 : 255) << x << "," << y;
      EXPECT_EQ(out[p + 3], 255);
    }
  }
  EXPECT_EQ(ScaleNearestRgba(in, 2, 1, 2, 1), in);
}

}  // namespace
}  // namespace imagegen::client
