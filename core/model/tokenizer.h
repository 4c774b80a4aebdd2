// Tokenizers: prompt text to the fixed-length token ids a text encoder takes.
#ifndef IMAGEGEN_CORE_MODEL_TOKENIZER_H_
#define IMAGEGEN_CORE_MODEL_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace imagegen {

struct ModelConfig;

// A prompt as token ids, with what of it the text encoder will not see.
struct TokenizedText {
  std::vector<int64_t> ids;           // exactly max_length() ids
  std::vector<std::string> dropped;   // words not in the vocabulary, in prompt order, each once
  int truncated_tokens = 0;           // tokens cut off at the text encoder's length
};

// Turns a prompt into exactly max_length() token ids. Implementations are immutable after
// construction and thread-safe. Tokenizing never fails: unknown words are dropped and ids past
// the text encoder's length are truncated, as Stable Diffusion's CLIP tokenizer does; the result
// says what was dropped so that the service can warn the client.
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual TokenizedText Tokenize(absl::string_view text) const = 0;
  virtual int max_length() const = 0;
  std::vector<int64_t> Encode(absl::string_view text) const { return Tokenize(text).ids; }
};

// The tokenizer a bundle's model.json asks for (config.tokenizer_type), reading its files from
// the bundle folder `dir`. INVALID_ARGUMENT naming model.json's "tokenizer.type" for a type
// imagegen does not know; a missing or malformed vocabulary names its file. A new tokenizer type
// is one Tokenizer class and one line in this function's table (tokenizer.cc).
absl::StatusOr<std::unique_ptr<Tokenizer>> CreateTokenizer(const ModelConfig& config, const std::string& dir);

// The client-facing warnings for what `text` (the request field `field`, "prompt" or
// "negative_prompt") lost in tokenizing: one per dropped word, and one for truncation.
std::vector<std::string> TokenizerWarnings(const TokenizedText& text, absl::string_view field,
                                           absl::string_view model);

// The word-level tokenizer of the embedded default model. A word is a maximal run of
// [a-z0-9-] after ASCII lowercasing; words not in the vocabulary are dropped. Output:
// <bos> words... <eos> <pad>..., truncated to keep <eos> (models/train/ldm.py has the twin).
class WordTokenizer : public Tokenizer {
 public:
  static constexpr int64_t kPadId = 0;
  static constexpr int64_t kBosId = 1;
  static constexpr int64_t kEosId = 2;

  // `vocab_text` holds one token per line; the line index is its id. Lines 0..2 must be
  // <pad>, <bos>, <eos>. Errors name `source` and the offending line.
  static absl::StatusOr<std::unique_ptr<WordTokenizer>> Create(absl::string_view vocab_text,
                                                              int max_length,
                                                              absl::string_view source);

  TokenizedText Tokenize(absl::string_view text) const override;
  int max_length() const override { return max_length_; }
  int vocab_size() const { return static_cast<int>(ids_.size()); }

 private:
  WordTokenizer(std::unordered_map<std::string, int64_t> ids, int max_length)
      : ids_(std::move(ids)), max_length_(max_length) {}

  std::unordered_map<std::string, int64_t> ids_;
  int max_length_;
};

// At most `max_bytes` of `text`, cut at a UTF-8 character boundary, with "..." when cut: what an
// error or log may quote of a client's or a file's text (ClipForEcho, QuoteBundleText).
std::string ClipUtf8(absl::string_view text, size_t max_bytes);

}  // namespace imagegen

#endif  // IMAGEGEN_CORE_MODEL_TOKENIZER_H_
