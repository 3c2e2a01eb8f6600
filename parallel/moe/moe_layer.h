// The MoE feed-forward block of one layer on one rank: route -> dispatch -> experts -> combine.
//
//   x [num_tokens, hidden] --router matmul--> logits [num_tokens, num_experts]
//     --top-k--> (expert_ids, weights) [num_tokens, top_k] --DispatchPlan--> permuted rows
//     --per expert e: w2(silu(w1 x) * w3 x)--> expert_out [num_tokens * top_k, hidden]
//     --combine (weights, fixed order)--> out [num_tokens, hidden]
//
// World size 1 runs every expert locally; the all-to-all between the permute and the expert
// GEMMs (and back before the combine) is where expert parallelism plugs in.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "kernels/backend.h"
#include "kernels/tensor.h"

namespace moeserve::parallel {

struct ExpertWeights {
  kernels::TensorView w1;  // gate proj [intermediate, hidden]
  kernels::TensorView w3;  // up proj   [intermediate, hidden]
  kernels::TensorView w2;  // down proj [hidden, intermediate]
};

struct MoeLayerWeights {
  kernels::TensorView gate;            // router [num_experts, hidden]
  std::vector<ExpertWeights> experts;  // [num_experts]
};

struct MoeLayerShape {
  int64_t hidden = 0;
  int64_t intermediate = 0;
  int64_t num_experts = 0;
  int64_t top_k = 2;
};

// Per-call routing outcome, for expert-load statistics.
struct MoeRoutingStats {
  std::vector<int64_t> tokens_per_expert;  // [num_experts]
};

// Runs the block. x and out are device pointers of `backend`, [num_tokens, hidden]; out must not
// alias x. logit_bias (optional, host, [num_experts]) is added to the router logits.
absl::Status RunMoeLayer(kernels::Backend& backend, const MoeLayerShape& shape,
                         const MoeLayerWeights& weights, const float* x, int64_t num_tokens,
                         float* out, const float* logit_bias, MoeRoutingStats* stats);

}  // namespace moeserve::parallel
