#include "client/cli.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace imagegen::client {
namespace {

absl::Status BadSize(absl::string_view text) {
  return absl::InvalidArgumentError(absl::StrCat(
      "--size \"", text, "\" is not WIDTHxHEIGHT (for example 512x512) or a single side"));
}

}  // namespace

absl::StatusOr<ImageSize> ParseImageSize(absl::string_view text) {
  if (text.empty()) return ImageSize{};
  std::vector<absl::string_view> parts = absl::StrSplit(text, absl::ByAnyChar("xX"));
  if (parts.size() > 2) return BadSize(text);
  ImageSize size;
  if (!absl::SimpleAtoi(parts[0], &size.width)) return BadSize(text);
  size.height = size.width;
  if (parts.size() == 2 && !absl::SimpleAtoi(parts[1], &size.height)) return BadSize(text);
  // Zero would silently mean "the model's default" to the server; say so instead.
  if (size.width == 0 || size.height == 0) return BadSize(text);
  return size;
}

std::string FileExtension(imagegen::v1::ImageFormat format) {
  switch (format) {
    case imagegen::v1::IMAGE_FORMAT_JPEG:
      return ".jpg";
    case imagegen::v1::IMAGE_FORMAT_WEBP:
      return ".webp";
    default:
      return ".png";
  }
}

std::string FormatName(imagegen::v1::ImageFormat format) {
  switch (format) {
    case imagegen::v1::IMAGE_FORMAT_JPEG:
      return "JPEG";
    case imagegen::v1::IMAGE_FORMAT_WEBP:
      return "WebP";
    default:
      return "PNG";
  }
}

bool ExtensionNamesFormat(absl::string_view extension, imagegen::v1::ImageFormat format) {
  const std::string lower = absl::AsciiStrToLower(extension);
  switch (format) {
    case imagegen::v1::IMAGE_FORMAT_JPEG:
      return lower == ".jpg" || lower == ".jpeg";
    case imagegen::v1::IMAGE_FORMAT_WEBP:
      return lower == ".webp";
    default:
      return lower == ".png";
  }
}

absl::StatusOr<imagegen::v1::ImageFormat> OutputFormatFromOut(absl::string_view out,
                                                             bool out_is_directory) {
  if (out_is_directory) return imagegen::v1::IMAGE_FORMAT_PNG;
  const std::string extension = std::filesystem::path(std::string(out)).extension().string();
  if (extension.empty()) return imagegen::v1::IMAGE_FORMAT_PNG;
  for (const imagegen::v1::ImageFormat format :
       {imagegen::v1::IMAGE_FORMAT_PNG, imagegen::v1::IMAGE_FORMAT_JPEG,
        imagegen::v1::IMAGE_FORMAT_WEBP}) {
    if (ExtensionNamesFormat(extension, format)) return format;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--out \"", out, "\": unknown extension \"", extension,
                   "\"; allowed: .png, .jpg or .jpeg, .webp (none, or a directory: PNG)"));
}

absl::StatusOr<imagegen::v1::ImageFormat> ParsePreviewFormat(absl::string_view text) {
  const std::string lower = absl::AsciiStrToLower(text);
  if (lower == "png") return imagegen::v1::IMAGE_FORMAT_PNG;
  if (lower == "jpeg" || lower == "jpg") return imagegen::v1::IMAGE_FORMAT_JPEG;
  if (lower == "webp") return imagegen::v1::IMAGE_FORMAT_WEBP;
  return absl::InvalidArgumentError(
      absl::StrCat("--preview_format \"", text,
                   "\" is not a preview format; allowed: png, jpeg, webp"));
}

absl::StatusOr<uint32_t> ParseQuality(int64_t value) {
  if (value < 0 || value > 100) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--quality ", value, " is out of range; allowed: 1..100, or 0 for the server's default"));
  }
  return static_cast<uint32_t>(value);
}

OutputNamer::OutputNamer(std::string out, bool out_is_directory)
    : out_(std::move(out)), out_is_directory_(out_is_directory) {}

std::string OutputNamer::PathFor(uint64_t seed, int num_images,
                                 imagegen::v1::ImageFormat format) const {
  namespace fs = std::filesystem;
  if (out_is_directory_) {
    return (fs::path(out_) / absl::StrCat(seed, FileExtension(format))).string();
  }
  const fs::path path(out_);
  const std::string given = path.extension().string();
  const std::string extension = ExtensionNamesFormat(given, format) ? given : FileExtension(format);
  std::string stem = path.stem().string();
  if (num_images > 1) absl::StrAppend(&stem, "-", seed);
  return (path.parent_path() / absl::StrCat(stem, extension)).string();
}

std::string PreviewPath(absl::string_view dir, uint32_t step, uint32_t index,
                        imagegen::v1::ImageFormat format) {
  const std::string name =
      absl::StrFormat("step-%04d-image-%d%s", step, index, FileExtension(format));
  return (std::filesystem::path(std::string(dir)) / name).string();
}

std::string FormatSeconds(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  if (seconds < 10) return absl::StrFormat("%.3f s", seconds);
  if (seconds < 100) return absl::StrFormat("%.1f s", seconds);
  const int64_t whole = static_cast<int64_t>(std::llround(seconds));
  if (whole < 3600) return absl::StrFormat("%d:%02d", whole / 60, whole % 60);
  return absl::StrFormat("%d:%02d:%02d", whole / 3600, whole / 60 % 60, whole % 60);
}

std::string FormatModelsTable(const imagegen::v1::ListModelsResponse& response) {
  std::vector<std::vector<std::string>> rows = {
      {"", "NAME", "SIZE", "SAMPLER", "STEPS", "GUIDANCE", "MAX SIDE/IMAGES/STEPS", "SAMPLERS", "DESCRIPTION"}};
  for (const imagegen::v1::ModelInfo& model : response.models()) {
    // A server from before ModelInfo carried its limits sends zeros: "-".
    const std::string limits = model.max_image_side() == 0 ? "-"
                                                            : absl::StrCat(model.max_image_side(), "/", model.max_images(),
                                                                           "/", model.max_steps());
    rows.push_back({model.is_default() ? "*" : "", model.name(),
                    absl::StrCat(model.default_width(), "x", model.default_height()),
                    model.default_sampler(), absl::StrCat(model.default_steps()),
                    absl::StrFormat("%g", model.default_guidance_scale()), limits,
                    absl::StrJoin(model.samplers(), ","), model.description()});
  }
  std::vector<size_t> widths(rows[0].size(), 0);
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  std::string table;
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      // The last column is not padded: descriptions are long and trailing blanks help no one.
      const bool last = i + 1 == row.size();
      absl::StrAppend(&line, last ? row[i] : absl::StrFormat("%-*s  ", widths[i], row[i]));
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    absl::StrAppend(&table, line, "\n");
  }
  if (response.models().empty()) absl::StrAppend(&table, "(no models loaded)\n");
  return table;
}

int ExitCode(const absl::Status& status) { return static_cast<int>(status.code()); }

absl::StatusOr<std::string> ParseBearerToken(absl::string_view contents, absl::string_view source) {
  for (absl::string_view line : absl::StrSplit(contents, '\n')) {
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || absl::StartsWith(line, "#")) continue;
    for (const char c : line) {
      if (c <= 0x20 || c >= 0x7f) {
        return absl::InvalidArgumentError(
            absl::StrCat(source, ": the token holds a character a header cannot carry; allowed: "
                                 "printable ASCII without spaces"));
      }
    }
    return std::string(line);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      source, " holds no token; allowed: the token on a line of its own ('#' lines are skipped)"));
}

std::string JsonString(absl::string_view text) {
  std::string out = "\"";
  for (const char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          absl::StrAppend(&out, absl::StrFormat("\\u%04x", static_cast<unsigned char>(c)));
        } else {
          out += c;
        }
    }
  }
  out += '"';
  return out;
}

std::string JsonNumber(double value) {
  if (!std::isfinite(value)) return "null";
  return absl::StrFormat("%.9g", value);
}

std::vector<uint8_t> ScaleNearestRgba(const std::vector<uint8_t>& rgba, uint32_t width,
                                      uint32_t height, uint32_t out_width, uint32_t out_height) {
  std::vector<uint8_t> out(static_cast<size_t>(out_width) * out_height * 4);
  if (width == 0 || height == 0) return out;
  for (uint32_t y = 0; y < out_height; ++y) {
    const uint64_t sy = static_cast<uint64_t>(y) * height / out_height;
    for (uint32_t x = 0; x < out_width; ++x) {
      const uint64_t sx = static_cast<uint64_t>(x) * width / out_width;
      const size_t from = (sy * width + sx) * 4;
      const size_t to = (static_cast<size_t>(y) * out_width + x) * 4;
      for (int k = 0; k < 4; ++k) out[to + k] = rgba[from + k];
    }
  }
  return out;
}

}  // namespace imagegen::client
