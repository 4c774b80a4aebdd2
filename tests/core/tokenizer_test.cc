// WordTokenizer: the rule models/train/ldm.py trains with, and vocabulary errors.
#include "core/model/tokenizer.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"

namespace imagegen {
namespace {

using Ids = std::vector<int64_t>;

// Ids: <pad> 0, <bos> 1, <eos> 2, then the words in order.
constexpr char kVocab[] = "<pad>\n<bos>\n<eos>\na\nphoto\nof\nt-shirt\n3-piece\nsuit\ndress\n";
constexpr int64_t kA = 3, kPhoto = 4, kOf = 5, kTShirt = 6, kThreePiece = 7, kSuit = 8, kDress = 9;

class WordTokenizerTest : public ::testing::Test {
 protected:
  std::unique_ptr<WordTokenizer> Make(int max_length) {
    auto t = WordTokenizer::Create(kVocab, max_length, "vocab.txt");
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? *std::move(t) : nullptr;
  }
};

TEST_F(WordTokenizerTest, LowercasesAndSplitsOnEverythingButLettersDigitsAndHyphens) {
  auto t = Make(10);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->Encode("A PHOTO of a T-Shirt,"), (Ids{1, kA, kPhoto, kOf, kA, kTShirt, 2, 0, 0, 0}));
  EXPECT_EQ(t->Encode("photo\tof\n3-piece...suit!"), (Ids{1, kPhoto, kOf, kThreePiece, kSuit, 2, 0, 0, 0, 0}));
  // Non-ASCII bytes separate words like punctuation does.
  EXPECT_EQ(t->Encode("dress\xc3\xa9suit"), (Ids{1, kDress, kSuit, 2, 0, 0, 0, 0, 0, 0}));
}

TEST_F(WordTokenizerTest, DropsUnknownWords) {
  auto t = Make(8);
  ASSERT_NE(t, nullptr);
  // "shirt" and "t" are not "t-shirt"; "photos" is not "photo"; the special tokens' names are
  // not words either.
  EXPECT_EQ(t->Encode("photos of a shirt t <eos> dress"), (Ids{1, kOf, kA, kDress, 2, 0, 0, 0}));
}

TEST_F(WordTokenizerTest, EmptyAndUnknownOnlyPromptsAreBosEos) {
  auto t = Make(6);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->Encode(""), (Ids{1, 2, 0, 0, 0, 0}));
  EXPECT_EQ(t->Encode("   ,;  "), (Ids{1, 2, 0, 0, 0, 0}));
  EXPECT_EQ(t->Encode("zebra unicorn"), (Ids{1, 2, 0, 0, 0, 0}));
}

TEST_F(WordTokenizerTest, AlwaysReturnsMaxLengthIds) {
  auto t = Make(5);
  ASSERT_NE(t, nullptr);
  for (const char* prompt : {"", "dress", "a photo of a dress", "a a a a a a a a a a a a a"}) {
    EXPECT_EQ(t->Encode(prompt).size(), 5u) << prompt;
  }
  EXPECT_EQ(t->max_length(), 5);
}

TEST_F(WordTokenizerTest, ExactlyFullFitsWithoutPadding) {
  auto t = Make(5);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->Encode("a photo of"), (Ids{1, kA, kPhoto, kOf, 2}));
}

TEST_F(WordTokenizerTest, TruncatesLongPromptsAndKeepsEos) {
  auto t = Make(5);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->Encode("a photo of a t-shirt and a dress"), (Ids{1, kA, kPhoto, kOf, 2}));
  std::string many;
  for (int i = 0; i < 500; ++i) absl::StrAppend(&many, "dress ");
  EXPECT_EQ(t->Encode(many), (Ids{1, kDress, kDress, kDress, 2}));
}

TEST_F(WordTokenizerTest, UnknownWordsDoNotTakeRoomBeforeTruncation) {
  auto t = Make(5);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->Encode("zebra zebra zebra zebra dress suit zebra"), (Ids{1, kDress, kSuit, 2, 0}));
}

TEST_F(WordTokenizerTest, ShortestLengthHoldsOnlyBosEos) {
  auto t = Make(2);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->Encode("a photo of a dress"), (Ids{1, 2}));
}

TEST(WordTokenizer, CountsTheVocabularyAndIgnoresTrailingBlankLines) {
  auto t = WordTokenizer::Create(absl::StrCat(kVocab, "\n\n"), 8, "vocab.txt");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->vocab_size(), 10);
}

TEST(WordTokenizer, AcceptsWindowsLineEndings) {
  auto t = WordTokenizer::Create("<pad>\r\n<bos>\r\n<eos>\r\ndress\r\n", 4, "vocab.txt");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->Encode("dress"), (Ids{1, 3, 2, 0}));
}

// Each error names the source and the line at fault.
void ExpectVocabError(const std::string& vocab, int max_length, const std::vector<std::string>& fragments) {
  auto t = WordTokenizer::Create(vocab, max_length, "bundle/vocab.txt");
  ASSERT_FALSE(t.ok()) << "accepted: " << vocab;
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string message(t.status().message());
  EXPECT_NE(message.find("bundle/vocab.txt"), std::string::npos) << message;
  for (const std::string& f : fragments) EXPECT_NE(message.find(f), std::string::npos) << "no \"" << f << "\" in: " << message;
}

TEST(WordTokenizer, SpecialTokensMustComeFirst) {
  ExpectVocabError("<unk>\n<bos>\n<eos>\ndress\n", 8, {"line 1", "<pad>"});
  ExpectVocabError("<pad>\n<eos>\n<bos>\ndress\n", 8, {"line 2", "<bos>"});
  ExpectVocabError("<pad>\n<bos>\ndress\n<eos>\n", 8, {"line 3", "<eos>"});
}

TEST(WordTokenizer, DuplicateTokenNamesItsLine) {
  ExpectVocabError("<pad>\n<bos>\n<eos>\ndress\nsuit\ndress\n", 8, {"line 6", "dress"});
}

TEST(WordTokenizer, EmptyLineInsideNamesItsLine) {
  ExpectVocabError("<pad>\n<bos>\n<eos>\ndress\n\nsuit\n", 8, {"line 5", "empty"});
}

TEST(WordTokenizer, TooShortVocabularyOrLengthIsAnError) {
  ExpectVocabError("", 8, {"<pad>"});
  ExpectVocabError("<pad>\n<bos>\n", 8, {"<eos>"});
  ExpectVocabError(kVocab, 1, {"max_length", "1"});
}

}  // namespace
}  // namespace imagegen
