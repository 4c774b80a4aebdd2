#include "core/model/tokenizer.h"

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace imagegen {
namespace {

bool IsWordChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
}

}  // namespace

absl::StatusOr<std::unique_ptr<WordTokenizer>> WordTokenizer::Create(absl::string_view vocab_text,
                                                                      int max_length,
                                                                      absl::string_view source) {
  if (max_length < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": max_length is ", max_length, "; needs at least 2 (<bos>, <eos>)"));
  }
  std::vector<absl::string_view> lines = absl::StrSplit(vocab_text, '\n');
  while (!lines.empty() && absl::StripAsciiWhitespace(lines.back()).empty()) lines.pop_back();
  static constexpr const char* kSpecial[] = {"<pad>", "<bos>", "<eos>"};
  std::unordered_map<std::string, int64_t> ids;
  for (size_t i = 0; i < lines.size(); ++i) {
    std::string token(absl::StripAsciiWhitespace(lines[i]));
    if (i < 3 && token != kSpecial[i]) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": line ", i + 1, " is \"", token,
                                                     "\"; expected ", kSpecial[i]));
    }
    if (token.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": line ", i + 1, " is empty"));
    }
    if (!ids.emplace(token, static_cast<int64_t>(i)).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": line ", i + 1, " repeats the token \"", token, "\""));
    }
  }
  if (ids.size() < 3) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": needs <pad>, <bos>, <eos> and words"));
  }
  return std::unique_ptr<WordTokenizer>(new WordTokenizer(std::move(ids), max_length));
}

std::vector<int64_t> WordTokenizer::Encode(absl::string_view text) const {
  std::vector<int64_t> out;
  out.reserve(max_length_);
  out.push_back(kBosId);
  std::string word;
  auto flush = [&] {
    if (word.empty()) return;
    auto it = ids_.find(word);
    if (it != ids_.end() && it->second > kEosId && static_cast<int>(out.size()) < max_length_ - 1) {
      out.push_back(it->second);
    }
    word.clear();
  };
  for (char c : text) {
    c = absl::ascii_tolower(static_cast<unsigned char>(c));
    if (IsWordChar(c)) {
      word.push_back(c);
    } else {
      flush();
    }
  }
  flush();
  out.push_back(kEosId);
  out.resize(max_length_, kPadId);
  return out;
}

}  // namespace imagegen
