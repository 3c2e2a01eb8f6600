#include "runtime/model/weight_names.h"

namespace moeserve::runtime {

std::string LayerPrefix(int64_t layer) { return "model.layers." + std::to_string(layer) + "."; }

std::string ExpertPrefix(int64_t layer, int64_t expert) {
  return LayerPrefix(layer) + "block_sparse_moe.experts." + std::to_string(expert) + ".";
}

std::vector<WeightSpec> AllWeightSpecs(const ModelConfig& c) {
  const int64_t h = c.hidden_size, q = c.num_attention_heads * c.head_dim,
                kv = c.num_key_value_heads * c.head_dim, inter = c.intermediate_size;
  std::vector<WeightSpec> specs;
  specs.push_back({"model.embed_tokens.weight", {c.vocab_size, h}});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = LayerPrefix(l);
    specs.push_back({p + "input_layernorm.weight", {h}});
    specs.push_back({p + "self_attn.q_proj.weight", {q, h}});
    specs.push_back({p + "self_attn.k_proj.weight", {kv, h}});
    specs.push_back({p + "self_attn.v_proj.weight", {kv, h}});
    specs.push_back({p + "self_attn.o_proj.weight", {h, q}});
    specs.push_back({p + "post_attention_layernorm.weight", {h}});
    specs.push_back({p + "block_sparse_moe.gate.weight", {c.num_local_experts, h}});
    for (int64_t e = 0; e < c.num_local_experts; ++e) {
      const std::string ep = ExpertPrefix(l, e);
      specs.push_back({ep + "w1.weight", {inter, h}, l, e});
      specs.push_back({ep + "w2.weight", {h, inter}, l, e});
      specs.push_back({ep + "w3.weight", {inter, h}, l, e});
    }
  }
  specs.push_back({"model.norm.weight", {h}});
  if (!c.tie_word_embeddings) specs.push_back({"lm_head.weight", {c.vocab_size, h}});
  return specs;
}

std::vector<WeightSpec> HeldWeightSpecs(const ModelConfig& c, const ExpertFilter& holds_expert) {
  std::vector<WeightSpec> specs = AllWeightSpecs(c);
  if (!holds_expert) return specs;
  std::erase_if(specs, [&](const WeightSpec& s) {
    return s.is_expert() && !holds_expert(s.layer, s.expert);
  });
  return specs;
}

}  // namespace moeserve::runtime
