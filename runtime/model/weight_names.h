// Hugging Face Mixtral tensor names and shapes (the layout of real Mixtral checkpoints).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/config/model_config.h"

namespace moeserve::runtime {

struct WeightSpec {
  std::string name;
  std::vector<int64_t> shape;
};

std::string LayerPrefix(int64_t layer);                   // "model.layers.{layer}."
std::string ExpertPrefix(int64_t layer, int64_t expert);  // "...block_sparse_moe.experts.{e}."

// Every tensor of the model, in checkpoint order (embeddings, layers, norm, lm_head).
// lm_head.weight is absent when tie_word_embeddings is true.
std::vector<WeightSpec> AllWeightSpecs(const ModelConfig& c);

}  // namespace moeserve::runtime
