#include "server/auth.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
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

bool IsPrincipalName(absl::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    if (!absl::ascii_isalnum(c) && c != '.' && c != '_' && c != '-') return false;
  }
  return true;
}

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

absl::StatusOr<std::unique_ptr<BearerTokenChecker>> BearerTokenChecker::FromFile(const std::string& path,
                                                                                int default_max_priority) {
  absl::StatusOr<std::string> contents = ReadFlagFile(kFlag, path);
  if (!contents.ok()) return contents.status();
  return FromContents(*contents, path, default_max_priority);
}

absl::StatusOr<std::unique_ptr<BearerTokenChecker>> BearerTokenChecker::FromContents(absl::string_view contents,
                                                                                    absl::string_view source,
                                                                                    int default_max_priority) {
  std::vector<Entry> tokens;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(contents, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || absl::StartsWith(line, "#")) continue;
    // The line number, never the line: the error ends up in logs.
    auto bad = [&](absl::string_view what) {
      return absl::InvalidArgumentError(absl::StrCat(
          kFlag, " ", source, ": line ", line_number, " ", what,
          "; allowed: one token per line, as TOKEN or NAME:TOKEN, optionally followed by a space and "
          "max_priority=N (N from ", kMinPriority, " to ", kMaxPriority, "); a token is printable ASCII without "
          "spaces, a name 1 to 64 of A-Z a-z 0-9 . _ -"));
    };
    std::vector<absl::string_view> fields = absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    Entry entry;
    entry.principal.max_priority = default_max_priority;
    entry.principal.from_tokens_file = true;
    if (fields.size() > 2) return bad("has more than two fields");
    if (fields.size() == 2) {
      int value = 0;
      if (!absl::ConsumePrefix(&fields[1], "max_priority=") || !absl::SimpleAtoi(fields[1], &value) ||
          value < kMinPriority || value > kMaxPriority) {
        return bad("has a second field that is not max_priority=N");
      }
      entry.principal.max_priority = value;
    }
    for (char c : fields[0]) {
      if (!IsTokenChar(c)) return bad("is not a valid token");
    }
    const size_t colon = fields[0].find(':');
    const absl::string_view name = colon == absl::string_view::npos ? "" : fields[0].substr(0, colon);
    if (!name.empty() && colon + 1 < fields[0].size() && IsPrincipalName(name)) {
      entry.principal.name = std::string(name);
      entry.token = std::string(fields[0].substr(colon + 1));
    } else {
      entry.principal.name = absl::StrCat("token-L", line_number);
      entry.token = std::string(fields[0]);
    }
    for (const Entry& earlier : tokens) {
      if (earlier.token == entry.token) return bad("repeats the token of an earlier line");
    }
    tokens.push_back(std::move(entry));
  }
  if (tokens.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        kFlag, " ", source,
        " holds no token; allowed: one token per line, blank lines and lines starting with '#' skipped"));
  }
  return std::unique_ptr<BearerTokenChecker>(new BearerTokenChecker(std::move(tokens)));
}

std::vector<std::string> BearerTokenChecker::principal_names() const {
  std::vector<std::string> names;
  for (const Entry& e : tokens_) {
    if (std::find(names.begin(), names.end(), e.principal.name) == names.end()) names.push_back(e.principal.name);
  }
  return names;
}

absl::StatusOr<Principal> BearerTokenChecker::Check(
    const std::multimap<grpc::string_ref, grpc::string_ref>& metadata) const {
  // gRPC lower-cases metadata keys, so "Authorization" arrives as "authorization".
  const auto [begin, end] = metadata.equal_range(grpc::string_ref("authorization"));
  for (auto it = begin; it != end; ++it) {
    absl::string_view value = absl::StripAsciiWhitespace(absl::string_view(it->second.data(), it->second.size()));
    const size_t space = value.find_first_of(" \t");
    if (space == absl::string_view::npos || !absl::EqualsIgnoreCase(value.substr(0, space), "bearer")) continue;
    const absl::string_view presented = absl::StripLeadingAsciiWhitespace(value.substr(space));
    if (presented.empty()) continue;
    // Every token is compared, with no short cut once one matches: the time depends only on the
    // presented length and the number of tokens. The match's index is selected by masks.
    volatile unsigned char matched = 0;
    size_t index = 0;
    for (size_t i = 0; i < tokens_.size(); ++i) {
      const unsigned char hit = static_cast<unsigned char>(Difference(presented, tokens_[i].token) == 0);
      matched = matched | hit;
      index |= i & (size_t{0} - hit);  // tokens are distinct (FromContents): at most one hit
    }
    if (matched != 0) return tokens_[index].principal;
    return absl::UnauthenticatedError("the bearer token is not valid");
  }
  return Missing();
}

}  // namespace imagegen
