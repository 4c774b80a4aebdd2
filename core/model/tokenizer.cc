#include "core/model/tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/model/bundle_dirs.h"
#include "core/model/clip_tokenizer.h"
#include "core/model/model_config.h"

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
      return absl::InvalidArgumentError(absl::StrCat(source, ": line ", i + 1, " is not ", kSpecial[i],
                                                     "; expected <pad>, <bos>, <eos> on lines 1 to 3"));
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

TokenizedText WordTokenizer::Tokenize(absl::string_view text) const {
  TokenizedText out;
  out.ids.reserve(max_length_);
  out.ids.push_back(kBosId);
  std::string word;
  auto flush = [&] {
    if (word.empty()) return;
    auto it = ids_.find(word);
    if (it == ids_.end() || it->second <= kEosId) {
      if (std::find(out.dropped.begin(), out.dropped.end(), word) == out.dropped.end()) out.dropped.push_back(word);
    } else if (static_cast<int>(out.ids.size()) < max_length_ - 1) {
      out.ids.push_back(it->second);
    } else {
      ++out.truncated_tokens;
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
  out.ids.push_back(kEosId);
  out.ids.resize(max_length_, kPadId);
  return out;
}

namespace {

absl::StatusOr<std::unique_ptr<Tokenizer>> CreateWordTokenizer(const ModelConfig& config, const std::string& dir) {
  const std::filesystem::path vocab = std::filesystem::path(dir) / config.vocab_file;
  auto text = ReadBundleFile(vocab);
  if (!text.ok()) return text.status();
  auto tokenizer = WordTokenizer::Create(*text, config.max_length, vocab.string());
  if (!tokenizer.ok()) return tokenizer.status();
  return std::unique_ptr<Tokenizer>(*std::move(tokenizer));
}

// The tokenizer files (tokenizer.json, or vocab.json + merges.txt, and the special-token maps)
// sit in the bundle folder itself.
absl::StatusOr<std::unique_ptr<Tokenizer>> CreateClipTokenizer(const ModelConfig& config, const std::string& dir) {
  auto tokenizer = ClipBpeTokenizer::Load(dir, config.max_length);
  if (!tokenizer.ok()) return tokenizer.status();
  return std::unique_ptr<Tokenizer>(*std::move(tokenizer));
}

struct TokenizerType {
  const char* name;
  absl::StatusOr<std::unique_ptr<Tokenizer>> (*create)(const ModelConfig& config, const std::string& dir);
};

constexpr TokenizerType kTokenizerTypes[] = {
    {"word", &CreateWordTokenizer},
    {"clip_bpe", &CreateClipTokenizer},
};

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> CreateTokenizer(const ModelConfig& config, const std::string& dir) {
  std::vector<std::string> names;
  for (const TokenizerType& type : kTokenizerTypes) {
    if (config.tokenizer_type == type.name) return type.create(config, dir);
    names.push_back(type.name);
  }
  return absl::InvalidArgumentError(absl::StrCat((std::filesystem::path(dir) / "model.json").string(),
                                                 ": field \"tokenizer.type\" is \"", config.tokenizer_type,
                                                 "\"; supported: ", absl::StrJoin(names, ", ")));
}

std::vector<std::string> TokenizerWarnings(const TokenizedText& text, absl::string_view field,
                                           absl::string_view model) {
  std::vector<std::string> warnings;
  // One warning per word, up to a few: a prompt of a thousand unknown words gets a summary.
  constexpr size_t kMaxWordWarnings = 8;
  for (size_t i = 0; i < text.dropped.size() && i < kMaxWordWarnings; ++i) {
    warnings.push_back(absl::StrCat(field, ": \"", text.dropped[i], "\" is not in model ", model,
                                    "'s vocabulary and was ignored"));
  }
  if (text.dropped.size() > kMaxWordWarnings) {
    warnings.push_back(absl::StrCat(field, ": ", text.dropped.size() - kMaxWordWarnings,
                                    " more words not in the vocabulary were ignored"));
  }
  if (text.truncated_tokens > 0) {
    warnings.push_back(absl::StrCat(field, ": cut at ", text.ids.size(), " tokens (the text encoder's length); ",
                                    text.truncated_tokens, " ignored"));
  }
  return warnings;
}

std::string ClipUtf8(absl::string_view text, size_t max_bytes) {
  if (text.size() <= max_bytes) return std::string(text);
  size_t end = max_bytes;
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;  // not inside a character
  return absl::StrCat(text.substr(0, end), "...");
}

}  // namespace imagegen
