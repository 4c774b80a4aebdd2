#include "core/model/clip_tokenizer.h"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <re2/re2.h>
#include <utf8proc.h>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/model/bundle_dirs.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"

namespace imagegen {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// Letters and digits that Unicode 15.0 added. The reference matches with Oniguruma 6.9.8 (what
// `tokenizers` bundles), whose tables are Unicode 14.0: there these are unassigned, neither \p{L}
// nor \p{N}, so they fall in the "other" class. RE2 (Debian 12's 2022-06-01) knows Unicode 15;
// the pattern takes them out of its letters and digits again. (Found by comparing every code
// point's class in both libraries; \s, Unicode White_Space in both, agreed.)
constexpr char kUnicode15Letters[] =
    R"(\x{1123F}-\x{11240}\x{11F02}\x{11F04}-\x{11F10}\x{11F12}-\x{11F33}\x{1342F}\x{13441}-\x{13446})"
    R"(\x{1B132}\x{1B155}\x{1DF25}-\x{1DF2A}\x{1E030}-\x{1E06D}\x{1E4D0}-\x{1E4EB}\x{2B739}\x{31350}-\x{323AF})";
constexpr char kUnicode15Digits[] = R"(\x{11F50}-\x{11F59}\x{1D2C0}-\x{1D2D3}\x{1E4F0}-\x{1E4F9})";

// CLIP's pre-tokenizer pattern (openai/CLIP simple_tokenizer.py; tokenizer.json "pre_tokenizer"):
//   <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
// with Unicode 14's letters and digits (above), and without a capture group (RE2 then finds a
// match's bounds with its DFAs alone, several times faster than with submatches). Whitespace is
// never matched, so it is dropped.
std::string ClipPattern() {
  return absl::StrCat(R"(<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d)",  //
                      "|[^\\P{L}", kUnicode15Letters, "]+",                              //
                      "|[^\\P{N}", kUnicode15Digits, "]",                                //
                      "|(?:[^\\s\\p{L}\\p{N}]|[", kUnicode15Letters, kUnicode15Digits, "])+");
}

constexpr char kEndOfWord[] = "</w>";

// BPE results are cached per word up to this many words; longer words are not cached (as the
// `tokenizers` BPE cache does), so that a stream of unique prompts cannot grow memory unbounded.
constexpr size_t kMaxCachedWords = 100000;
constexpr size_t kMaxCachedWordBytes = 256;

// Unicode White_Space, what the reference's `\s` (Oniguruma, Unicode) matches.
bool IsWhiteSpace(int32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

void AppendUtf8(int32_t c, std::string* out) {
  utf8proc_uint8_t buf[4];
  const utf8proc_ssize_t n = utf8proc_encode_char(c, buf);
  out->append(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
}

// `text` with each byte that is not part of valid UTF-8 replaced by U+FFFD.
std::string ValidUtf8(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  utf8proc_ssize_t left = static_cast<utf8proc_ssize_t>(text.size());
  while (left > 0) {
    int32_t c;
    utf8proc_ssize_t n = utf8proc_iterate(p, left, &c);
    if (n <= 0) {
      c = 0xFFFD;
      n = 1;
    }
    AppendUtf8(c, &out);
    p += n;
    left -= n;
  }
  return out;
}

// The reference's normalizer: NFC, then every run of White_Space to one space, then lowercase
// (Rust's char::to_lowercase, one character at a time: the full mapping, so U+0130 becomes two
// code points; utf8proc's simple mapping agrees everywhere else).
std::string Normalize(absl::string_view text) {
  const bool ascii = std::all_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
  std::string out;
  out.reserve(text.size());
  if (ascii) {
    bool in_space = false;
    for (char c : text) {
      if (IsWhiteSpace(c)) {
        if (!in_space) out.push_back(' ');
        in_space = true;
      } else {
        out.push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c);
        in_space = false;
      }
    }
    return out;
  }
  const std::string valid = ValidUtf8(text);
  utf8proc_uint8_t* nfc = nullptr;
  const utf8proc_ssize_t nfc_len =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(valid.data()), static_cast<utf8proc_ssize_t>(valid.size()),
                   &nfc, static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  const utf8proc_uint8_t* p = nfc;
  utf8proc_ssize_t left = nfc_len;
  if (nfc_len < 0) {  // cannot happen on valid UTF-8; go on without composing
    p = reinterpret_cast<const utf8proc_uint8_t*>(valid.data());
    left = static_cast<utf8proc_ssize_t>(valid.size());
  }
  bool in_space = false;
  while (left > 0) {
    int32_t c;
    utf8proc_ssize_t n = utf8proc_iterate(p, left, &c);
    if (n <= 0) break;
    p += n;
    left -= n;
    if (IsWhiteSpace(c)) {
      if (!in_space) out.push_back(' ');
      in_space = true;
      continue;
    }
    in_space = false;
    if (c == 0x130) {  // LATIN CAPITAL LETTER I WITH DOT ABOVE: "i" + COMBINING DOT ABOVE
      out.append("i\xCC\x87");
    } else {
      AppendUtf8(utf8proc_tolower(c), &out);
    }
  }
  std::free(nfc);
  return out;
}

// GPT-2's bytes_to_unicode (openai/gpt-2 encoder.py): printable Latin-1 bytes map to themselves,
// the other 68 bytes to U+0100 onwards, in byte order.
std::array<std::string, 256> ByteSymbols() {
  std::array<std::string, 256> symbols;
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    AppendUtf8(printable ? b : next++, &symbols[b]);
  }
  return symbols;
}

absl::StatusOr<json> ReadJson(const fs::path& path) {
  auto text = ReadBundleFile(path);
  if (!text.ok()) return text.status();
  try {
    return json::parse(*text);
  } catch (const json::exception& e) {
    // nlohmann's message ends with "last read: '...'", the file's own text: cut it.
    std::string what = e.what();
    if (const size_t cut = what.find("; last read"); cut != std::string::npos) what.resize(cut);
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": not valid JSON: ", what));
  }
}

struct AddedToken {
  std::string content;
  int32_t id;
  bool normalized;  // matched in the normalized text rather than the raw text
};

// Cuts `text` at every occurrence of the tokens in `added` (leftmost, then longest, as the
// reference's Aho-Corasick matcher does), calling on_text(segment) for the text between them
// and on_token(id) for each token, in order.
template <typename OnText, typename OnToken>
void SplitOnAddedTokens(absl::string_view text, const std::vector<const AddedToken*>& added, OnText on_text,
                        OnToken on_token) {
  size_t start = 0;
  size_t i = 0;
  while (i < text.size()) {
    const AddedToken* best = nullptr;
    for (const AddedToken* t : added) {
      if (text.size() - i >= t->content.size() && text.compare(i, t->content.size(), t->content) == 0 &&
          (best == nullptr || t->content.size() > best->content.size())) {
        best = t;
      }
    }
    if (best == nullptr) {
      ++i;
      continue;
    }
    if (i > start) on_text(text.substr(start, i - start));
    on_token(best->id);
    i += best->content.size();
    start = i;
  }
  if (start < text.size()) on_text(text.substr(start));
}

// One token string of special_tokens_map.json or tokenizer_config.json: a string, or an object
// with "content" (an AddedToken as transformers saves it); nullopt when absent or null.
absl::StatusOr<std::optional<std::string>> TokenField(const json& root, const char* key, const fs::path& path) {
  auto it = root.find(key);
  if (it == root.end() || it->is_null()) return std::optional<std::string>();
  if (it->is_string()) return std::optional<std::string>(it->get<std::string>());
  if (it->is_object()) {
    auto content = it->find("content");
    if (content != it->end() && content->is_string()) return std::optional<std::string>(content->get<std::string>());
  }
  return absl::InvalidArgumentError(absl::StrCat(path.string(), ": field \"", key,
                                                 "\" must be a string or an object with \"content\", got ",
                                                 it->dump()));
}

uint64_t PairKey(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

}  // namespace

class ClipBpeTokenizer::Impl {
 public:
  struct Merge {
    int32_t rank;
    int32_t merged;
  };

  absl::flat_hash_map<std::string, int32_t> vocab;
  absl::flat_hash_map<uint64_t, Merge> merges;  // PairKey(left id, right id)
  std::array<int32_t, 256> byte_ids{};          // each byte's symbol
  std::array<int32_t, 256> byte_end_ids{};      // each byte's symbol + "</w>", ending a word
  std::vector<AddedToken> added;
  std::vector<const AddedToken*> raw_added;         // matched before normalization
  std::vector<const AddedToken*> normalized_added;  // matched after it
  int32_t bos = 0, eos = 0, pad = 0;
  int vocab_size = 0;
  RE2 pattern{ClipPattern()};

  // The BPE ids of one pre-tokenized piece.
  std::vector<int32_t> Bpe(absl::string_view word) const;
  // Appends the ids of `words` to `out`, from the cache where it has them.
  void AppendWords(const std::vector<std::string>& words, std::vector<int64_t>* out) const;

  mutable absl::Mutex mu;
  mutable absl::flat_hash_map<std::string, std::vector<int32_t>> cache ABSL_GUARDED_BY(mu);
};

std::vector<int32_t> ClipBpeTokenizer::Impl::Bpe(absl::string_view word) const {
  std::vector<int32_t> symbols;
  symbols.reserve(word.size());
  for (size_t i = 0; i < word.size(); ++i) {
    const auto b = static_cast<unsigned char>(word[i]);
    symbols.push_back(i + 1 < word.size() ? byte_ids[b] : byte_end_ids[b]);
  }
  // Merge the lowest-ranked pair everywhere, left to right, until no pair has a merge (a merge's
  // product only takes part in merges of higher rank, so this equals the reference's heap order).
  std::vector<int32_t> next;
  while (symbols.size() > 1) {
    const Merge* best = nullptr;
    int32_t left = 0, right = 0;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      auto it = merges.find(PairKey(symbols[i], symbols[i + 1]));
      if (it != merges.end() && (best == nullptr || it->second.rank < best->rank)) {
        best = &it->second;
        left = symbols[i];
        right = symbols[i + 1];
      }
    }
    if (best == nullptr) break;
    next.clear();
    for (size_t i = 0; i < symbols.size(); ++i) {
      if (i + 1 < symbols.size() && symbols[i] == left && symbols[i + 1] == right) {
        next.push_back(best->merged);
        ++i;
      } else {
        next.push_back(symbols[i]);
      }
    }
    symbols.swap(next);
  }
  return symbols;
}

void ClipBpeTokenizer::Impl::AppendWords(const std::vector<std::string>& words, std::vector<int64_t>* out) const {
  // One shared lock for the lookups, the misses computed unlocked, one exclusive lock to keep them.
  std::vector<std::optional<std::vector<int32_t>>> found(words.size());
  bool missed = false;
  {
    absl::ReaderMutexLock lock(&mu);
    for (size_t i = 0; i < words.size(); ++i) {
      auto it = cache.find(words[i]);
      if (it != cache.end()) {
        found[i] = it->second;
      } else {
        missed = true;
      }
    }
  }
  std::vector<size_t> computed;
  if (missed) {
    for (size_t i = 0; i < words.size(); ++i) {
      if (found[i]) continue;
      found[i] = Bpe(words[i]);
      if (words[i].size() <= kMaxCachedWordBytes) computed.push_back(i);
    }
  }
  if (!computed.empty()) {
    absl::MutexLock lock(&mu);
    for (size_t i : computed) {
      if (cache.size() >= kMaxCachedWords) break;
      cache.emplace(words[i], *found[i]);
    }
  }
  for (const auto& ids : found) out->insert(out->end(), ids->begin(), ids->end());
}

ClipBpeTokenizer::ClipBpeTokenizer(std::unique_ptr<Impl> impl, int max_length)
    : impl_(std::move(impl)), max_length_(max_length) {}

ClipBpeTokenizer::~ClipBpeTokenizer() = default;

int64_t ClipBpeTokenizer::bos_id() const { return impl_->bos; }
int64_t ClipBpeTokenizer::eos_id() const { return impl_->eos; }
int64_t ClipBpeTokenizer::pad_id() const { return impl_->pad; }
int ClipBpeTokenizer::vocab_size() const { return impl_->vocab_size; }

absl::StatusOr<std::unique_ptr<ClipBpeTokenizer>> ClipBpeTokenizer::Load(const std::string& dir, int max_length) {
  const fs::path root(dir);
  if (max_length < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(dir, ": max_length is ", max_length, "; needs at least 2 (<|startoftext|>, <|endoftext|>)"));
  }
  auto impl = std::make_unique<Impl>();
  if (!impl->pattern.ok()) return absl::InternalError(absl::StrCat("CLIP pattern: ", impl->pattern.error()));

  // The vocabulary and the merges, as token strings.
  fs::path vocab_path, merges_path;
  const json* vocab_json = nullptr;
  std::vector<std::pair<std::string, std::string>> merge_pairs;
  json tokenizer_json;
  json vocab_file;
  // Each merge "a b": exactly two non-empty tokens separated by one space (the reference's rule).
  auto parse_merge = [&](absl::string_view line, size_t index) -> absl::Status {
    std::vector<absl::string_view> parts = absl::StrSplit(line, ' ');
    if (parts.size() != 2 || parts[0].empty() || parts[1].empty()) {
      return absl::InvalidArgumentError(absl::StrCat(merges_path.string(), ": merge ", index + 1,
                                                     " is not two tokens separated by one space"));
    }
    merge_pairs.emplace_back(std::string(parts[0]), std::string(parts[1]));
    return absl::OkStatus();
  };
  std::error_code ec;
  if (fs::exists(root / "tokenizer.json", ec)) {
    vocab_path = merges_path = root / "tokenizer.json";
    auto parsed = ReadJson(vocab_path);
    if (!parsed.ok()) return parsed.status();
    tokenizer_json = *std::move(parsed);
    auto bad = [&](const std::string& what) {
      return absl::InvalidArgumentError(absl::StrCat(vocab_path.string(), ": ", what));
    };
    if (!tokenizer_json.is_object() || !tokenizer_json.contains("model") || !tokenizer_json["model"].is_object()) {
      return bad("has no \"model\" object");
    }
    const json& model = tokenizer_json["model"];
    if (model.contains("type") && model["type"] != "BPE") {
      return bad(absl::StrCat("field \"model.type\" is ", model["type"].dump(), "; a CLIP tokenizer is \"BPE\""));
    }
    if (model.contains("end_of_word_suffix") && model["end_of_word_suffix"] != kEndOfWord) {
      return bad(absl::StrCat("field \"model.end_of_word_suffix\" is ", model["end_of_word_suffix"].dump(),
                              "; a CLIP tokenizer has \"</w>\""));
    }
    if (!model.contains("vocab") || !model["vocab"].is_object()) {
      return bad("field \"model.vocab\" must be an object of token to id");
    }
    vocab_json = &model["vocab"];
    if (!model.contains("merges") || !model["merges"].is_array()) {
      return bad("field \"model.merges\" must be an array");
    }
    const json& merges = model["merges"];
    for (size_t i = 0; i < merges.size(); ++i) {
      const json& m = merges[i];
      if (m.is_string()) {
        if (auto s = parse_merge(m.get<std::string>(), i); !s.ok()) return s;
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        merge_pairs.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
      } else {
        return bad(absl::StrCat("field \"model.merges\": entry ", i + 1, " is ", m.dump(),
                                "; expected \"a b\" or [\"a\", \"b\"]"));
      }
    }
    if (tokenizer_json.contains("added_tokens")) {
      const json& added = tokenizer_json["added_tokens"];
      if (!added.is_array()) return bad("field \"added_tokens\" must be an array");
      for (const json& t : added) {
        if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer() || !t.contains("content") ||
            !t["content"].is_string() || t["content"].get<std::string>().empty()) {
          return bad(absl::StrCat("field \"added_tokens\": ", t.dump(), " needs \"id\" and a non-empty \"content\""));
        }
        const bool special = t.value("special", false);
        impl->added.push_back({t["content"].get<std::string>(), t["id"].get<int32_t>(), t.value("normalized", !special)});
      }
    }
  } else {
    vocab_path = root / "vocab.json";
    merges_path = root / "merges.txt";
    if (!fs::exists(vocab_path, ec) && !fs::exists(merges_path, ec)) {
      return absl::NotFoundError(absl::StrCat(dir, ": has neither tokenizer.json nor vocab.json and merges.txt"));
    }
    auto parsed = ReadJson(vocab_path);
    if (!parsed.ok()) return parsed.status();
    vocab_file = *std::move(parsed);
    if (!vocab_file.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(vocab_path.string(), ": must be an object of token to id"));
    }
    vocab_json = &vocab_file;
    auto text = ReadBundleFile(merges_path);
    if (!text.ok()) return text.status();
    size_t index = 0;
    for (absl::string_view line : absl::StrSplit(*text, '\n')) {
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (line.empty() || absl::StartsWith(line, "#version")) continue;
      if (auto s = parse_merge(line, index); !s.ok()) return s;
      ++index;
    }
  }

  // Ids.
  int32_t max_id = -1;
  for (auto it = vocab_json->begin(); it != vocab_json->end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 ||
        it.value().get<int64_t>() > std::numeric_limits<int32_t>::max()) {
      return absl::InvalidArgumentError(absl::StrCat(vocab_path.string(), ": token \"", QuoteBundleText(it.key()), "\" has id ",
                                                     it.value().dump(), "; ids are non-negative integers"));
    }
    const auto id = it.value().get<int32_t>();
    impl->vocab.emplace(it.key(), id);
    max_id = std::max(max_id, id);
  }
  for (const AddedToken& t : impl->added) max_id = std::max(max_id, t.id);
  impl->vocab_size = max_id + 1;
  auto lookup = [&](const std::string& token) -> std::optional<int32_t> {
    auto it = impl->vocab.find(token);
    if (it != impl->vocab.end()) return it->second;
    return std::nullopt;
  };
  const std::array<std::string, 256> byte_symbols = ByteSymbols();
  for (int b = 0; b < 256; ++b) {
    auto id = lookup(byte_symbols[b]);
    auto end_id = lookup(byte_symbols[b] + kEndOfWord);
    if (!id || !end_id) {
      return absl::InvalidArgumentError(absl::StrCat(vocab_path.string(), ": has no token \"", byte_symbols[b],
                                                     id ? kEndOfWord : "", "\" (byte ", b,
                                                     "); not a byte-level CLIP vocabulary"));
    }
    impl->byte_ids[b] = *id;
    impl->byte_end_ids[b] = *end_id;
  }
  for (size_t i = 0; i < merge_pairs.size(); ++i) {
    const auto& [a, b] = merge_pairs[i];
    auto left = lookup(a), right = lookup(b), merged = lookup(a + b);
    if (!left || !right || !merged) {
      return absl::InvalidArgumentError(absl::StrCat(merges_path.string(), ": merge ", i + 1, " \"", QuoteBundleText(a + " " + b),
                                                     "\" has \"", QuoteBundleText(!left ? a : !right ? b : a + b),
                                                     "\", which is not in the vocabulary"));
    }
    impl->merges.insert_or_assign(PairKey(*left, *right), Impl::Merge{static_cast<int32_t>(i), *merged});
  }

  // Special tokens: special_tokens_map.json over tokenizer_config.json, as transformers reads them.
  std::vector<std::pair<fs::path, json>> configs;
  for (const char* name : {"special_tokens_map.json", "tokenizer_config.json"}) {
    if (!fs::exists(root / name, ec)) continue;
    auto parsed = ReadJson(root / name);
    if (!parsed.ok()) return parsed.status();
    if (!parsed->is_object()) {
      return absl::InvalidArgumentError(absl::StrCat((root / name).string(), ": must be a JSON object"));
    }
    configs.emplace_back(root / name, *std::move(parsed));
  }
  auto special = [&](const char* key, std::optional<std::string> fallback) -> absl::StatusOr<AddedToken> {
    std::optional<std::string> content;
    fs::path source;
    for (const auto& [path, config] : configs) {
      auto field = TokenField(config, key, path);
      if (!field.ok()) return field.status();
      if (*field) {
        content = **field;
        source = path;
        break;
      }
    }
    if (!content) content = fallback;
    if (!content) {
      return absl::InvalidArgumentError(absl::StrCat(
          dir, ": no \"", key, "\" in special_tokens_map.json or tokenizer_config.json; a CLIP tokenizer needs one"));
    }
    for (const AddedToken& t : impl->added) {
      if (t.content == *content) return t;
    }
    auto id = lookup(*content);
    if (!id || content->empty()) {
      return absl::InvalidArgumentError(absl::StrCat(vocab_path.string(), ": has no token \"", QuoteBundleText(*content), "\" (",
                                                     key, source.empty() ? "" : " in ", source.string(), ")"));
    }
    return AddedToken{*content, *id, false};
  };
  auto bos = special("bos_token", "<|startoftext|>");
  if (!bos.ok()) return bos.status();
  auto eos = special("eos_token", "<|endoftext|>");
  if (!eos.ok()) return eos.status();
  auto unk = special("unk_token", eos->content);
  if (!unk.ok()) return unk.status();
  auto pad = special("pad_token", std::nullopt);
  if (!pad.ok()) return pad.status();
  impl->bos = bos->id;
  impl->eos = eos->id;
  impl->pad = pad->id;
  for (const AddedToken* t : {&*bos, &*eos, &*unk, &*pad}) {
    const bool known = std::any_of(impl->added.begin(), impl->added.end(),
                                   [&](const AddedToken& a) { return a.content == t->content; });
    if (!known) impl->added.push_back(*t);
  }
  for (const AddedToken& t : impl->added) {
    (t.normalized ? impl->normalized_added : impl->raw_added).push_back(&t);
  }
  // RE2 builds its reverse program and first DFA states on the first match (~4 ms with these
  // Unicode classes); pay that here rather than in the first request.
  re2::StringPiece warm_up("a photo, 1 caf\xC3\xA9 \xE7\x8C\xAB!"), piece;
  impl->pattern.Match(warm_up, 0, warm_up.size(), RE2::UNANCHORED, &piece, 1);
  return std::unique_ptr<ClipBpeTokenizer>(new ClipBpeTokenizer(std::move(impl), max_length));
}

TokenizedText ClipBpeTokenizer::Tokenize(absl::string_view text) const {
  // Pre-tokenize into words and added tokens, in order; a word's ids come from AppendWords.
  std::vector<int64_t> tokens;
  std::vector<std::string> words;
  auto flush_words = [&] {
    if (words.empty()) return;
    impl_->AppendWords(words, &tokens);
    words.clear();
  };
  auto split_words = [&](absl::string_view normalized) {
    const re2::StringPiece input(normalized.data(), normalized.size());
    re2::StringPiece piece;
    size_t pos = 0;
    while (pos < input.size() && impl_->pattern.Match(input, pos, input.size(), RE2::UNANCHORED, &piece, 1)) {
      words.emplace_back(piece.data(), piece.size());
      pos = static_cast<size_t>(piece.data() + piece.size() - input.data());
    }
  };
  auto on_token = [&](int32_t id) {
    flush_words();
    tokens.push_back(id);
  };
  SplitOnAddedTokens(
      text, impl_->raw_added,
      [&](absl::string_view raw) {
        const std::string normalized = Normalize(raw);
        if (impl_->normalized_added.empty()) {
          split_words(normalized);
        } else {
          SplitOnAddedTokens(normalized, impl_->normalized_added, split_words, on_token);
        }
      },
      on_token);
  flush_words();

  TokenizedText out;
  const size_t room = static_cast<size_t>(max_length_) - 2;
  if (tokens.size() > room) {
    out.truncated_tokens = static_cast<int>(tokens.size() - room);
    tokens.resize(room);
  }
  out.ids.reserve(max_length_);
  out.ids.push_back(impl_->bos);
  out.ids.insert(out.ids.end(), tokens.begin(), tokens.end());
  out.ids.push_back(impl_->eos);
  out.ids.resize(max_length_, impl_->pad);
  return out;
}

}  // namespace imagegen
