// When a sequence ends, and which of its text may be streamed: stop strings, stop token ids, EOS
// and max_tokens, with OpenAI's semantics.
//
//   - A stop string ends the sequence; the output is the text before it (the stop string and
//     anything after it are dropped). Stop strings may span tokens. Text that could still become
//     the start of a stop string is held back, so no part of a stop string is ever streamed; it is
//     released as soon as it cannot (or when the sequence ends another way). Among several stop
//     strings the one completed first in the text wins (earliest end; on a tie the longer), so
//     the result does not depend on how the text was split into tokens.
//   - EOS (unless ignore_eos) or a token in stop_token_ids ends the sequence; that token adds no
//     text (vLLM v1; EOS decodes to nothing anyway). stop_token_ids apply even with ignore_eos.
//   - The max_tokens-th token ends the sequence with its text, unless that text completes a stop
//     string (then the stop string wins, as in vLLM).
// finish_reason: "length" for max_tokens, "stop" for the rest.
//
// Usage per sequence (engine thread), with TextStream giving only whole UTF-8 characters:
//   StopCheckResult r = stop.Append(token, text_stream.Push(token));
//   stream r.text; if (r.finished()) finish with FinishReasonFor(r.cause).
// Bytes of an unfinished character that TextStream still holds when the sequence ends are
// dropped, as in vLLM (they could only print as U+FFFD).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/sampling/sampler.h"

namespace moeserve::runtime {

// Strict UTF-8 (Unicode table 3-7: no overlong forms, surrogates or code points past U+10FFFF).
// Stop strings must be valid: then a held-back prefix or a cut before a stop string always falls
// on a character boundary.
bool IsValidUtf8(std::string_view text);

enum class StopCause { kNone, kEosToken, kStopTokenId, kStopString, kMaxTokens };

// The OpenAI finish_reason for a cause: "stop", "length", or "" for kNone.
const char* FinishReasonFor(StopCause cause);

struct StopCheckResult {
  // Text to stream now: never contains any part of a stop string; whole UTF-8 characters when
  // the input text and the stop strings are.
  std::string text;
  StopCause cause = StopCause::kNone;
  std::string stop_string;     // the stop string matched (kStopString)
  int32_t stop_token_id = -1;  // the token that stopped (kEosToken, kStopTokenId)

  bool finished() const { return cause != StopCause::kNone; }
};

// One sequence's stop state. Not thread-safe; one thread (the engine loop) calls it.
class StopChecker {
 public:
  // `max_new_tokens` >= 1: the resolved limit (SamplingParams::ResolveMaxTokens).
  // REQUIRES: params.Validate().ok().
  StopChecker(const SamplingParams& params, int32_t eos_token_id, int64_t max_new_tokens);

  // One call per generated token, in order; `text` is the newly final text the token completed
  // (TextStream::Push). After a finished result, further calls return that result's cause again
  // with no text.
  StopCheckResult Append(int32_t token, std::string_view text);

  // Releases the held-back text when the sequence ends for a reason the checker does not see
  // (cancelled, context full). Empty after a finished result.
  std::string Flush();

  int64_t num_tokens() const { return num_tokens_; }
  // Bytes held back because they could be the start of a stop string.
  size_t held_bytes() const { return held_.size(); }

 private:
  // Length of the longest suffix of `text` that is a proper prefix of some stop string.
  size_t PossibleStopPrefix(std::string_view text) const;

  std::vector<std::string> stop_strings_;
  std::vector<int32_t> stop_token_ids_;
  int32_t eos_token_id_;
  bool ignore_eos_;
  int64_t max_new_tokens_;
  int64_t num_tokens_ = 0;
  std::string held_;  // text not streamed yet (a possible stop-string prefix)
  StopCause finished_ = StopCause::kNone;
};

}  // namespace moeserve::runtime
