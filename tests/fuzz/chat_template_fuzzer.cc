// libFuzzer harness: EncodeChat (the Mistral v1 chat template) over the embedded tokenizer.
// Input: messages separated by 0x1E (record separator); each is "role:content" (no ':' means an
// empty role). Oracle: no crash, throw or abort; an accepted chat starts with BOS, ends with the
// "[/INST]" of its last user turn's encoding, and holds only ids in the vocabulary.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/tokenizer/chat_template.h"
#include "runtime/tokenizer/tokenizer.h"

namespace {

const moeserve::runtime::Tokenizer& Tok() {
  static const moeserve::runtime::Tokenizer* tok = [] {
    auto loaded = moeserve::runtime::Tokenizer::LoadEmbedded();
    if (!loaded.ok()) std::abort();
    return loaded->release();
  }();
  return *tok;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Chats longer than this only repeat what shorter ones reach, slower.
  if (size > 4096) return 0;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  std::vector<moeserve::runtime::ChatMessage> messages;
  size_t start = 0;
  while (start <= input.size()) {
    size_t end = input.find('\x1e', start);
    if (end == std::string_view::npos) end = input.size();
    const std::string_view record = input.substr(start, end - start);
    const size_t colon = record.find(':');
    moeserve::runtime::ChatMessage m;
    if (colon != std::string_view::npos) {
      m.role = std::string(record.substr(0, colon));
      m.content = std::string(record.substr(colon + 1));
    } else {
      m.content = std::string(record);
    }
    messages.push_back(std::move(m));
    start = end + 1;
  }
  const auto& tok = Tok();
  auto ids = moeserve::runtime::EncodeChat(tok, messages);
  if (!ids.ok()) return 0;
  if (ids->empty() || ids->front() != tok.bos_id()) std::abort();
  static const std::vector<int32_t> kInstEnd = tok.Encode(" [/INST]", false, false);
  // " [/INST]" encodes as "▁[", "/", "INST", "]"; the reply follows it.
  const std::vector<int32_t> tail = {kInstEnd.end() - 4, kInstEnd.end()};
  if (ids->size() < 5 || !std::equal(tail.begin(), tail.end(), ids->end() - 4)) std::abort();
  for (int32_t id : *ids) {
    if (id < 0 || id >= tok.vocab_size()) std::abort();
  }
  return 0;
}
