#include "runtime/engine/text_stream.h"

#include <algorithm>

namespace moeserve::runtime {
namespace {

// Prompt tokens kept as decode context: enough for SentencePiece's whitespace handling to see the
// word before the first generated token.
constexpr size_t kContextTokens = 6;

// SentencePiece decodes a dangling byte-fallback prefix of a character as U+FFFD; while the text
// ends in one, more tokens may complete the character.
bool EndsIncomplete(const std::string& s) {
  static const std::string kReplacement = "\xEF\xBF\xBD";
  return s.size() >= 3 && s.compare(s.size() - 3, 3, kReplacement) == 0;
}

}  // namespace

TextStream::TextStream(const Tokenizer& tokenizer, const std::vector<int32_t>& context)
    : tokenizer_(tokenizer) {
  const size_t keep = std::min(context.size(), kContextTokens);
  tokens_.assign(context.end() - static_cast<std::ptrdiff_t>(keep), context.end());
  read_offset_ = tokens_.size();
}

std::string TextStream::DecodeRange(size_t begin, size_t end) const {
  return tokenizer_.Decode(
      std::vector<int32_t>(tokens_.begin() + static_cast<std::ptrdiff_t>(begin),
                           tokens_.begin() + static_cast<std::ptrdiff_t>(end)));
}

std::string TextStream::Push(int32_t token) {
  tokens_.push_back(token);
  const std::string prefix_text = DecodeRange(prefix_offset_, read_offset_);
  const std::string new_text = DecodeRange(prefix_offset_, tokens_.size());
  if (new_text.size() <= prefix_text.size() || EndsIncomplete(new_text)) return "";
  prefix_offset_ = read_offset_;
  read_offset_ = tokens_.size();
  return new_text.substr(prefix_text.size());
}

std::string TextStream::Flush() {
  const std::string prefix_text = DecodeRange(prefix_offset_, read_offset_);
  const std::string new_text = DecodeRange(prefix_offset_, tokens_.size());
  prefix_offset_ = read_offset_ = tokens_.size();
  return new_text.size() > prefix_text.size() ? new_text.substr(prefix_text.size()) : "";
}

}  // namespace moeserve::runtime
