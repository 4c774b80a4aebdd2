// CLIP's byte-level BPE tokenizer, as Stable Diffusion's text encoders take their input.
#ifndef IMAGEGEN_CORE_MODEL_CLIP_TOKENIZER_H_
#define IMAGEGEN_CORE_MODEL_CLIP_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/model/tokenizer.h"

namespace imagegen {

// Reproduces transformers' CLIPTokenizer (the `tokenizers` backend, transformers 5) id for id,
// checked against tests/data/stable-diffusion/clip_tokens_public.json:
//   1. added tokens (bos, eos, pad, unk and tokenizer.json's "added_tokens") are cut out of the
//      raw text first, leftmost-longest, and become their own ids: a prompt that types
//      "<|endoftext|>" gets id 49407 there, and with Stable Diffusion 2's pad "!" every "!" is id 0;
//   2. the text between them is normalized: NFC, every run of Unicode White_Space to one space,
//      Unicode lowercase (full mapping: U+0130 becomes "i" U+0307);
//   3. split by CLIP's pattern (contractions 's 't 're 've 'm 'll 'd, letter runs, single digits,
//      runs of other non-space characters; letters and digits as Unicode 14 has them, like the
//      reference's Oniguruma); spaces are dropped;
//   4. each piece's UTF-8 bytes are mapped through GPT-2's bytes_to_unicode table, "</w>" is
//      appended to the last symbol, and pairs are merged by merge rank (Sennrich et al. 2016);
//   5. <|startoftext|> tokens <|endoftext|>, truncated to keep <|endoftext|> within max_length,
//      then padded with the pad token's id.
// BPE drops nothing: TokenizedText::dropped stays empty; truncated_tokens counts the tokens cut.
//
// Thread safety: Tokenize() may be called from any number of threads at once. The vocabulary is
// immutable after Load; a bounded cache of each word's BPE result is shared under a mutex.
class ClipBpeTokenizer : public Tokenizer {
 public:
  // Reads the tokenizer folder `dir` as transformers saves it: tokenizer.json ("model.vocab",
  // "model.merges" as "a b" strings or ["a", "b"] pairs, "added_tokens") when present, else
  // vocab.json + merges.txt; bos, eos, pad and unk token strings from special_tokens_map.json,
  // else tokenizer_config.json (a string or an object with "content"; bos and eos default to
  // <|startoftext|> and <|endoftext|>, unk to eos; pad has no default). Errors (NOT_FOUND for a
  // missing file, INVALID_ARGUMENT otherwise) name the file and what is wrong with it: bad JSON,
  // a malformed merge line, a merge of tokens not in the vocabulary, a special token the
  // vocabulary lacks, max_length below 2.
  static absl::StatusOr<std::unique_ptr<ClipBpeTokenizer>> Load(const std::string& dir, int max_length);

  ~ClipBpeTokenizer() override;

  TokenizedText Tokenize(absl::string_view text) const override;
  int max_length() const override { return max_length_; }

  int64_t bos_id() const;
  int64_t eos_id() const;
  int64_t pad_id() const;
  int vocab_size() const;

 private:
  class Impl;
  ClipBpeTokenizer(std::unique_ptr<Impl> impl, int max_length);

  std::unique_ptr<Impl> impl_;  // the vocabulary, merges, pattern and cache
  int max_length_;
};

}  // namespace imagegen

#endif  // IMAGEGEN_CORE_MODEL_CLIP_TOKENIZER_H_
