// The building blocks of an MoE layer, shared by the local path (moe_layer.h) and the
// expert-parallel path (ep_moe_layer.h), so both run the very same arithmetic:
//
//   RouteTokens      x [num_tokens, hidden] -> router logits -> top-k (expert_ids, weights)
//   GatherRowsFrom   dst[i] = src[index[i]]          (permute rows by a host index)
//   RunExpertGroups  rows grouped by expert -> w2(silu(w1 x) * w3 x), one GEMM group per expert
//   CombineRows      out[t] = sum_j weights[t, j] * expert_out[rows[t, j]], j ascending
//
// Bitwise contract: every step computes each output row from its own input row only (the CPU
// matmul's summation order depends on k alone, see kernels/ops/matmul.h), so the result of a
// token does not depend on which other rows share a call, how rows are grouped, or on which rank
// they run. That is what makes expert parallelism bitwise identical to world size 1.
//
// Pointers named x/in/out/src/dst are in `backend` memory; index arrays and routing results are
// host vectors (the dispatch needs them on the host to size the all-to-all).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "kernels/backend.h"
#include "parallel/moe/moe_layer.h"

namespace moeserve::parallel {

// The router's choice for each token, [num_tokens, top_k], experts ascending per token.
struct RoutedTokens {
  std::vector<int32_t> expert_ids;
  std::vector<float> weights;
};

// num_tokens may be 0 (empty result). logit_bias: optional host [num_experts].
absl::Status RouteTokens(kernels::Backend& backend, const MoeLayerShape& shape,
                         const kernels::TensorView& gate, const float* x, int64_t num_tokens,
                         const float* logit_bias, RoutedTokens* routed);

// dst [index.size(), hidden] = src [num_src_rows, hidden] rows picked by `index` (host).
absl::Status GatherRowsFrom(kernels::Backend& backend, const float* src, int64_t num_src_rows,
                            absl::Span<const int32_t> index, int64_t hidden, float* dst);

// in/out [expert_offsets.back(), hidden]; rows expert_offsets[e] .. expert_offsets[e+1]-1 belong
// to expert e. An expert with rows but no weights (not held by this rank) is Internal.
absl::Status RunExpertGroups(kernels::Backend& backend, const MoeLayerShape& shape,
                             absl::Span<const ExpertWeights> experts, const float* in,
                             absl::Span<const int32_t> expert_offsets, float* out);

// out [num_tokens, hidden] from expert_out [num_expert_rows, hidden]; rows and weights are host
// [num_tokens, top_k].
absl::Status CombineRows(kernels::Backend& backend, const MoeLayerShape& shape,
                         const float* expert_out, int64_t num_expert_rows,
                         absl::Span<const int32_t> rows, absl::Span<const float> weights,
                         int64_t num_tokens, float* out);

}  // namespace moeserve::parallel
