// The MoE feed-forward block of one layer on one rank: route -> align -> experts -> combine, all
// enqueued on the backend with device buffers (no host copy, no synchronisation):
//
//   x [T, hidden] --router Matmul--> logits [T, E] fp32 --RouterTopK--> expert_ids, weights [T, k]
//     --MoeAlign--> expert_offsets [E+1], permuted_token [T*k], combine_rows [T, k]
//                   (+ expert_counts[e] += rows of e, the load statistics, on the device)
//     --GatherRows--> permuted [T*k, hidden]
//     --GroupedMatmul (SwiGLU: silu(w1 x) * w3 x)--> inter [T*k, intermediate]
//     --GroupedMatmul (w2)--> expert_out [T*k, hidden]
//     --MoeCombine (weights, ascending expert order)--> out [T, hidden]
//
// Activations are in backend.activation_dtype(); router logits and weights are fp32. World size 1
// runs every expert locally; the expert-parallel path (ep_moe_layer.h) uses the same ops.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/backend.h"
#include "kernels/tensor.h"

namespace moeserve::parallel {

struct ExpertWeights {
  kernels::TensorView w1;  // gate proj [intermediate, hidden]
  kernels::TensorView w3;  // up proj   [intermediate, hidden]
  kernels::TensorView w2;  // down proj [hidden, intermediate]

  bool held() const { return w1.data != nullptr && w2.data != nullptr && w3.data != nullptr; }
};

// The GroupedMatmul form of a layer's experts: [num_experts] arrays of weight pointers in backend
// memory (a plain host array on CPU). An expert this rank does not hold has nullptr entries.
struct ExpertTables {
  const void* const* w1 = nullptr;
  const void* const* w3 = nullptr;
  const void* const* w2 = nullptr;
  kernels::DType dtype = kernels::DType::kBF16;
  kernels::WeightLayout layout = kernels::WeightLayout::kRows;
  bool all_experts = false;  // every expert is held (world size 1 needs that)

  bool built() const { return w1 != nullptr; }
};

struct MoeLayerWeights {
  kernels::TensorView gate;            // router [num_experts, hidden]
  std::vector<ExpertWeights> experts;  // [num_experts]; views of host or device memory
  ExpertTables tables;                 // from BuildExpertTables
};

struct MoeLayerShape {
  int64_t hidden = 0;
  int64_t intermediate = 0;
  int64_t num_experts = 0;
  int64_t top_k = 2;
};

// Fills `tables` of every layer from its expert views, in one backend allocation (returned: it
// must outlive the tables). Held experts of a layer must share one dtype. Load time: it
// allocates and copies synchronously.
absl::StatusOr<kernels::DeviceBuffer> BuildExpertTables(kernels::Backend& backend,
                                                        absl::Span<MoeLayerWeights* const> layers);
absl::StatusOr<kernels::DeviceBuffer> BuildExpertTables(kernels::Backend& backend,
                                                        MoeLayerWeights& layer);

// Device buffers of one MoE layer call for up to capacity() tokens, reused by every layer and
// step. Reserve grows it by powers of two (one backend allocation when it grows, none else).
class MoeWorkspace {
 public:
  absl::Status Reserve(kernels::Backend& backend, const MoeLayerShape& shape, int64_t num_tokens);
  int64_t capacity() const { return capacity_; }

  float* logits = nullptr;            // [T, E] fp32
  int32_t* expert_ids = nullptr;      // [T, k]
  float* weights = nullptr;           // [T, k] fp32
  int32_t* expert_offsets = nullptr;  // [E + 1]
  int32_t* permuted_token = nullptr;  // [T * k]
  int32_t* combine_rows = nullptr;    // [T, k]
  void* permuted = nullptr;           // [T * k, hidden] activations
  void* inter = nullptr;              // [T * k, intermediate] activations
  void* expert_out = nullptr;         // [T * k, hidden] activations

 private:
  kernels::DeviceBuffer buffer_;
  int64_t capacity_ = 0;
  MoeLayerShape shape_;
  kernels::DType act_ = kernels::DType::kF32;
};

// Optional host destinations of a layer's routing (the router's choices, for routing traces):
// expert_ids and weights [num_tokens, top_k] each, in host memory. Both set or both null.
struct RoutingHostCopy {
  int32_t* expert_ids = nullptr;
  float* weights = nullptr;
};

// Runs the block: x and out are backend memory [num_tokens, hidden] of activation_dtype(), out
// must not alias x. logit_bias: optional backend [num_experts] fp32. expert_counts: optional
// backend [num_experts] int64, += rows routed to each expert (read back whenever the caller
// likes). token_bias: optional backend [num_tokens, num_experts] fp32 (per-request skew).
// Needs weights.tables with every expert; grows `workspace` if needed. Enqueues only.
absl::Status RunMoeLayer(kernels::Backend& backend, const MoeLayerShape& shape,
                         const MoeLayerWeights& weights, MoeWorkspace& workspace, const void* x,
                         int64_t num_tokens, void* out, const float* logit_bias,
                         int64_t* expert_counts, const float* token_bias = nullptr);

}  // namespace moeserve::parallel
