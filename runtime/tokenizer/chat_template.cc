// Mirrors mistral-common 1.13.1: protocol/instruct/validator.py (MistralRequestValidator, test
// mode, as MistralTokenizer.v1() builds it), protocol/instruct/normalize.py
// (InstructRequestNormalizer) and tokens/tokenizers/instruct.py (InstructTokenizerV1). Error
// strings after the "chat messages[i]: " prefix are mistral-common's, so a client sees the same
// words from moeserve as from the reference stack.
#include "runtime/tokenizer/chat_template.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/base/status_macros.h"

namespace moeserve::runtime {
namespace {

enum class Role { kSystem, kUser, kAssistant };

const char* RoleName(Role role) {
  switch (role) {
    case Role::kSystem:
      return "system";
    case Role::kUser:
      return "user";
    case Role::kAssistant:
      return "assistant";
  }
  return "?";
}

absl::Status MessageError(size_t index, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("chat messages[", index, "]: ", what));
}

absl::StatusOr<std::vector<Role>> ParseRoles(const std::vector<ChatMessage>& messages) {
  std::vector<Role> roles;
  roles.reserve(messages.size());
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& role = messages[i].role;
    if (role == "system") {
      roles.push_back(Role::kSystem);
    } else if (role == "user") {
      roles.push_back(Role::kUser);
    } else if (role == "assistant") {
      roles.push_back(Role::kAssistant);
    } else if (role == "tool") {
      return MessageError(i,
                          "role 'tool' is not supported: the Mistral v1 chat template has no "
                          "tool calls (mistral-common: \"Tools not implemented for tokenizer "
                          "V1\")");
    } else {
      return MessageError(
          i, absl::StrCat("unknown role '", role, "' (expected system, user or assistant)"));
    }
  }
  return roles;
}

// MistralRequestValidator.validate_messages: structure (count, last role, order) over the whole
// list first, then per-message content, exactly in mistral-common's order so the same error wins.
absl::Status ValidateRoles(const std::vector<ChatMessage>& messages,
                           const std::vector<Role>& roles) {
  if (messages.empty()) {
    return absl::InvalidArgumentError("chat: Conversation must have at least one message");
  }
  if (roles.size() == 1 && roles[0] == Role::kAssistant) {
    return MessageError(0, "Conversation must start with a user message or system message");
  }
  // Only a final assistant message is refused (mistral-common allows one with prefix=True, which
  // ChatMessage cannot express); a final system message is accepted and merged like any other.
  if (roles.size() > 1 && roles.back() == Role::kAssistant) {
    return MessageError(roles.size() - 1,
                        "Expected last role User or Tool (or Assistant with prefix) for serving "
                        "but got assistant");
  }
  // Allowed successors: system -> any, user -> any, assistant -> assistant | user.
  for (size_t i = 1; i < roles.size(); ++i) {
    if (roles[i - 1] == Role::kAssistant && roles[i] == Role::kSystem) {
      return MessageError(i, absl::StrCat("Unexpected role '", RoleName(roles[i]), "' after role '",
                                          RoleName(roles[i - 1]), "'"));
    }
  }
  for (size_t i = 0; i < roles.size(); ++i) {
    if (roles[i] == Role::kAssistant && messages[i].content.empty()) {
      return MessageError(
          i, "Assistant message must have either content or tool_calls, but not both.");
    }
  }
  return absl::OkStatus();
}

struct NormalizedMessage {
  Role role;
  std::string content;
};

// Appends `text` to `*joined` with mistral-common's "\n\n" separator; empty pieces are skipped
// and never produce a separator (_aggregate_content_chunks_impl).
void AppendJoined(const std::string& text, std::string* joined) {
  if (text.empty()) return;
  if (!joined->empty()) joined->append("\n\n");
  joined->append(text);
}

// InstructRequestNormalizer.from_chat_completion_request for text-only messages. Returns the
// user/assistant list (first element always a user message) and sets *system_prompt.
std::vector<NormalizedMessage> Normalize(const std::vector<ChatMessage>& messages,
                                         const std::vector<Role>& roles,
                                         std::string* system_prompt) {
  system_prompt->clear();
  std::vector<NormalizedMessage> normalized;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (roles[i] == Role::kSystem) {
      AppendJoined(messages[i].content, system_prompt);
      continue;
    }
    // A run continues only if the previous *input* message had the same role: a system message
    // between two user messages leaves them as two separate [INST] blocks.
    const bool continues_run = i > 0 && roles[i - 1] == roles[i];
    if (!continues_run) normalized.push_back({roles[i], std::string()});
    AppendJoined(messages[i].content, &normalized.back().content);
  }
  if (normalized.empty() || normalized.front().role != Role::kUser) {
    normalized.insert(normalized.begin(), NormalizedMessage{Role::kUser, std::string()});
  }
  return normalized;
}

void Append(const std::vector<int32_t>& ids, std::vector<int32_t>* tokens) {
  tokens->insert(tokens->end(), ids.begin(), ids.end());
}

}  // namespace

absl::Status ValidateChat(const std::vector<ChatMessage>& messages) {
  MOESERVE_ASSIGN_OR_RETURN(const std::vector<Role> roles, ParseRoles(messages));
  return ValidateRoles(messages, roles);
}

absl::StatusOr<std::vector<int32_t>> EncodeChat(const Tokenizer& tok,
                                                const std::vector<ChatMessage>& messages) {
  MOESERVE_ASSIGN_OR_RETURN(const std::vector<Role> roles, ParseRoles(messages));
  MOESERVE_RETURN_IF_ERROR(ValidateRoles(messages, roles));

  std::string system_prompt;
  const std::vector<NormalizedMessage> normalized = Normalize(messages, roles, &system_prompt);

  std::vector<int32_t> tokens = {tok.bos_id()};
  for (size_t i = 0; i < normalized.size(); ++i) {
    const NormalizedMessage& message = normalized[i];
    if (message.role == Role::kUser) {
      // InstructTokenizerV1.encode_user_message: the system prompt goes into the first user
      // message, which Normalize guarantees is normalized[0].
      const bool with_system = i == 0 && !system_prompt.empty();
      const std::string text =
          with_system ? absl::StrCat("[INST] ", system_prompt, "\n\n", message.content, " [/INST]")
                      : absl::StrCat("[INST] ", message.content, " [/INST]");
      Append(tok.Encode(text, /*add_bos=*/false, /*add_eos=*/false), &tokens);
    } else {
      // InstructTokenizerV1.encode_assistant_message: content, then EOS ends the turn.
      Append(tok.Encode(message.content, /*add_bos=*/false, /*add_eos=*/true), &tokens);
    }
  }
  return tokens;
}

}  // namespace moeserve::runtime
