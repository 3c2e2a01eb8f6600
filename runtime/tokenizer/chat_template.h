// The Mistral v1 instruct chat template (Mistral 7B Instruct v0.1, Mixtral 8x7B Instruct),
// token-identical to mistral-common's
//   MistralTokenizer.v1().encode_chat_completion(ChatCompletionRequest(messages=...)).tokens
// (oracle: tests/data/tokenizer/chat.json).
//
// What mistral-common v1 does, and so what EncodeChat does:
//   1. Validate (ValidateChat below; the first failing rule wins, in this order):
//      - at least one message;
//      - a lone message must be user or system;
//      - with more than one message, the last must not be assistant (we have no "prefix"
//        continuation); a trailing system message is allowed;
//      - an assistant message may not be followed by a system message;
//      - assistant messages must have non-empty content.
//   2. Normalize:
//      - system prompt = the non-empty system contents joined with "\n\n"; system messages are
//        then dropped from the list (but still split the runs below);
//      - consecutive messages of the same role merge into one, their non-empty contents joined
//        with "\n\n";
//      - if the first remaining message is not a user message (or none remain), an empty user
//        message is put first.
//   3. Encode: [<s>], then per message
//      - user:      Encode("[INST] " + content + " [/INST]") with no BOS/EOS; for the first user
//                   message content = system_prompt + "\n\n" + content when a system prompt exists;
//      - assistant: Encode(content) with no BOS, then </s>.
//      "[INST]" / "[/INST]" are plain text (▁[ INST ] / ▁[ / INST ]), not control tokens, and every
//      Encode adds SentencePiece's "▁" dummy prefix.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/tokenizer/tokenizer.h"

namespace moeserve::runtime {

struct ChatMessage {
  std::string role;  // system | user | assistant
  std::string content;
};

// The checks of step 1 above. InvalidArgument naming the message index, with mistral-common's
// own wording (e.g. "chat messages[2]: Unexpected role 'system' after role 'assistant'"); roles
// other than system / user / assistant (including "tool": v1 has no tool calls) are rejected.
absl::Status ValidateChat(const std::vector<ChatMessage>& messages);

// Prompt token ids for `messages` (validated first), starting with BOS and ending with the
// last user turn's "[/INST]" (the model generates the assistant reply next).
absl::StatusOr<std::vector<int32_t>> EncodeChat(const Tokenizer& tok,
                                                const std::vector<ChatMessage>& messages);

}  // namespace moeserve::runtime
