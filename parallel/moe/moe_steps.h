// The building blocks of an MoE layer, shared by the local path (moe_layer.h) and the
// expert-parallel path (ep_moe_layer.h), so both run the very same ops:
//
//   EnqueueRouter   x [T, hidden] -> logits [T, E] fp32 -> RouterTopK (expert_ids, weights)
//   EnqueueGather   dst[i] = src[rows[i]]
//   EnqueueExperts  expert-grouped rows -> GroupedMatmul SwiGLU (w1, w3) -> GroupedMatmul (w2)
//   EnqueueCombine  out[t] = sum_j weights[t, j] * expert_out[rows[t, j]], j ascending
//
// Bitwise contract: every op computes each output row from its own input row only, in an order
// that depends on the shapes alone (kernels/ops/matmul.h, moe.h), so the result of a token does
// not depend on which other rows share a call, how rows are grouped, or on which rank they run.
// That is what makes expert parallelism bitwise identical to world size 1.
//
// Every pointer is backend memory (index arrays included); activations are in
// backend.activation_dtype(). Each step validates sizes and returns; nothing is synchronised.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/backend.h"
#include "parallel/moe/moe_layer.h"

namespace moeserve::parallel {

// logit_bias: optional [E] fp32; token_bias: optional [T, E] fp32 (per-request skew).
// num_tokens may be 0 (nothing enqueued).
absl::Status EnqueueRouter(kernels::Backend& backend, const MoeLayerShape& shape,
                           const kernels::TensorView& gate, const void* x, int64_t num_tokens,
                           const float* logit_bias, float* logits, int32_t* expert_ids,
                           float* weights, const float* token_bias = nullptr);

absl::Status EnqueueGather(kernels::Backend& backend, const void* src, int64_t num_src_rows,
                           const int32_t* rows, int64_t num_rows, int64_t hidden, void* dst);

// in [max_rows, hidden] grouped by expert_offsets [E+1] (backend memory); inter
// [max_rows, intermediate] scratch; out [max_rows, hidden]. max_rows bounds offsets[E].
absl::Status EnqueueExperts(kernels::Backend& backend, const MoeLayerShape& shape,
                            const ExpertTables& tables, const void* in,
                            const int32_t* expert_offsets, int64_t max_rows, void* inter,
                            void* out);

// out [num_tokens, hidden] from expert_out [num_expert_rows, hidden]; rows and weights
// [num_tokens, top_k].
absl::Status EnqueueCombine(kernels::Backend& backend, const MoeLayerShape& shape,
                            const void* expert_out, int64_t num_expert_rows, const int32_t* rows,
                            const float* weights, int64_t num_tokens, void* out);

}  // namespace moeserve::parallel
