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

// The small config every test below starts from (fields a test adds come last and win).
std::string Small(const std::string& extra = "") {
  return std::string(R"({"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
      "num_attention_heads": 4, "num_local_experts": 8, "num_experts_per_tok": 2,
      "vocab_size": 256)") +
         (extra.empty() ? "" : ", " + extra) + "}";
}

TEST(ModelConfigTest, RopeThetaFromEveryLayout) {
  struct Case {
    std::string extra;
    double theta;
  };
  const std::vector<Case> cases = {
      {R"("rope_theta": 10000.0)", 1e4},  // transformers 4
      // transformers 5: rope_parameters instead of a top-level rope_theta.
      {R"("rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"})", 5e5},
      {R"("rope_parameters": {"rope_theta": 10000})", 1e4},
      // transformers 4.4x files: rope_scaling null or naming the default type.
      {R"("rope_theta": 250000.0, "rope_scaling": null)", 2.5e5},
      {R"("rope_theta": 250000.0, "rope_scaling": {"rope_type": "default"})", 2.5e5},
      {R"("rope_theta": 250000.0, "rope_scaling": {"type": "default"})", 2.5e5},
      // Both present and equal (some converters write both).
      {R"("rope_theta": 5e5, "rope_parameters": {"rope_theta": 5e5, "rope_type": "default"})", 5e5},
      {"", 1e6},  // absent: Mixtral's default
  };
  for (const Case& c : cases) {
    auto r = ParseModelConfig(Small(c.extra));
    ASSERT_TRUE(r.ok()) << c.extra << ": " << r.status();
    EXPECT_EQ(r->rope_theta, c.theta) << c.extra;
    // ToJson writes what it read, so ModelInfo shows the theta in use.
    auto again = ParseModelConfig(r->ToJson());
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(again->rope_theta, c.theta) << c.extra;
  }
}

// Anything that changes the math and that we do not implement is refused, never approximated.
TEST(ModelConfigTest, UnsupportedFeaturesAreRefusedNamingTheField) {
  struct Case {
    std::string extra;
    std::string field;
  };
  const std::vector<Case> cases = {
      {R"("rope_parameters": {"rope_theta": 1e6, "rope_type": "yarn", "factor": 4.0})",
       "rope_type"},
      {R"("rope_parameters": {"rope_theta": 1e6, "rope_type": "linear", "factor": 2.0})",
       "rope_type"},
      {R"("rope_parameters": {"rope_theta": 1e6, "rope_type": "llama3", "factor": 8.0})",
       "rope_type"},
      {R"("rope_scaling": {"type": "dynamic", "factor": 2.0})", "rope_scaling"},
      {R"("rope_scaling": {"rope_type": "yarn", "factor": 4.0})", "rope_scaling"},
      {R"("rope_scaling": "linear")", "rope_scaling"},
      {R"("rope_parameters": {"rope_theta": "big"})", "rope_theta"},
      {R"("rope_parameters": [1])", "rope_parameters"},
      {R"("rope_theta": 1e6, "rope_parameters": {"rope_theta": 1e4})", "rope_theta"},
      {R"("rope_parameters": {"rope_theta": 1e6, "partial_rotary_factor": 0.5})",
       "partial_rotary_factor"},
      {R"("partial_rotary_factor": 0.5)", "partial_rotary_factor"},
      {R"("hidden_act": "gelu")", "hidden_act"},
      {R"("hidden_act": 3)", "hidden_act"},
      {R"("attention_bias": true)", "attention_bias"},
      {R"("mlp_bias": true)", "mlp_bias"},
      {R"("quantization_config": {"quant_method": "gptq", "bits": 4})", "quantization_config"},
      {R"("norm_topk_prob": false)", "norm_topk_prob"},
      {R"("architectures": ["MixtralForSequenceClassification"])", "architectures"},
      {R"("num_experts_per_tok": 9)", "num_experts_per_tok"},
      {R"("final_logit_softcapping": 30.0)", "final_logit_softcapping"},
      {R"("use_sliding_window": true, "max_window_layers": 2)", "use_sliding_window"},
  };
  for (const Case& c : cases) {
    auto r = ParseModelConfig(Small(c.extra), "/models/x/config.json");
    ASSERT_FALSE(r.ok()) << c.extra << " was accepted";
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.extra;
    const std::string msg(r.status().message());
    EXPECT_NE(msg.find(c.field), std::string::npos) << msg;
    EXPECT_NE(msg.find("/models/x/config.json"), std::string::npos) << msg;
  }
  // Their neutral values, and training-only fields, are accepted.
  for (const std::string extra :
       {R"("hidden_act": "silu")", R"("attention_bias": false, "mlp_bias": false)",
        R"("router_jitter_noise": 0.1, "router_aux_loss_coef": 0.02, "output_router_logits": true)",
        R"("attention_dropout": 0.1, "initializer_range": 0.02, "use_cache": false)",
        R"("quantization_config": null, "partial_rotary_factor": 1.0, "norm_topk_prob": true)",
        R"("architectures": ["MixtralForCausalLM"], "transformers_version": "5.0.0")"}) {
    auto r = ParseModelConfig(Small(extra));
    EXPECT_TRUE(r.ok()) << extra << ": " << r.status();
  }
}

// Sizes are bounded before anything is sized from them: a config of 2^40 layers used to make the
// loader build a weight list that grew memory by gigabytes.
TEST(ModelConfigTest, AbsurdSizesAreRefusedNamingTheField) {
  struct Case {
    std::string extra;
    std::string field;
  };
  const std::vector<Case> cases = {
      {R"("num_hidden_layers": 1099511627776)", "num_hidden_layers"},
      {R"("num_local_experts": 1000000, "num_experts_per_tok": 2)", "num_local_experts"},
      {R"("hidden_size": 4294967296)", "hidden_size"},
      {R"("intermediate_size": 1099511627776)", "intermediate_size"},
      {R"("vocab_size": 4294967296)", "vocab_size"},
      {R"("num_attention_heads": 65536, "num_key_value_heads": 1, "head_dim": 64)",
       "num_attention_heads"},
      {R"("head_dim": 1048576)", "head_dim"},
      {R"("max_position_embeddings": 1099511627776)", "max_position_embeddings"},
      {R"("num_hidden_layers": 18446744073709551615)", "num_hidden_layers=18446744073709551615"},
      {R"("bos_token_id": 4294967297)", "bos_token_id"},
      {R"("eos_token_id": [4294967298])", "eos_token_id"},
      {R"("rms_norm_eps": 1e999)", "config.json"},  // number overflow in the JSON itself
  };
  for (const Case& c : cases) {
    auto r = ParseModelConfig(Small(c.extra), "/models/x/config.json");
    ASSERT_FALSE(r.ok()) << c.extra << " was accepted";
    const std::string msg(r.status().message());
    EXPECT_NE(msg.find(c.field), std::string::npos) << msg;
    EXPECT_NE(msg.find("/models/x/config.json"), std::string::npos) << msg;
  }
}

TEST(ModelConfigTest, MissingFileIsNotFound) {
  auto r = LoadModelConfig("/nonexistent/dir");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace moeserve::runtime
