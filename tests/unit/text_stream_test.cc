// Incremental detokenization against the tokenizer's own full decode (the oracle): the streamed
// pieces concatenate to exactly the text of the generated tokens, and no piece ends inside a UTF-8
// character, for texts whose characters are split over byte-fallback tokens.
#include "runtime/engine/text_stream.h"

#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/tokenizer/tokenizer.h"

namespace moeserve::runtime {
namespace {

bool IsValidUtf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    const size_t len = c < 0x80         ? 1
                       : (c >> 5) == 6  ? 2
                       : (c >> 4) == 14 ? 3
                       : (c >> 3) == 30 ? 4
                                        : 0;
    if (len == 0 || i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += len;
  }
  return true;
}

class TextStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto tok = Tokenizer::LoadEmbedded();
    ASSERT_TRUE(tok.ok()) << tok.status();
    tok_ = *std::move(tok);
  }
  std::unique_ptr<Tokenizer> tok_;
};

const char* const kTexts[] = {
    "Hello, my name is John and I like 🦙 llamas.",
    "日本語のテキスト、そして絵文字 🎉🎊 と 𝔘𝔫𝔦𝔠𝔬𝔡𝔢.",
    "def f(x):\n    return x ** 2  # ünïcödé\n\n\n",
    "  leading spaces, tabs\tand 1234567890 numbers",
    "Ἀρχὴ σοφίας 🧑‍🚀 ꙮ 𓀀",
};

TEST_F(TextStreamTest, StreamedPiecesConcatenateToTheFullDecode) {
  for (const char* text : kTexts) {
    const std::vector<int32_t> ids = tok_->Encode(text, /*add_bos=*/false, /*add_eos=*/false);
    bool saw_byte_fallback = false;
    TextStream stream(*tok_);
    std::string streamed;
    for (int32_t id : ids) {
      saw_byte_fallback |= tok_->IsByteFallback(id);
      const std::string piece = stream.Push(id);
      EXPECT_TRUE(IsValidUtf8(piece)) << "broken UTF-8 piece in: " << text;
      streamed += piece;
    }
    streamed += stream.Flush();
    EXPECT_EQ(streamed, tok_->Decode(ids)) << text;
    if (std::string(text).find("𓀀") != std::string::npos) {
      EXPECT_TRUE(saw_byte_fallback);
    }
  }
}

TEST_F(TextStreamTest, ContextKeepsTheLeadingSpaceOfTheContinuation) {
  for (const char* text : kTexts) {
    const std::vector<int32_t> ids = tok_->Encode(text, /*add_bos=*/true, /*add_eos=*/false);
    for (size_t split = 1; split < ids.size(); split += 3) {
      const std::vector<int32_t> prompt(ids.begin(), ids.begin() + static_cast<long>(split));
      const std::string prompt_text = tok_->Decode(prompt);
      const std::string full_text = tok_->Decode(ids);
      if (full_text.compare(0, prompt_text.size(), prompt_text) != 0) continue;  // split in a char
      TextStream stream(*tok_, prompt);
      std::string streamed;
      for (size_t i = split; i < ids.size(); ++i) {
        const std::string piece = stream.Push(ids[i]);
        EXPECT_TRUE(IsValidUtf8(piece));
        streamed += piece;
      }
      streamed += stream.Flush();
      EXPECT_EQ(prompt_text + streamed, full_text) << "split at " << split << " of: " << text;
    }
  }
}

TEST_F(TextStreamTest, IncompleteCharacterIsHeldUntilItCompletes) {
  // "𓀀" (4 bytes) has no piece of its own: it is four byte-fallback tokens.
  std::vector<int32_t> ids = tok_->Encode("𓀀", false, false);
  std::vector<int32_t> bytes;
  for (int32_t id : ids) {
    if (tok_->IsByteFallback(id)) bytes.push_back(id);
  }
  ASSERT_EQ(bytes.size(), 4u);
  TextStream stream(*tok_);
  EXPECT_EQ(stream.Push(bytes[0]), "");
  EXPECT_EQ(stream.Push(bytes[1]), "");
  EXPECT_EQ(stream.Push(bytes[2]), "");
  EXPECT_EQ(stream.Push(bytes[3]), "𓀀");
  EXPECT_EQ(stream.Flush(), "");
}

TEST_F(TextStreamTest, FlushEmitsADanglingPrefixAsReplacementCharacters) {
  std::vector<int32_t> ids = tok_->Encode("𓀀", false, false);
  TextStream stream(*tok_);
  std::string out;
  for (int32_t id : ids) {
    if (tok_->IsByteFallback(id)) {
      out += stream.Push(id);
      break;  // the sequence ends after the first byte of the character
    }
  }
  out += stream.Flush();
  EXPECT_EQ(out, "\xEF\xBF\xBD");  // what Decode gives for the lone byte: U+FFFD
}

// Adversarial sequences, as a sampler can produce them: byte-fallback runs (whole characters,
// dangling lead bytes, stray continuation bytes), control tokens, <unk>, lone "▁" pieces and
// ordinary pieces in random order. The oracle is still the full decode.
TEST_F(TextStreamTest, RandomTokenSequencesMatchTheFullDecode) {
  auto byte = [&](unsigned value) {
    char piece[8];
    std::snprintf(piece, sizeof(piece), "<0x%02X>", value);
    return tok_->PieceToId(piece);
  };
  const std::vector<std::string> characters = {"\xF0\x9F\x98\x80", "\xE2\x82\xAC", "\xC3\xA9",
                                               "\xF0\x93\x80\x80"};
  const int32_t space = tok_->PieceToId("\xE2\x96\x81");  // "▁"
  std::mt19937_64 rng(3);
  for (int trial = 0; trial < 500; ++trial) {
    std::vector<int32_t> ids;
    const size_t length = 1 + rng() % 40;
    while (ids.size() < length) {
      switch (rng() % 7) {
        case 0:
          for (unsigned char c : characters[rng() % characters.size()]) ids.push_back(byte(c));
          break;
        case 1:
          ids.push_back(byte(static_cast<unsigned>(rng() % 256)));
          break;
        case 2:
          ids.push_back(static_cast<int32_t>(rng() % 3));  // <unk>, <s>, </s>
          break;
        case 3:
          ids.push_back(space);
          break;
        default:
          ids.push_back(static_cast<int32_t>(259 + rng() % (tok_->vocab_size() - 259)));
      }
    }
    TextStream stream(*tok_);
    std::string streamed;
    for (size_t i = 0; i < ids.size(); ++i) {
      const std::string piece = stream.Push(ids[i]);
      ASSERT_TRUE(IsValidUtf8(piece)) << "trial " << trial << " token " << i;
      streamed += piece;
      // Whatever was emitted is final: a prefix of the decode of everything so far.
      const std::string so_far = tok_->Decode({ids.begin(), ids.begin() + i + 1});
      ASSERT_EQ(so_far.compare(0, streamed.size(), streamed), 0)
          << "trial " << trial << " token " << i << ": '" << streamed << "' vs '" << so_far << "'";
    }
    streamed += stream.Flush();
    ASSERT_EQ(streamed, tok_->Decode(ids)) << "trial " << trial;
  }
}

}  // namespace
}  // namespace moeserve::runtime
