#include "server/api/api_request.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string_view>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/base/status_macros.h"
#include "runtime/sampling/stop_checker.h"

namespace moeserve::server::api {
namespace {

constexpr char kParamPayload[] = "moeserve.dev/param";

absl::Status CheckUtf8(const std::string& text, const std::string& param) {
  if (!runtime::IsValidUtf8(text)) return InvalidParam(param, param + " is not valid UTF-8");
  return absl::OkStatus();
}

// The field a SamplingParams::Validate message names: its first word, up to "=", "[" or " "
// ("top_p must be ...", "stop[2] must ...", "top_logprobs=3 needs ...").
std::string LeadingField(const std::string& message) {
  return message.substr(0, message.find_first_of(" =["));
}

absl::Status CheckTokenIds(const std::vector<int32_t>& ids, const runtime::Tokenizer& tok,
                           const std::string& param) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= tok.vocab_size()) {
      return InvalidParam(
          param, absl::StrCat(param, "[", i, "]=", ids[i], " is outside the vocabulary [0, ",
                              tok.vocab_size(), ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> EncodePrompt(const ApiRequest& r,
                                                  const runtime::Tokenizer& tok) {
  const bool chat = r.kind == RequestKind::kChat;
  const int forms =
      int{r.prompt_text.has_value()} + int{r.messages.has_value()} + int{r.prompt_ids.has_value()};
  if (forms == 0) {
    return chat ? InvalidParam("messages", "messages is required")
                : InvalidParam("prompt", "prompt is required");
  }
  if (forms > 1) {
    return InvalidParam("prompt", "give exactly one of prompt text, chat messages or token ids");
  }
  if (r.prompt_text) {
    MOESERVE_RETURN_IF_ERROR(CheckUtf8(*r.prompt_text, "prompt"));
    if (r.prompt_text->empty()) return InvalidParam("prompt", "prompt must not be empty");
    return tok.Encode(*r.prompt_text, /*add_bos=*/true, /*add_eos=*/false);
  }
  if (r.prompt_ids) {
    if (r.prompt_ids->empty()) return InvalidParam("prompt", "prompt must not be empty");
    MOESERVE_RETURN_IF_ERROR(CheckTokenIds(*r.prompt_ids, tok, "prompt"));
    return *r.prompt_ids;
  }
  if (r.messages->empty()) return InvalidParam("messages", "messages must not be empty");
  for (size_t i = 0; i < r.messages->size(); ++i) {
    MOESERVE_RETURN_IF_ERROR(
        CheckUtf8((*r.messages)[i].content, absl::StrCat("messages[", i, "].content")));
  }
  absl::StatusOr<std::vector<int32_t>> ids = runtime::EncodeChat(tok, *r.messages);
  if (!ids.ok()) return InvalidParam("messages", std::string(ids.status().message()));
  return ids;
}

}  // namespace

absl::Status InvalidParam(const std::string& param, const std::string& message) {
  absl::Status status = absl::InvalidArgumentError(message);
  status.SetPayload(kParamPayload, absl::Cord(param));
  return status;
}

std::string ParamOf(const absl::Status& status) {
  auto param = status.GetPayload(kParamPayload);  // absl::optional in Debian's abseil
  return param ? std::string(*param) : std::string();
}

absl::StatusOr<runtime::GenerationRequest> BuildGenerationRequest(const ApiRequest& r,
                                                                  const runtime::Tokenizer& tok,
                                                                  const ApiLimits& limits) {
  if (r.model && !r.model->empty() && *r.model != limits.served_model_name) {
    return InvalidParam(
        "model", absl::StrCat("The model '", *r.model, "' does not exist; this server serves '",
                              limits.served_model_name, "'"));
  }
  runtime::GenerationRequest out;
  out.request_id = r.request_id;
  // A completion continues the prompt's text (its first word keeps its space); a chat answer is
  // text of its own.
  out.text_continues_prompt = r.kind != RequestKind::kChat;
  runtime::SamplingParams& s = out.sampling;
  if (r.max_tokens) s.max_tokens = *r.max_tokens;
  if (r.temperature) s.temperature = static_cast<float>(*r.temperature);
  if (r.top_p) s.top_p = static_cast<float>(*r.top_p);
  if (r.top_k) s.top_k = static_cast<int32_t>(std::clamp<int64_t>(*r.top_k, -2, INT32_MAX));
  if (r.min_p) s.min_p = static_cast<float>(*r.min_p);
  if (r.repetition_penalty) s.repetition_penalty = static_cast<float>(*r.repetition_penalty);
  if (r.frequency_penalty) s.frequency_penalty = static_cast<float>(*r.frequency_penalty);
  if (r.presence_penalty) s.presence_penalty = static_cast<float>(*r.presence_penalty);
  if (r.seed) s.seed = *r.seed;
  if (r.n) s.n = static_cast<int32_t>(std::clamp<int64_t>(*r.n, INT32_MIN, INT32_MAX));
  s.logprobs = r.logprobs;
  if (r.top_logprobs) {
    s.top_logprobs = static_cast<int32_t>(std::clamp<int64_t>(*r.top_logprobs, -1, INT32_MAX));
  }
  s.stop = r.stop;
  s.stop_token_ids = r.stop_token_ids;
  s.ignore_eos = r.ignore_eos;
  if (absl::Status valid = s.Validate(); !valid.ok()) {
    const std::string message(valid.message());
    return InvalidParam(LeadingField(message), message);
  }
  MOESERVE_RETURN_IF_ERROR(CheckTokenIds(r.stop_token_ids, tok, "stop_token_ids"));
  if (r.router_skew && !r.router_skew->empty()) {
    absl::StatusOr<parallel::SkewProfile> skew = parallel::ParseSkewProfile(*r.router_skew);
    absl::Status valid = skew.status();
    if (valid.ok() && limits.num_experts > 0) {
      valid = parallel::ValidateSkewProfile(*skew, limits.num_experts);
    }
    if (!valid.ok()) {
      return InvalidParam("router_skew", absl::StrCat("router_skew: ", valid.message()));
    }
    out.router_skew = std::make_shared<const parallel::SkewProfile>(*std::move(skew));
  }

  MOESERVE_ASSIGN_OR_RETURN(out.prompt, EncodePrompt(r, tok));
  const int64_t prompt_len = static_cast<int64_t>(out.prompt.size());
  // Completions without max_tokens generate 16 tokens (OpenAI's default), chat the rest of the
  // context (vLLM's).
  if (!s.max_tokens && r.kind == RequestKind::kCompletion) {
    s.max_tokens = std::max<int64_t>(1, std::min<int64_t>(16, limits.max_model_len - prompt_len));
  }
  absl::StatusOr<int64_t> max_tokens = s.ResolveMaxTokens(prompt_len, limits.max_model_len);
  if (!max_tokens.ok()) {
    const std::string message(max_tokens.status().message());
    const std::string field = LeadingField(message) == "max_tokens"
                                  ? "max_tokens"
                                  : (r.kind == RequestKind::kChat ? "messages" : "prompt");
    return InvalidParam(field, message);
  }
  s.max_tokens = *max_tokens;
  out.return_routing = r.return_routing;
  if (absl::Status bound =
          runtime::CheckRoutingBound(out, limits.num_layers, limits.max_routing_entries);
      !bound.ok()) {
    return InvalidParam("return_routing", std::string(bound.message()));
  }
  return out;
}

std::string TokenText(const runtime::Tokenizer& tok, int32_t id) {
  std::string piece = tok.IdToPiece(id);
  if (tok.IsByteFallback(id) && piece.size() == 6) {  // "<0xAB>"
    const int byte = std::stoi(piece.substr(3, 2), nullptr, 16);
    if (byte < 0x80) return std::string(1, static_cast<char>(byte));
    return piece;
  }
  if (tok.IsControl(id)) return piece;
  std::string out;
  static constexpr std::string_view kSpace = "\xE2\x96\x81";  // U+2581 "▁"
  for (size_t i = 0; i < piece.size();) {
    if (piece.compare(i, kSpace.size(), kSpace) == 0) {
      out += ' ';
      i += kSpace.size();
    } else {
      out += piece[i++];
    }
  }
  return out;
}

}  // namespace moeserve::server::api
