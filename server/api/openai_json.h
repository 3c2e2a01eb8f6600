// The OpenAI-compatible wire format: request JSON -> ApiRequest, engine updates -> response JSON
// (whole bodies for stream=false, SSE chunk payloads for stream=true), Status -> error body.
// Pure functions over strings; server/http does the I/O.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "runtime/engine/request.h"
#include "runtime/tokenizer/tokenizer.h"
#include "server/api/api_request.h"

namespace moeserve::server::api {

struct OpenAiRequest {
  ApiRequest api;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage: a last chunk with usage
};

// Parses a /v1/completions or /v1/chat/completions body. InvalidArgument naming the field for
// malformed JSON, invalid UTF-8, wrong types and unsupported forms (batched prompts). Range
// checks are BuildGenerationRequest's.
absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(std::string_view body, RequestKind kind);

// HTTP status for a Status: 400 InvalidArgument, 429 ResourceExhausted, 503 Unavailable,
// 404 NotFound, 499 Cancelled, 504 DeadlineExceeded, 500 otherwise.
int HttpStatusOf(const absl::Status& status);
// {"error": {"message", "type", "param", "code"}}, as OpenAI writes it.
std::string ErrorBody(const absl::Status& status);
std::string ErrorBody(int http_status, const std::string& message);

// Turns one request's updates into OpenAI responses. Not thread-safe: one per request.
class OpenAiResponder {
 public:
  OpenAiResponder(RequestKind kind, std::string id, std::string model, int64_t created,
                  const runtime::Tokenizer& tok, bool logprobs, int n);

  // stream=true: the SSE data payloads (JSON text) for this update, in order; may be empty.
  std::vector<std::string> Chunks(const runtime::RequestUpdate& update);
  // The stream_options.include_usage chunk: no choices, the final usage.
  std::string UsageChunk(const runtime::Usage& usage) const;

  // stream=false: add an update; Body gives the whole response once the last one was added.
  void Accumulate(const runtime::RequestUpdate& update);
  std::string Body(const runtime::Usage& usage) const;

 private:
  struct Choice {
    std::string text;
    std::vector<runtime::TokenLogprob> logprobs;
    runtime::FinishReason finish = runtime::FinishReason::kNone;
    bool role_sent = false;  // chat streams: the first chunk carries the role
    std::shared_ptr<const runtime::RoutingTrace> routing;  // return_routing, once finished
  };
  nlohmann::json Envelope(const char* object) const;
  // The logprobs object for these tokens, or null when the request did not ask for logprobs.
  // Completions: text_offset counts bytes from `text_offset_base`.
  nlohmann::json Logprobs(const std::vector<runtime::TokenLogprob>& lps,
                          size_t text_offset_base) const;

  const RequestKind kind_;
  const std::string id_;
  const std::string model_;
  const int64_t created_;
  const runtime::Tokenizer& tok_;
  const bool logprobs_;
  std::vector<Choice> choices_;
};

nlohmann::json UsageJson(const runtime::Usage& usage);

}  // namespace moeserve::server::api
