// The tensors of a Mixtral model bound to their roles, as views (mmap'ed checkpoint, device
// memory, or an in-memory random model). Weights keep their stored dtype.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/tensor.h"
#include "parallel/moe/moe_layer.h"
#include "runtime/config/model_config.h"
#include "runtime/model/weight_names.h"

namespace moeserve::runtime {

struct LayerWeights {
  kernels::TensorView input_norm;      // [hidden]
  kernels::TensorView q_proj;          // [heads * head_dim, hidden]
  kernels::TensorView k_proj;          // [kv_heads * head_dim, hidden]
  kernels::TensorView v_proj;          // [kv_heads * head_dim, hidden]
  kernels::TensorView o_proj;          // [hidden, heads * head_dim]
  kernels::TensorView post_attn_norm;  // [hidden]
  parallel::MoeLayerWeights moe;       // router + experts
};

struct MixtralWeights {
  kernels::TensorView embed_tokens;  // [vocab, hidden]
  std::vector<LayerWeights> layers;
  kernels::TensorView final_norm;  // [hidden]
  kernels::TensorView lm_head;     // [vocab, hidden] (the embedding when tied)
};

// Fetches one tensor by name, checking its shape. Checkpoint::Load fits this signature.
using TensorLoader = std::function<absl::StatusOr<kernels::TensorView>(
    const std::string& name, const std::vector<int64_t>& expected_shape)>;

// Loads and binds every tensor of `config`. on_progress(done, total) is called after each tensor.
// With holds_expert (expert parallelism), the w1/w2/w3 tensors of experts it rejects are never
// requested from `load`; their ExpertWeights stay empty views (data == nullptr).
absl::StatusOr<MixtralWeights> BindMixtralWeights(
    const ModelConfig& config, const TensorLoader& load,
    const std::function<void(int64_t, int64_t)>& on_progress = nullptr,
    const ExpertFilter& holds_expert = nullptr);

}  // namespace moeserve::runtime
