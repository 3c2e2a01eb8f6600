// libFuzzer harness: an HTTP request body through the OpenAI front end's pure functions, as
// server/http calls them: ParseOpenAiRequest for both endpoints, then BuildGenerationRequest
// (validation, chat template, tokenization) against the embedded tokenizer, and ErrorBody for
// every refusal. Oracle: no crash, throw or abort; every refusal is InvalidArgument (a 400), and
// an accepted request fits the limits it was checked against.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "server/api/api_request.h"
#include "server/api/openai_json.h"

namespace {

namespace api = moeserve::server::api;

const moeserve::runtime::Tokenizer& Tok() {
  static const moeserve::runtime::Tokenizer* tok = [] {
    auto loaded = moeserve::runtime::Tokenizer::LoadEmbedded();
    if (!loaded.ok()) std::abort();
    return loaded->release();
  }();
  return *tok;
}

void CheckRefusal(const absl::Status& status) {
  if (status.code() != absl::StatusCode::kInvalidArgument) std::abort();
  if (api::HttpStatusOf(status) != 400) std::abort();
  (void)api::ErrorBody(status);  // the 400 body the client gets
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Bodies past this only make tokenization slower; the parser's limits are the HTTP layer's.
  if (size > 16384) return 0;
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  const api::ApiLimits limits{.served_model_name = "moeserve-tiny", .max_model_len = 4096};
  for (api::RequestKind kind : {api::RequestKind::kCompletion, api::RequestKind::kChat}) {
    auto parsed = api::ParseOpenAiRequest(body, kind);
    if (!parsed.ok()) {
      CheckRefusal(parsed.status());
      continue;
    }
    auto request = api::BuildGenerationRequest(parsed->api, Tok(), limits);
    if (!request.ok()) {
      CheckRefusal(request.status());
      continue;
    }
    // What the engine relies on: a non-empty prompt of vocabulary ids, valid sampling, and room
    // for max_tokens in the context.
    if (request->prompt.empty() || !request->sampling.Validate().ok()) std::abort();
    for (int32_t id : request->prompt) {
      if (id < 0 || id >= Tok().vocab_size()) std::abort();
    }
    const int64_t max_tokens = request->sampling.max_tokens.value_or(1);
    if (static_cast<int64_t>(request->prompt.size()) + max_tokens > limits.max_model_len) {
      std::abort();
    }
  }
  return 0;
}
