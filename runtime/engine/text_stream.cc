#include "runtime/engine/text_stream.h"

namespace moeserve::runtime {
namespace {

// Length of the longest prefix of s that does not end inside a UTF-8 sequence or in U+FFFD
// (SentencePiece decodes a dangling byte-fallback prefix as the replacement character).
size_t CompletePrefix(const std::string& s) {
  static const std::string kReplacement = "\xEF\xBF\xBD";
  size_t n = s.size();
  if (n >= 3 && s.compare(n - 3, 3, kReplacement) == 0) return n - 3;
  // Walk back over continuation bytes to the last lead byte; keep it only if complete.
  size_t i = n;
  while (i > 0 && (static_cast<unsigned char>(s[i - 1]) & 0xC0) == 0x80) --i;
  if (i == 0) return n;
  const unsigned char lead = static_cast<unsigned char>(s[i - 1]);
  size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
  return (n - (i - 1) >= need) ? n : i - 1;
}

}  // namespace

std::string TextStream::Push(int32_t token) {
  tokens_.push_back(token);
  const std::string text = tokenizer_.Decode(tokens_);
  const size_t complete = CompletePrefix(text);
  if (complete <= emitted_) return "";
  std::string out = text.substr(emitted_, complete - emitted_);
  emitted_ = complete;
  return out;
}

std::string TextStream::Flush() {
  const std::string text = tokenizer_.Decode(tokens_);
  std::string out = text.size() > emitted_ ? text.substr(emitted_) : "";
  emitted_ = text.size();
  return out;
}

}  // namespace moeserve::runtime
