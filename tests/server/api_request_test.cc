// server/api: the request translation and validation both front ends share, and the OpenAI JSON
// wire format. No engine: requests are built and responses formatted from hand-made updates.
#include "server/api/api_request.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "nlohmann/json.hpp"
#include "server/api/openai_json.h"

namespace moeserve::server::api {
namespace {

using ::testing::HasSubstr;

class ApiRequestTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { tok_ = runtime::Tokenizer::LoadEmbedded().value().release(); }
  static void TearDownTestSuite() { delete tok_; }

  absl::StatusOr<runtime::GenerationRequest> Build(std::string_view json,
                                                   RequestKind kind = RequestKind::kCompletion) {
    absl::StatusOr<OpenAiRequest> parsed = ParseOpenAiRequest(json, kind);
    if (!parsed.ok()) return parsed.status();
    return BuildGenerationRequest(parsed->api, *tok_, limits_);
  }

  static const runtime::Tokenizer* tok_;
  ApiLimits limits_{"tiny", 64};
};
const runtime::Tokenizer* ApiRequestTest::tok_ = nullptr;

TEST_F(ApiRequestTest, CompletionDefaults) {
  absl::StatusOr<runtime::GenerationRequest> r = Build(R"({"prompt": "Hello"})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->prompt, tok_->Encode("Hello", true, false));
  EXPECT_EQ(r->sampling.max_tokens, 16);
  EXPECT_EQ(r->sampling.temperature, 0.0f);
  EXPECT_EQ(r->sampling.n, 1);
}

TEST_F(ApiRequestTest, ChatDefaultsToTheRestOfTheContext) {
  absl::StatusOr<runtime::GenerationRequest> r = Build(
      R"({"model": "tiny", "messages": [{"role": "user", "content": "Hi"}]})", RequestKind::kChat);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->sampling.max_tokens, 64 - static_cast<int64_t>(r->prompt.size()));
}

TEST_F(ApiRequestTest, SamplingFieldsAreCopied) {
  absl::StatusOr<runtime::GenerationRequest> r = Build(
      R"({"prompt": [1, 2, 3], "max_tokens": 5, "temperature": 0.5, "top_p": 0.9, "top_k": 7,
          "min_p": 0.1, "repetition_penalty": 1.2, "frequency_penalty": 0.3,
          "presence_penalty": -0.4, "seed": 9, "n": 2, "logprobs": 3, "stop": "x",
          "stop_token_ids": [13], "ignore_eos": true})");
  ASSERT_TRUE(r.ok()) << r.status();
  const runtime::SamplingParams& s = r->sampling;
  EXPECT_EQ(r->prompt, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(s.max_tokens, 5);
  EXPECT_FLOAT_EQ(s.temperature, 0.5f);
  EXPECT_FLOAT_EQ(s.top_p, 0.9f);
  EXPECT_EQ(s.top_k, 7);
  EXPECT_FLOAT_EQ(s.min_p, 0.1f);
  EXPECT_FLOAT_EQ(s.repetition_penalty, 1.2f);
  EXPECT_FLOAT_EQ(s.frequency_penalty, 0.3f);
  EXPECT_FLOAT_EQ(s.presence_penalty, -0.4f);
  EXPECT_EQ(s.seed, 9u);
  EXPECT_EQ(s.n, 2);
  EXPECT_TRUE(s.logprobs);
  EXPECT_EQ(s.top_logprobs, 3);
  EXPECT_EQ(s.stop, std::vector<std::string>{"x"});
  EXPECT_EQ(s.stop_token_ids, std::vector<int32_t>{13});
  EXPECT_TRUE(s.ignore_eos);
}

struct BadCase {
  const char* json;
  const char* param;    // OpenAI's error "param"
  const char* message;  // a substring of the message
};

TEST_F(ApiRequestTest, BadInputNamesTheField) {
  const BadCase cases[] = {
      {R"({"prompt": "x",)", "", "not valid JSON"},
      {R"([1])", "", "JSON object"},
      {R"({})", "prompt", "prompt is required"},
      {R"({"prompt": ""})", "prompt", "must not be empty"},
      {R"({"prompt": 3})", "prompt", "prompt must be a string or an array of token ids, got a"},
      {R"({"prompt": "x", "max_tokens": "5"})", "max_tokens", "must be an integer, got a string"},
      {R"({"prompt": "x", "max_tokens": 0})", "max_tokens", "max_tokens must be >= 1"},
      {R"({"prompt": "x", "max_tokens": 64})", "max_tokens", "exceeds the context"},
      {R"({"prompt": "x", "temperature": -1})", "temperature", "temperature must be"},
      {R"({"prompt": "x", "top_p": 0})", "top_p", "top_p must be in (0, 1]"},
      {R"({"prompt": "x", "top_k": -2})", "top_k", "top_k must be"},
      {R"({"prompt": "x", "model": "other"})", "model", "'other' does not exist"},
      {R"({"prompt": "x", "stop": ["a","b","c","d","e","f","g","h","i","j","k","l","m","n","o",
          "p","q"]})",
       "stop", "at most 16"},
      {R"({"prompt": ["a", "b"]})", "prompt", "batched prompts"},
      {R"({"prompt": [1, 40000]})", "prompt", "outside the vocabulary"},
      {R"({"prompt": "x", "stop_token_ids": [-1]})", "stop_token_ids", "stop_token_ids[0]"},
  };
  for (const BadCase& c : cases) {
    absl::StatusOr<runtime::GenerationRequest> r = Build(c.json);
    ASSERT_FALSE(r.ok()) << c.json;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.json;
    EXPECT_EQ(ParamOf(r.status()), c.param) << c.json << ": " << r.status();
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(c.message)) << c.json;
  }
}

TEST_F(ApiRequestTest, PromptPastTheContext) {
  std::string long_prompt;
  for (int i = 0; i < 100; ++i) long_prompt += "word ";
  absl::StatusOr<runtime::GenerationRequest> r =
      Build(nlohmann::json{{"prompt", long_prompt}}.dump());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ParamOf(r.status()), "prompt");
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("leaves no room"));
}

TEST_F(ApiRequestTest, InvalidUtf8) {
  absl::StatusOr<runtime::GenerationRequest> r = Build("{\"prompt\": \"caf\xC3\x28\"}");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("UTF-8"));
  ApiRequest direct;
  direct.prompt_text = "bad \xFF byte";
  r = BuildGenerationRequest(direct, *tok_, limits_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ParamOf(r.status()), "prompt");
}

TEST_F(ApiRequestTest, ChatErrorsAreInvalidArgument) {
  absl::StatusOr<runtime::GenerationRequest> r =
      Build(R"({"messages": [{"role": "wizard", "content": "x"}]})", RequestKind::kChat);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ParamOf(r.status()), "messages");
  r = Build(R"({"messages": []})", RequestKind::kChat);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("must not be empty"));
}

TEST(OpenAiJsonTest, ErrorBodyHasOpenAiShape) {
  nlohmann::json body = nlohmann::json::parse(ErrorBody(InvalidParam("top_p", "bad top_p")));
  EXPECT_EQ(body["error"]["message"], "bad top_p");
  EXPECT_EQ(body["error"]["type"], "invalid_request_error");
  EXPECT_EQ(body["error"]["param"], "top_p");
  EXPECT_EQ(body["error"]["code"], 400);
  EXPECT_EQ(HttpStatusOf(absl::ResourceExhaustedError("full")), 429);
  EXPECT_EQ(HttpStatusOf(absl::UnavailableError("draining")), 503);
}

TEST(OpenAiJsonTest, TokenTextShowsSpacesAndAsciiBytes) {
  auto tok = runtime::Tokenizer::LoadEmbedded().value();
  const std::vector<int32_t> ids = tok->Encode("Hello world", false, false);
  std::string joined;
  for (int32_t id : ids) joined += TokenText(*tok, id);
  EXPECT_EQ(joined, " Hello world");
  EXPECT_EQ(TokenText(*tok, tok->PieceToId("<0x0A>")), "\n");
}

// A number past a double's range (1e999) is a 400 naming the top-level field it sits under,
// never an exception (issue 10: these were 500s).
TEST(ParseOpenAiRequestTest, OverflowingNumbersNameTheirField) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"prompt": "x", "max_tokens": 1e999})", "max_tokens"},
      {R"({"prompt": "x", "temperature": -1e999})", "temperature"},
      {R"({"prompt": [1, 1e999]})", "prompt"},
      {R"({"prompt": "x", "stream_options": {"include_usage": 1e999}})", "stream_options"},
  };
  for (const auto& [body, field] : cases) {
    absl::StatusOr<OpenAiRequest> r = ParseOpenAiRequest(body, RequestKind::kCompletion);
    ASSERT_FALSE(r.ok()) << body;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << body;
    EXPECT_EQ(ParamOf(r.status()), field) << body;
    EXPECT_THAT(r.status().message(), HasSubstr(field));
  }
}

TEST(ParseOpenAiRequestTest, WrongTypedContentPartsAreInvalidArgument) {
  for (const char* content : {R"([{"type": 5, "text": "x"}])", R"([{"type": "text", "text": 5}])",
                              R"([5])", R"([{"type": "image_url"}])"}) {
    const std::string body =
        std::string(R"({"messages": [{"role": "user", "content": )") + content + "}]}";
    absl::StatusOr<OpenAiRequest> r = ParseOpenAiRequest(body, RequestKind::kChat);
    ASSERT_FALSE(r.ok()) << body;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << body;
    EXPECT_EQ(ParamOf(r.status()), "messages");
  }
}

TEST(ParseOpenAiRequestTest, UnimplementedFieldsAreRefusedByName) {
  const std::pair<const char*, const char*> cases[] = {
      {R"("echo": true)", "echo"},
      {R"("suffix": "end")", "suffix"},
      {R"("best_of": 2)", "best_of"},
      {R"("logit_bias": {"13": 100})", "logit_bias"},
      {R"("logit_bias": {"99999999": 5})", "logit_bias"},
      {R"("response_format": {"type": "json_object"})", "response_format"},
      {R"("functions": [{"name": "f"}])", "functions"},
      {R"("function_call": "auto")", "function_call"},
      {R"("tools": [{"type": "function"}])", "tools"},
      {R"("tool_choice": "auto")", "tool_choice"},
  };
  for (const auto& [field_json, field] : cases) {
    const std::string body = std::string(R"({"prompt": "x", )") + field_json + "}";
    absl::StatusOr<OpenAiRequest> r = ParseOpenAiRequest(body, RequestKind::kCompletion);
    ASSERT_FALSE(r.ok()) << body;
    EXPECT_EQ(ParamOf(r.status()), field);
    EXPECT_THAT(r.status().message(), HasSubstr("not supported"));
  }
  // The values that mean "not used" are accepted.
  absl::StatusOr<OpenAiRequest> r = ParseOpenAiRequest(
      R"({"prompt": "x", "echo": false, "suffix": null, "best_of": 1, "logit_bias": {},
          "response_format": {"type": "text"}, "functions": [], "function_call": "none",
          "tools": [], "tool_choice": "none"})",
      RequestKind::kCompletion);
  EXPECT_TRUE(r.ok()) << r.status();
}

}  // namespace
}  // namespace moeserve::server::api
