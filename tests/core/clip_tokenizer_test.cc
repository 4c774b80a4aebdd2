// ClipBpeTokenizer: transformers' CLIPTokenizer id for id on the reference prompts, both folder
// layouts, truncation, file errors and concurrent use.
#include "core/model/clip_tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/model/model_config.h"
#include "tests/support/scratch_dir.h"

namespace imagegen {
namespace {

namespace fs = std::filesystem;
using Ids = std::vector<int64_t>;

const fs::path kDataDir = fs::path(IMAGEGEN_TEST_DATA_DIR) / "stable-diffusion";
// sd1-tiny: vocab.json + merges.txt, pad <|endoftext|>; sd2-tiny: tokenizer.json only, pad "!".
const fs::path kSd1Dir = kDataDir / "sd1-tiny" / "tokenizer";
const fs::path kSd2Dir = kDataDir / "sd2-tiny" / "tokenizer";
constexpr int kMaxLength = 77;
constexpr int64_t kBos = 49406, kEos = 49407;

struct ReferenceCase {
  std::string text;
  std::string pad_token;
  Ids input_ids;
  int untruncated_length;
};

std::vector<ReferenceCase> ReadReferenceCases() {
  std::ifstream in(kDataDir / "clip_tokens_public.json");
  std::vector<ReferenceCase> cases;
  if (!in) return cases;
  for (const nlohmann::json& c : nlohmann::json::parse(in)) {
    cases.push_back({c.at("text"), c.at("pad_token"), c.at("input_ids").get<Ids>(), c.at("untruncated_length")});
  }
  return cases;
}

std::unique_ptr<ClipBpeTokenizer> LoadOrDie(const fs::path& dir, int max_length = kMaxLength) {
  auto t = ClipBpeTokenizer::Load(dir.string(), max_length);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *std::move(t) : nullptr;
}

void WriteFile(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

TEST(ClipBpeTokenizer, MatchesTransformersOnEveryReferenceCase) {
  const std::vector<ReferenceCase> cases = ReadReferenceCases();
  ASSERT_EQ(cases.size(), 60u);
  auto sd1 = LoadOrDie(kSd1Dir);
  auto sd2 = LoadOrDie(kSd2Dir);
  ASSERT_NE(sd1, nullptr);
  ASSERT_NE(sd2, nullptr);
  int sd1_cases = 0, sd2_cases = 0;
  for (const ReferenceCase& c : cases) {
    ASSERT_TRUE(c.pad_token == "<|endoftext|>" || c.pad_token == "!") << c.pad_token;
    const bool eot_pad = c.pad_token == "<|endoftext|>";
    ++(eot_pad ? sd1_cases : sd2_cases);
    const TokenizedText got = (eot_pad ? sd1 : sd2)->Tokenize(c.text);
    EXPECT_EQ(got.ids, c.input_ids) << "pad " << c.pad_token << ", text \"" << c.text << "\"";
    EXPECT_EQ(got.truncated_tokens, std::max(0, c.untruncated_length - kMaxLength)) << c.text;
    EXPECT_TRUE(got.dropped.empty()) << c.text;
  }
  EXPECT_EQ(sd1_cases, 30);
  EXPECT_EQ(sd2_cases, 30);
}

TEST(ClipBpeTokenizer, ReadsBothFolderLayoutsAndTheirSpecialTokens) {
  auto sd1 = LoadOrDie(kSd1Dir);
  auto sd2 = LoadOrDie(kSd2Dir);
  ASSERT_NE(sd1, nullptr);
  ASSERT_NE(sd2, nullptr);
  for (const ClipBpeTokenizer* t : {sd1.get(), sd2.get()}) {
    EXPECT_EQ(t->bos_id(), kBos);
    EXPECT_EQ(t->eos_id(), kEos);
    EXPECT_EQ(t->vocab_size(), 49408);
    EXPECT_EQ(t->max_length(), kMaxLength);
  }
  EXPECT_EQ(sd1->pad_id(), kEos);
  EXPECT_EQ(sd2->pad_id(), 0);
}

TEST(ClipBpeTokenizer, SpecialTokenTypedInAPromptIsThatToken) {
  // The reference cuts added tokens out of the raw text before normalizing (transformers'
  // split_special_tokens=False); a different case is ordinary text.
  auto t = LoadOrDie(kSd1Dir, 8);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->Encode("a<|endoftext|>b"), (Ids{kBos, 320, kEos, 321, kEos, kEos, kEos, kEos}));
  EXPECT_EQ(t->Encode("<|startoftext|>"), (Ids{kBos, kBos, kEos, kEos, kEos, kEos, kEos, kEos}));
  EXPECT_NE(t->Encode("<|ENDOFTEXT|>")[1], kEos);
}

TEST(ClipBpeTokenizer, LettersAndDigitsAreUnicode14sAsInTheReference) {
  // U+11F04 KAWI LETTER A and U+31350 (CJK Extension H) came with Unicode 15: Oniguruma 6.9.8,
  // which the reference matches with, has them unassigned, so they split a word like punctuation
  // does (RE2 alone would keep "a\U00011F04b" one word). And any Unicode whitespace is a space.
  auto t = LoadOrDie(kSd1Dir);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->Encode("a\U00011F04b"), t->Encode("a \U00011F04 b"));
  EXPECT_EQ(t->Encode("x\U00031350y"), t->Encode("x \U00031350 y"));
  EXPECT_NE(t->Encode("\U00011F04!"), t->Encode("\U00011F04 !"));  // one run of "other"
  EXPECT_EQ(t->Encode("a\u00a0photo\u3000of\u2028a\u0085cat"), t->Encode("a photo of a cat"));
}

TEST(ClipBpeTokenizer, TruncatesToKeepTheEndTokenAndCountsWhatWasCut) {
  auto t = LoadOrDie(kSd1Dir, 5);
  ASSERT_NE(t, nullptr);
  // a b c d e: one token each (320..324); room for three.
  TokenizedText got = t->Tokenize("a b c d e");
  EXPECT_EQ(got.ids, (Ids{kBos, 320, 321, 322, kEos}));
  EXPECT_EQ(got.truncated_tokens, 2);
  got = t->Tokenize("a b c");
  EXPECT_EQ(got.ids, (Ids{kBos, 320, 321, 322, kEos}));
  EXPECT_EQ(got.truncated_tokens, 0);
  auto shortest = LoadOrDie(kSd1Dir, 2);
  ASSERT_NE(shortest, nullptr);
  got = shortest->Tokenize("a b");
  EXPECT_EQ(got.ids, (Ids{kBos, kEos}));
  EXPECT_EQ(got.truncated_tokens, 2);
}

TEST(ClipBpeTokenizer, IsCreatedByTheRegistryAsClipBpe) {
  ModelConfig config;
  config.tokenizer_type = "clip_bpe";
  config.max_length = kMaxLength;
  auto t = CreateTokenizer(config, kSd2Dir.string());
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->Encode("a photo of a cat").size(), 77u);
  EXPECT_EQ((*t)->Encode("a photo of a cat")[6], kEos);
}

TEST(ClipBpeTokenizer, ManyThreadsGetTheReferenceIds) {
  const std::vector<ReferenceCase> cases = ReadReferenceCases();
  ASSERT_FALSE(cases.empty());
  auto sd1 = LoadOrDie(kSd1Dir);
  auto sd2 = LoadOrDie(kSd2Dir);
  ASSERT_NE(sd1, nullptr);
  ASSERT_NE(sd2, nullptr);
  // Fresh tokenizers: the threads fill the shared word cache while they read it.
  constexpr int kThreads = 8, kRounds = 5;
  std::vector<int> mismatches(kThreads, 0);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      for (int round = 0; round < kRounds; ++round) {
        for (size_t k = 0; k < cases.size(); ++k) {
          const ReferenceCase& c = cases[(k + i * 7) % cases.size()];
          const ClipBpeTokenizer& t = c.pad_token == "!" ? *sd2 : *sd1;
          if (t.Encode(c.text) != c.input_ids) ++mismatches[i];
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  for (int i = 0; i < kThreads; ++i) EXPECT_EQ(mismatches[i], 0) << "thread " << i;
}

// --- files -----------------------------------------------------------------------------------

std::string ReadAll(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(ClipBpeTokenizer, MissingFolderOrVocabularyIsNotFound) {
  test::ScratchDir dir;
  auto t = ClipBpeTokenizer::Load(dir.path().string(), kMaxLength);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(t.status().message().find("tokenizer.json"), std::string::npos) << t.status();

  WriteFile(dir.path() / "merges.txt", ReadAll(kSd1Dir / "merges.txt"));
  t = ClipBpeTokenizer::Load(dir.path().string(), kMaxLength);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(t.status().message().find("vocab.json"), std::string::npos) << t.status();
}

TEST(ClipBpeTokenizer, GarbledVocabularyNamesItsFile) {
  test::ScratchDir dir;
  WriteFile(dir.path() / "merges.txt", ReadAll(kSd1Dir / "merges.txt"));
  WriteFile(dir.path() / "special_tokens_map.json", ReadAll(kSd1Dir / "special_tokens_map.json"));
  WriteFile(dir.path() / "vocab.json", "{\"a\": 1, ");
  auto t = ClipBpeTokenizer::Load(dir.path().string(), kMaxLength);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find((dir.path() / "vocab.json").string() + ": not valid JSON"), std::string::npos)
      << t.status();

  WriteFile(dir.path() / "vocab.json", "{\"a\": \"one\"}");
  t = ClipBpeTokenizer::Load(dir.path().string(), kMaxLength);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("vocab.json: token \"a\""), std::string::npos) << t.status();

  WriteFile(dir.path() / "vocab.json", "{\"a\": 0}");  // no byte-level symbols
  t = ClipBpeTokenizer::Load(dir.path().string(), kMaxLength);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("not a byte-level CLIP vocabulary"), std::string::npos) << t.status();

  WriteFile(dir.path() / "tokenizer.json", "[1, 2");  // preferred over vocab.json when present
  t = ClipBpeTokenizer::Load(dir.path().string(), kMaxLength);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("tokenizer.json: not valid JSON"), std::string::npos) << t.status();
}

TEST(ClipBpeTokenizer, BadMergesNameTheFileAndTheMerge) {
  test::ScratchDir dir;
  WriteFile(dir.path() / "vocab.json", ReadAll(kSd1Dir / "vocab.json"));
  WriteFile(dir.path() / "special_tokens_map.json", ReadAll(kSd1Dir / "special_tokens_map.json"));
  WriteFile(dir.path() / "merges.txt", "#version: 0.2\ni n\nt h e\n");
  auto t = ClipBpeTokenizer::Load(dir.path().string(), kMaxLength);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("merges.txt: merge 2 is not two tokens"), std::string::npos) << t.status();

  WriteFile(dir.path() / "merges.txt", "#version: 0.2\ni n\nqqqqqq zzzzzz\n");
  t = ClipBpeTokenizer::Load(dir.path().string(), kMaxLength);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("merges.txt: merge 2 \"qqqqqq zzzzzz\""), std::string::npos) << t.status();
}

TEST(ClipBpeTokenizer, PadTokenComesFromEitherConfigFileAndMustExist) {
  test::ScratchDir dir;
  WriteFile(dir.path() / "vocab.json", ReadAll(kSd1Dir / "vocab.json"));
  WriteFile(dir.path() / "merges.txt", ReadAll(kSd1Dir / "merges.txt"));
  auto t = ClipBpeTokenizer::Load(dir.path().string(), kMaxLength);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("pad_token"), std::string::npos) << t.status();

  // An AddedToken object, as transformers writes it.
  WriteFile(dir.path() / "tokenizer_config.json", R"({"pad_token": {"content": "!", "special": true}})");
  auto loaded = LoadOrDie(dir.path());
  ASSERT_NE(loaded, nullptr);
  EXPECT_EQ(loaded->pad_id(), 0);

  WriteFile(dir.path() / "special_tokens_map.json", R"({"pad_token": "<|endoftext|>"})");  // takes precedence
  loaded = LoadOrDie(dir.path());
  ASSERT_NE(loaded, nullptr);
  EXPECT_EQ(loaded->pad_id(), kEos);

  WriteFile(dir.path() / "special_tokens_map.json", R"({"pad_token": "<|nosuchtoken|>"})");
  t = ClipBpeTokenizer::Load(dir.path().string(), kMaxLength);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("vocab.json: has no token \"<|nosuchtoken|>\" (pad_token"), std::string::npos)
      << t.status();
}

TEST(ClipBpeTokenizer, MaxLengthBelowTwoIsAnError) {
  auto t = ClipBpeTokenizer::Load(kSd1Dir.string(), 1);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace imagegen
