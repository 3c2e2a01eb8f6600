#include "runtime/model/mixtral_weights.h"

#include <map>

#include "kernels/base/status_macros.h"
#include "runtime/model/weight_names.h"

namespace moeserve::runtime {

absl::StatusOr<MixtralWeights> BindMixtralWeights(
    const ModelConfig& config, const TensorLoader& load,
    const std::function<void(int64_t, int64_t)>& on_progress, const ExpertFilter& holds_expert) {
  const std::vector<WeightSpec> specs = HeldWeightSpecs(config, holds_expert);
  std::map<std::string, kernels::TensorView> views;
  int64_t done = 0;
  for (const WeightSpec& spec : specs) {
    MOESERVE_ASSIGN_OR_RETURN(views[spec.name], load(spec.name, spec.shape));
    if (on_progress) on_progress(++done, static_cast<int64_t>(specs.size()));
  }
  MixtralWeights w;
  w.embed_tokens = views.at("model.embed_tokens.weight");
  w.final_norm = views.at("model.norm.weight");
  w.lm_head = config.tie_word_embeddings ? w.embed_tokens : views.at("lm_head.weight");
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    const std::string p = LayerPrefix(l);
    LayerWeights lw;
    lw.input_norm = views.at(p + "input_layernorm.weight");
    lw.q_proj = views.at(p + "self_attn.q_proj.weight");
    lw.k_proj = views.at(p + "self_attn.k_proj.weight");
    lw.v_proj = views.at(p + "self_attn.v_proj.weight");
    lw.o_proj = views.at(p + "self_attn.o_proj.weight");
    lw.post_attn_norm = views.at(p + "post_attention_layernorm.weight");
    lw.moe.gate = views.at(p + "block_sparse_moe.gate.weight");
    for (int64_t e = 0; e < config.num_local_experts; ++e) {
      if (holds_expert && !holds_expert(l, e)) {
        lw.moe.experts.push_back({});  // held by other ranks
        continue;
      }
      const std::string ep = ExpertPrefix(l, e);
      lw.moe.experts.push_back(
          {views.at(ep + "w1.weight"), views.at(ep + "w3.weight"), views.at(ep + "w2.weight")});
    }
    w.layers.push_back(std::move(lw));
  }
  return w;
}

}  // namespace moeserve::runtime
