#include "server/auth.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace imagegen {
namespace {

constexpr char kFlag[] = "--auth_tokens_file";

absl::Status Missing() {
  return absl::UnauthenticatedError("missing bearer token: send the metadata authorization: Bearer <token>");
}

// What an HTTP/2 header value carries unchanged, minus spaces (which would be trimmed away).
bool IsTokenChar(char c) { return c > 0x20 && c < 0x7f; }

// Zero when `presented` equals `token` (non-empty). Reads every byte of `presented` whatever the
// contents, with no exit at the first difference, so the time does not tell how much of a guess
// was right; the token is read cyclically so that no branch depends on its length either.
unsigned char Difference(absl::string_view presented, absl::string_view token) {
  unsigned char diff = static_cast<unsigned char>(presented.size() != token.size());
  for (size_t i = 0; i < presented.size(); ++i) {
    diff |= static_cast<unsigned char>(presented[i] ^ token[i % token.size()]);
  }
  return diff;
}

}  // namespace

absl::StatusOr<std::string> ReadFlagFile(absl::string_view flag, const std::string& path) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) {
    return absl::NotFoundError(absl::StrCat(flag, " ", path, ": cannot read: ", std::strerror(errno)));
  }
  std::string contents;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), file)) > 0) contents.append(buffer, n);
  const bool failed = std::ferror(file) != 0;
  const int error = errno;
  std::fclose(file);
  if (failed) return absl::NotFoundError(absl::StrCat(flag, " ", path, ": cannot read: ", std::strerror(error)));
  return contents;
}

absl::StatusOr<std::unique_ptr<BearerTokenChecker>> BearerTokenChecker::FromFile(const std::string& path) {
  absl::StatusOr<std::string> contents = ReadFlagFile(kFlag, path);
  if (!contents.ok()) return contents.status();
  return FromContents(*contents, path);
}

absl::StatusOr<std::unique_ptr<BearerTokenChecker>> BearerTokenChecker::FromContents(absl::string_view contents,
                                                                                    absl::string_view source) {
  std::vector<std::string> tokens;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(contents, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || absl::StartsWith(line, "#")) continue;
    for (char c : line) {
      // The line number, never the line: the error ends up in logs.
      if (!IsTokenChar(c)) {
        return absl::InvalidArgumentError(absl::StrCat(
            kFlag, " ", source, ": line ", line_number,
            " is not a valid token; allowed: printable ASCII without spaces, one token per line"));
      }
    }
    tokens.emplace_back(line);
  }
  if (tokens.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        kFlag, " ", source,
        " holds no token; allowed: one token per line, blank lines and lines starting with '#' skipped"));
  }
  return std::unique_ptr<BearerTokenChecker>(new BearerTokenChecker(std::move(tokens)));
}

absl::Status BearerTokenChecker::Check(const std::multimap<grpc::string_ref, grpc::string_ref>& metadata) const {
  // gRPC lower-cases metadata keys, so "Authorization" arrives as "authorization".
  const auto [begin, end] = metadata.equal_range(grpc::string_ref("authorization"));
  for (auto it = begin; it != end; ++it) {
    absl::string_view value = absl::StripAsciiWhitespace(absl::string_view(it->second.data(), it->second.size()));
    const size_t space = value.find_first_of(" \t");
    if (space == absl::string_view::npos || !absl::EqualsIgnoreCase(value.substr(0, space), "bearer")) continue;
    const absl::string_view presented = absl::StripLeadingAsciiWhitespace(value.substr(space));
    if (presented.empty()) continue;
    // Every token is compared, with no short cut once one matches: the time depends only on the
    // presented length and the number of tokens.
    volatile unsigned char matched = 0;
    for (const std::string& token : tokens_) {
      matched = matched | static_cast<unsigned char>(Difference(presented, token) == 0);
    }
    if (matched != 0) return absl::OkStatus();
    return absl::UnauthenticatedError("the bearer token is not valid");
  }
  return Missing();
}

}  // namespace imagegen
