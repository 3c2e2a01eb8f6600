// Incremental detokenization for streaming: emits only text that is final, never a partial UTF-8
// character (byte-fallback tokens can split one character over several tokens).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/tokenizer/tokenizer.h"

namespace moeserve::runtime {

class TextStream {
 public:
  explicit TextStream(const Tokenizer& tokenizer) : tokenizer_(tokenizer) {}
  // Adds a token; returns the newly final text (possibly empty).
  std::string Push(int32_t token);
  // Text held back at the end (an incomplete character); call once the sequence is done.
  std::string Flush();

 private:
  const Tokenizer& tokenizer_;
  std::vector<int32_t> tokens_;
  size_t emitted_ = 0;  // bytes of Decode(tokens_) already returned
};

}  // namespace moeserve::runtime
