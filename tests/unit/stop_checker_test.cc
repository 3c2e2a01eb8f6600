// StopChecker vs a naive oracle that sees the whole text at once: for random texts, stop strings
// and random splits into per-token chunks, the streamed text must equal the oracle's output, and
// every streamed prefix must be a prefix of it (so no part of a stop string ever leaks out).
// Also: EOS / stop_token_ids / max_tokens and their finish reasons, and the whole path from the
// real tokenizer through TextStream with multi-byte characters.
#include "runtime/sampling/stop_checker.h"

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/engine/text_stream.h"
#include "runtime/tokenizer/tokenizer.h"

namespace moeserve::runtime {
namespace {

constexpr int32_t kEos = 2;

// The text before the stop string that is completed first (earliest end, then the longer),
// or the whole text when none occurs.
struct OracleResult {
  std::string text;
  bool stopped = false;
};
OracleResult NaiveStop(const std::string& text, const std::vector<std::string>& stops) {
  for (size_t end = 1; end <= text.size(); ++end) {
    // The longest stop string ending at `end`.
    const std::string* best = nullptr;
    for (const std::string& s : stops) {
      if (s.size() <= end && text.compare(end - s.size(), s.size(), s) == 0 &&
          (best == nullptr || s.size() > best->size())) {
        best = &s;
      }
    }
    if (best != nullptr) return {text.substr(0, end - best->size()), true};
  }
  return {text, false};
}

SamplingParams WithStops(std::vector<std::string> stops) {
  SamplingParams p;
  p.stop = std::move(stops);
  return p;
}

TEST(StopCheckerTest, RandomSplitsMatchTheWholeTextOracle) {
  std::mt19937_64 rng(17);
  const std::string alphabet = "abc";
  int stopped_cases = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::vector<std::string> stops(1 + rng() % 3);
    for (std::string& s : stops) {
      s.resize(1 + rng() % 4);
      for (char& ch : s) ch = alphabet[rng() % alphabet.size()];
    }
    std::string text(rng() % 25, ' ');
    for (char& ch : text) ch = alphabet[rng() % alphabet.size()];
    const OracleResult expected = NaiveStop(text, stops);

    StopChecker checker(WithStops(stops), kEos, /*max_new_tokens=*/1000);
    std::string streamed;
    bool finished = false;
    for (size_t pos = 0; pos < text.size() && !finished;) {
      const size_t len = std::min(text.size() - pos, 1 + rng() % 4);  // one token's text
      const StopCheckResult r = checker.Append(100, std::string_view(text).substr(pos, len));
      pos += len;
      streamed += r.text;
      ASSERT_EQ(expected.text.compare(0, streamed.size(), streamed), 0)
          << "streamed text leaves the oracle's output: '" << streamed << "' vs '" << expected.text
          << "' (trial " << trial << ")";
      if (r.finished()) {
        finished = true;
        EXPECT_EQ(r.cause, StopCause::kStopString);
        EXPECT_STREQ(FinishReasonFor(r.cause), "stop");
      }
    }
    if (!finished) streamed += checker.Flush();
    EXPECT_EQ(streamed, expected.text) << "trial " << trial;
    EXPECT_EQ(finished, expected.stopped) << "trial " << trial;
    stopped_cases += expected.stopped;
  }
  EXPECT_GT(stopped_cases, 1000);
}

TEST(StopCheckerTest, HoldsBackOnlyWhatCouldStartAStopString) {
  StopChecker checker(WithStops({"</end>", "##"}), kEos, 100);
  EXPECT_EQ(checker.Append(10, "Hello <").text, "Hello ");
  EXPECT_EQ(checker.held_bytes(), 1u);
  EXPECT_EQ(checker.Append(11, "/e").text, "");
  StopCheckResult r = checker.Append(12, "nx #");  // "</enx" is no stop string; "#" may be
  EXPECT_EQ(r.text, "</enx ");
  EXPECT_FALSE(r.finished());
  r = checker.Append(13, "# tail");
  EXPECT_EQ(r.text, "");
  EXPECT_EQ(r.cause, StopCause::kStopString);
  EXPECT_EQ(r.stop_string, "##");
  // Calls after the end change nothing.
  r = checker.Append(14, "more");
  EXPECT_EQ(r.text, "");
  EXPECT_EQ(r.cause, StopCause::kStopString);
  EXPECT_EQ(checker.Flush(), "");
}

TEST(StopCheckerTest, StopStringCompletedFirstWins) {
  // "bc" completes before "abcd" does, although "abcd" starts earlier.
  StopChecker checker(WithStops({"abcd", "bc"}), kEos, 100);
  const StopCheckResult r = checker.Append(5, "xabcd");
  EXPECT_EQ(r.text, "xa");
  EXPECT_EQ(r.stop_string, "bc");
}

TEST(StopCheckerTest, EosAndStopTokenIdsEndWithoutTheirText) {
  SamplingParams p = WithStops({"STOP"});
  p.stop_token_ids = {77};
  {
    StopChecker checker(p, kEos, 100);
    EXPECT_EQ(checker.Append(10, "a ST").text, "a ");
    const StopCheckResult r = checker.Append(kEos, "ignored");
    EXPECT_EQ(r.cause, StopCause::kEosToken);
    EXPECT_EQ(r.stop_token_id, kEos);
    EXPECT_EQ(r.text, "ST");  // held text was ordinary output after all
    EXPECT_STREQ(FinishReasonFor(r.cause), "stop");
  }
  p.ignore_eos = true;
  {
    StopChecker checker(p, kEos, 100);
    EXPECT_FALSE(checker.Append(kEos, "").finished());
    const StopCheckResult r = checker.Append(77, "x");  // stop ids hold even with ignore_eos
    EXPECT_EQ(r.cause, StopCause::kStopTokenId);
    EXPECT_EQ(r.stop_token_id, 77);
    EXPECT_EQ(r.text, "");
  }
}

TEST(StopCheckerTest, MaxTokensEndsWithLengthUnlessAStopStringCompletes) {
  {
    StopChecker checker(WithStops({"zz"}), kEos, 2);
    EXPECT_FALSE(checker.Append(10, "one z").finished());
    const StopCheckResult r = checker.Append(11, " two");
    EXPECT_EQ(r.cause, StopCause::kMaxTokens);
    EXPECT_STREQ(FinishReasonFor(r.cause), "length");
    EXPECT_EQ(r.text, "z two");
  }
  {
    StopChecker checker(WithStops({"zz"}), kEos, 2);
    EXPECT_EQ(checker.Append(10, "one z").text, "one ");
    const StopCheckResult r = checker.Append(11, "z two");
    EXPECT_EQ(r.cause, StopCause::kStopString);
    EXPECT_EQ(r.text, "");
  }
}

TEST(StopCheckerTest, MultiByteStopStringsCutOnCharacterBoundaries) {
  // "é" is C3 A9; "€" is E2 82 AC. The held text and the cut must never split them.
  StopChecker checker(WithStops({"€!", "é"}), kEos, 100);
  StopCheckResult r = checker.Append(10, "price 5€");
  EXPECT_EQ(r.text, "price 5");
  EXPECT_TRUE(IsValidUtf8(r.text));
  r = checker.Append(11, "? café");
  EXPECT_EQ(r.text, "€? caf");
  EXPECT_EQ(r.stop_string, "é");
}

TEST(StopCheckerTest, IsValidUtf8FollowsTheUnicodeTable) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("a é € \xF0\x9F\x98\x80 \xF4\x8F\xBF\xBF"));
  EXPECT_FALSE(IsValidUtf8("\xC3"));              // truncated
  EXPECT_FALSE(IsValidUtf8("\xA9"));              // lone continuation
  EXPECT_FALSE(IsValidUtf8("\xC0\xAF"));          // overlong "/"
  EXPECT_FALSE(IsValidUtf8("\xE0\x80\xAF"));      // overlong
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));      // surrogate U+D800
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));  // U+110000
  EXPECT_FALSE(IsValidUtf8("\xF0\x9F\x98"));      // 3 of 4 bytes
}

TEST(StopCheckerTest, TokenizerTextStreamAndStopStringsTogether) {
  auto tok = Tokenizer::LoadEmbedded();
  ASSERT_TRUE(tok.ok()) << tok.status();
  // "𓀀" (U+13000) is byte-fallback in the Mixtral vocabulary (four <0x..> tokens); the stop
  // string spans it and the following word.
  const std::string text = "Weather today: sunny \xF0\x93\x80\x80 warm. Tomorrow: rain.";
  const std::vector<int32_t> ids = (*tok)->Encode(text, false, false);
  int byte_tokens = 0;
  for (int32_t id : ids) byte_tokens += (*tok)->IsByteFallback(id);
  ASSERT_GE(byte_tokens, 4);

  SamplingParams p = WithStops({"\xF0\x93\x80\x80 warm"});
  StopChecker checker(p, (*tok)->eos_id(), 1000);
  TextStream stream(**tok);
  std::string streamed;
  StopCheckResult r;
  for (int32_t id : ids) {
    r = checker.Append(id, stream.Push(id));
    EXPECT_TRUE(IsValidUtf8(r.text));
    streamed += r.text;
    if (r.finished()) break;
  }
  EXPECT_EQ(r.cause, StopCause::kStopString);
  EXPECT_EQ(streamed, "Weather today: sunny ");
}

}  // namespace
}  // namespace moeserve::runtime
