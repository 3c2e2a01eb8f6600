// server/api OpenAiResponder and server/metrics: engine updates -> OpenAI JSON / SSE payloads,
// and the Prometheus exposition, from hand-made updates and stats.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "nlohmann/json.hpp"
#include "server/api/openai_json.h"
#include "server/metrics/metrics.h"

namespace moeserve::server {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

runtime::RequestUpdate Delta(int32_t index, std::string text, int32_t token,
                             runtime::FinishReason finish = runtime::FinishReason::kNone) {
  runtime::RequestUpdate u;
  runtime::ChoiceDelta d;
  d.index = index;
  d.text = std::move(text);
  d.tokens = {token};
  d.logprobs = {{token, -0.5f, {{token, -0.5f}, {7, -1.5f}}}};
  d.finish_reason = finish;
  u.choices.push_back(d);
  u.finished = finish != runtime::FinishReason::kNone;
  u.usage = {3, 2};
  return u;
}

class ResponderTest : public ::testing::Test {
 protected:
  void SetUp() override { tok_ = runtime::Tokenizer::LoadEmbedded().value(); }
  std::unique_ptr<runtime::Tokenizer> tok_;
};

TEST_F(ResponderTest, ChatStreamStartsWithTheRoleAndEndsWithFinishReason) {
  api::OpenAiResponder r(api::RequestKind::kChat, "chatcmpl-1", "tiny", 100, *tok_, false, 1);
  std::vector<std::string> first = r.Chunks(Delta(0, "Hel", 100));
  ASSERT_EQ(first.size(), 1u);
  json c = json::parse(first[0]);
  EXPECT_EQ(c["object"], "chat.completion.chunk");
  EXPECT_EQ(c["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(c["choices"][0]["delta"]["content"], "Hel");
  EXPECT_TRUE(c["choices"][0]["finish_reason"].is_null());
  json last = json::parse(r.Chunks(Delta(0, "lo", 101, runtime::FinishReason::kLength))[0]);
  EXPECT_FALSE(last["choices"][0]["delta"].contains("role"));
  EXPECT_EQ(last["choices"][0]["finish_reason"], "length");
  json usage = json::parse(r.UsageChunk({3, 2}));
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["total_tokens"], 5);
}

TEST_F(ResponderTest, CompletionBodyWithLogprobs) {
  api::OpenAiResponder r(api::RequestKind::kCompletion, "cmpl-1", "tiny", 100, *tok_, true, 2);
  r.Accumulate(Delta(1, "B", 200));
  r.Accumulate(Delta(0, "A", 100, runtime::FinishReason::kStop));
  json body = json::parse(r.Body({3, 2}));
  EXPECT_EQ(body["object"], "text_completion");
  ASSERT_EQ(body["choices"].size(), 2u);
  EXPECT_EQ(body["choices"][0]["text"], "A");
  EXPECT_EQ(body["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(body["choices"][1]["text"], "B");
  const json& lp = body["choices"][0]["logprobs"];
  EXPECT_EQ(lp["token_logprobs"][0], -0.5);
  EXPECT_EQ(lp["top_logprobs"][0].size(), 2u);
  EXPECT_EQ(lp["text_offset"][0], 0);
  EXPECT_EQ(body["usage"]["completion_tokens"], 2);
}

TEST(MetricsTest, RendersCountersHistogramsAndExperts) {
  ServerMetrics metrics;
  metrics.CountRequest("http", "/v1/completions", "200");
  metrics.ObserveTimeToFirstToken(absl::Milliseconds(30));
  metrics.ObserveInterToken(absl::Milliseconds(10), 2);
  runtime::EngineStats stats;
  stats.kv_blocks_total = 10;
  stats.kv_blocks_used = 5;
  stats.expert_tokens = {{1, 2}, {3, 4}};
  const std::string text = metrics.Render(stats);
  EXPECT_THAT(text, HasSubstr("moeserve_requests_total{api=\"http\",endpoint=\"/v1/completions\""
                              ",code=\"200\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("moeserve_time_to_first_token_seconds_bucket{le=\"0.05\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("moeserve_time_to_first_token_seconds_bucket{le=\"0.025\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("moeserve_inter_token_latency_seconds_count 2\n"));
  EXPECT_THAT(text, HasSubstr("moeserve_kv_usage_ratio 0.5\n"));
  EXPECT_THAT(text, HasSubstr("moeserve_expert_tokens_total{layer=\"1\",expert=\"0\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE moeserve_expert_tokens_total counter\n"));
}

// return_routing: a constructed trace of 2 positions x 2 layers x top-2 comes out nested
// [T][L][k], in the body and in the stream chunk where the choice finishes, and only there.
TEST_F(ResponderTest, RoutingTraceNestsPositionsLayersAndChoices) {
  auto trace = std::make_shared<runtime::RoutingTrace>(2, 2);
  trace->tokens = {1, 42};
  trace->experts = {3, 1, 0, 7, 2, 5, 6, 4};  // (p0 l0) (p0 l1) (p1 l0) (p1 l1)
  trace->weights = {0.75f, 0.25f, 0.5f, 0.5f, 0.625f, 0.375f, 1.0f, 0.0f};
  runtime::RequestUpdate finish = Delta(0, "x", 9, runtime::FinishReason::kLength);
  finish.choices[0].routing = trace;
  const json want = {{"num_layers", 2},
                     {"top_k", 2},
                     {"choices",
                      {{{"index", 0},
                        {"token_ids", {1, 42}},
                        {"experts", {{{3, 1}, {0, 7}}, {{2, 5}, {6, 4}}}},
                        {"weights", {{{0.75, 0.25}, {0.5, 0.5}}, {{0.625, 0.375}, {1.0, 0.0}}}}}}}};
  api::OpenAiResponder body(api::RequestKind::kCompletion, "cmpl-1", "tiny", 100, *tok_, false, 1);
  body.Accumulate(Delta(0, "a", 8));
  body.Accumulate(finish);
  EXPECT_EQ(json::parse(body.Body({3, 2}))["routing"], want);
  api::OpenAiResponder stream(api::RequestKind::kChat, "c-1", "tiny", 100, *tok_, false, 1);
  EXPECT_FALSE(json::parse(stream.Chunks(Delta(0, "a", 8))[0]).contains("routing"));
  EXPECT_EQ(json::parse(stream.Chunks(finish)[0])["routing"], want);
  api::OpenAiResponder plain(api::RequestKind::kCompletion, "cmpl-2", "tiny", 100, *tok_, false, 1);
  plain.Accumulate(Delta(0, "a", 8, runtime::FinishReason::kStop));
  EXPECT_FALSE(json::parse(plain.Body({3, 2})).contains("routing"));
}

}  // namespace
}  // namespace moeserve::server
