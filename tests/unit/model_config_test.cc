#include "runtime/config/model_config.h"

#include "gtest/gtest.h"

namespace moeserve::runtime {
namespace {

// The config.json of mistralai/Mixtral-8x7B-v0.1 (fields as published).
constexpr char kMixtral8x7B[] = R"({
  "architectures": ["MixtralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1,
  "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
  "intermediate_size": 14336, "max_position_embeddings": 32768, "model_type": "mixtral",
  "num_attention_heads": 32, "num_experts_per_tok": 2, "num_hidden_layers": 32,
  "num_key_value_heads": 8, "num_local_experts": 8, "output_router_logits": false,
  "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "router_aux_loss_coef": 0.02,
  "sliding_window": null, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
  "transformers_version": "4.36.0.dev0", "use_cache": true, "vocab_size": 32000})";

TEST(ModelConfigTest, ParsesMixtral8x7B) {
  auto c = ParseModelConfig(kMixtral8x7B);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->hidden_size, 4096);
  EXPECT_EQ(c->head_dim, 128);  // derived: no head_dim field
  EXPECT_EQ(c->num_key_value_heads, 8);
  EXPECT_EQ(c->num_local_experts, 8);
  EXPECT_FALSE(c->sliding_window.has_value());
  EXPECT_EQ(c->rope_theta, 1e6);
  EXPECT_EQ(c->dtype, kernels::DType::kBF16);
  // ToJson round-trips.
  auto again = ParseModelConfig(c->ToJson());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->ToJson(), c->ToJson());
}

TEST(ModelConfigTest, ErrorsNameTheField) {
  struct Case {
    std::string json;
    std::string field;
  };
  const std::string base = R"("hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
      "num_attention_heads": 4, "num_local_experts": 8, "num_experts_per_tok": 2,
      "vocab_size": 256)";
  const std::vector<Case> cases = {
      {"{" + base + R"(, "sliding_window": "big"})", "sliding_window"},
      {"{" + base + R"(, "sliding_window": 0})", "sliding_window"},
      {"{" + base + R"(, "num_key_value_heads": 3})", "num_key_value_heads"},
      {"{" + base + R"(, "head_dim": 15})", "head_dim"},
      {"{" + base + R"(, "rope_theta": "x"})", "rope_theta"},
      {"{" + base + R"(, "tie_word_embeddings": 1})", "tie_word_embeddings"},
      {"{" + base + R"(, "torch_dtype": "int8"})", "torch_dtype"},
      {"{" + base + R"(, "eos_token_id": 999})", "eos_token_id"},
      {"{" + base + R"(, "model_type": "llama"})", "model_type"},
      {R"({"hidden_size": 64})", "intermediate_size"},
      {R"({"hidden_size": 64.5})", "hidden_size"},
      {"[1, 2]", "JSON object"},
      {"{not json", "not valid JSON"},
  };
  for (const Case& c : cases) {
    auto r = ParseModelConfig(c.json, "/models/x/config.json");
    ASSERT_FALSE(r.ok()) << c.json;
    const std::string msg(r.status().message());
    EXPECT_NE(msg.find(c.field), std::string::npos) << msg;
    EXPECT_NE(msg.find("/models/x/config.json"), std::string::npos) << msg;
  }
  auto ok = ParseModelConfig("{" + base + R"(, "eos_token_id": [2, 3], "sliding_window": 4096})");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->eos_token_id, 2);
  EXPECT_EQ(ok->sliding_window, 4096);
  EXPECT_EQ(ok->num_key_value_heads, 4);  // defaults to num_attention_heads
}

TEST(ModelConfigTest, MissingFileIsNotFound) {
  auto r = LoadModelConfig("/nonexistent/dir");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace moeserve::runtime
