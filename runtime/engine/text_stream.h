// Incremental detokenization for streaming: emits only text that is final, never a partial UTF-8
// character (byte-fallback tokens can split one character over several tokens).
//
// Like vLLM's detokenize_incrementally: each Push decodes only a short window of tokens
// (from prefix_offset_) and returns what it adds beyond the already-emitted part of that window,
// so the cost per token does not grow with the output length. Decoding relative to the last
// prompt tokens keeps the leading space of the first generated word (" John" after "my name is"),
// which SentencePiece strips at the start of a text.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/tokenizer/tokenizer.h"

namespace moeserve::runtime {

class TextStream {
 public:
  // `context`: the prompt's tokens (only the last few are kept), or empty.
  explicit TextStream(const Tokenizer& tokenizer, const std::vector<int32_t>& context = {});
  // Adds a token; returns the newly final text (possibly empty).
  std::string Push(int32_t token);
  // Text held back at the end (an incomplete character); call once the sequence is done.
  std::string Flush();

 private:
  std::string DecodeRange(size_t begin, size_t end) const;

  const Tokenizer& tokenizer_;
  std::vector<int32_t> tokens_;  // context tail followed by the generated tokens
  size_t prefix_offset_ = 0;     // start of the decode window
  size_t read_offset_ = 0;       // tokens before this have been emitted
};

}  // namespace moeserve::runtime
