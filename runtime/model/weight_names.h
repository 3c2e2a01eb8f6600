// Hugging Face Mixtral tensor names and shapes (the layout of real Mixtral checkpoints).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "runtime/config/model_config.h"

namespace moeserve::runtime {

struct WeightSpec {
  std::string name;
  std::vector<int64_t> shape;
  // For the w1/w2/w3 tensors of an expert: its layer and index; -1 for every other tensor.
  // Expert parallelism loads an expert's tensors only on the ranks that hold it.
  int64_t layer = -1;
  int64_t expert = -1;

  bool is_expert() const { return expert >= 0; }
};

// Whether this rank holds expert `expert` of layer `layer`; null means every expert.
using ExpertFilter = std::function<bool(int64_t layer, int64_t expert)>;

std::string LayerPrefix(int64_t layer);                   // "model.layers.{layer}."
std::string ExpertPrefix(int64_t layer, int64_t expert);  // "...block_sparse_moe.experts.{e}."

// Every tensor of the model, in checkpoint order (embeddings, layers, norm, lm_head).
// lm_head.weight is absent when tie_word_embeddings is true.
std::vector<WeightSpec> AllWeightSpecs(const ModelConfig& c);
// AllWeightSpecs without the expert tensors that `holds_expert` rejects (all when it is null).
std::vector<WeightSpec> HeldWeightSpecs(const ModelConfig& c, const ExpertFilter& holds_expert);

}  // namespace moeserve::runtime
