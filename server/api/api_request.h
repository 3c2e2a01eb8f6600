// A completion request as the front ends receive it, and its one translation into the engine's
// GenerationRequest. The HTTP (OpenAI JSON) and gRPC front ends both parse into ApiRequest and
// call BuildGenerationRequest, so the same bad value gets the same message on either: the
// message names the field as the client wrote it ("top_p must be in (0, 1], got 1.5").
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/engine/request.h"
#include "runtime/tokenizer/chat_template.h"
#include "runtime/tokenizer/tokenizer.h"

namespace moeserve::server::api {

// Which endpoint the request came through: it decides the default max_tokens (16 for
// completions, like OpenAI; the rest of the context for chat, like vLLM).
enum class RequestKind { kCompletion, kChat };

// Unset optionals take the engine's defaults. Exactly one prompt form is set.
struct ApiRequest {
  RequestKind kind = RequestKind::kCompletion;
  std::optional<std::string> model;  // checked against the served name when set
  std::optional<std::string> prompt_text;
  std::optional<std::vector<runtime::ChatMessage>> messages;
  std::optional<std::vector<int32_t>> prompt_ids;

  std::optional<int64_t> max_tokens;
  std::optional<double> temperature;
  std::optional<double> top_p;
  std::optional<int64_t> top_k;
  std::optional<double> min_p;
  std::optional<double> repetition_penalty;
  std::optional<double> frequency_penalty;
  std::optional<double> presence_penalty;
  std::optional<uint64_t> seed;
  std::optional<int64_t> n;
  bool logprobs = false;
  std::optional<int64_t> top_logprobs;
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  // Load testing (extension, like vLLM's extra fields): a skew profile for this request's tokens
  // (parallel/moe/skew_profile.h syntax, e.g. "zipf:1.2"; docs/serving.md).
  std::optional<std::string> router_skew;
  // Routing traces (extension): the experts and weights chosen for every token in every layer,
  // returned with the response (server/api/routing_json.h). Bounded by
  // ApiLimits::max_routing_entries.
  bool return_routing = false;
  std::string request_id;
};

// What the server accepts; fixed at start-up. The sampling limits (n, stop strings,
// top_logprobs) are SamplingParams::Validate's.
struct ApiLimits {
  std::string served_model_name;
  int64_t max_model_len = 0;
  int64_t num_experts = 0;              // for router_skew's expert range; 0: left to Engine::Submit
  int64_t num_layers = 0;               // for return_routing's bound
  int64_t max_routing_entries = 65536;  // EngineOptions::max_routing_entries
};

// InvalidArgument naming `param`; the name travels as a status payload so the HTTP error body
// can fill OpenAI's "param" field.
absl::Status InvalidParam(const std::string& param, const std::string& message);
// The param of an InvalidParam status; "" when it names none.
std::string ParamOf(const absl::Status& status);

// Validates `request` and tokenizes its prompt. InvalidArgument (via InvalidParam) for every bad
// input: model name, missing / empty / non-UTF-8 prompt, prompt past max_model_len, max_tokens
// <= 0 or prompt + max_tokens past max_model_len, token ids outside the vocabulary, and whatever
// SamplingParams::Validate refuses (ranges, too many stop strings), with its message.
absl::StatusOr<runtime::GenerationRequest> BuildGenerationRequest(const ApiRequest& request,
                                                                  const runtime::Tokenizer& tok,
                                                                  const ApiLimits& limits);

// A token as clients see it in logprobs: the piece with SentencePiece's "▁" as a space and a
// byte-fallback piece ("<0x0A>") as its byte when that byte is ASCII.
std::string TokenText(const runtime::Tokenizer& tok, int32_t id);

}  // namespace moeserve::server::api
