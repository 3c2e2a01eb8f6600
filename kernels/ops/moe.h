// MoE token movement, expert GEMMs and combine, all sized on the device:
//
//   MoeAlign       expert_ids [T, k] -> expert_offsets [E+1], permuted_token [T*k] (source token
//                  of each expert-grouped row), combine_rows [T, k] (row holding choice (t, j)),
//                  and optionally expert_counts[e] += rows of expert e (load statistics).
//                  Rows of expert e are offsets[e] .. offsets[e+1]-1 in ascending (t, j) order:
//                  a stable counting sort, so the plan of a token depends on the routing alone.
//   GatherRows     dst[i, :] = src[rows[i], :]                 (permute into expert order)
//   GroupedMatmul  for every expert e and row r in its group:
//                    plain:  y[r, :] = x[r, :] @ w[e]^T
//                    SwiGLU: y[r, :] = silu(x[r, :] @ w[e]^T) * (x[r, :] @ w_up[e]^T)
//                  reading expert_offsets on the device (no host sync, capturable in a graph).
//   SwiGlu         out[i] = silu(gate[i]) * up[i]   (silu(x) = x / (1 + e^-x))
//   MoeCombine     out[t, :] = sum_{j < top_k} weights[t, j] * expert_out[src_rows[t, j], :],
//                  summed in j order (ascending expert id, see router.h) for determinism.
//
// Batch invariance: every output row is computed from its own input row only, in an order that
// does not depend on how many rows share the call or how they are grouped.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/dtype.h"

namespace moeserve::kernels {

struct MoeAlignParams {
  const int32_t* expert_ids = nullptr;  // [num_tokens, top_k], each in [0, num_experts)
  int32_t* expert_offsets = nullptr;    // [num_experts + 1]
  int32_t* permuted_token = nullptr;    // [num_tokens * top_k]
  int32_t* combine_rows = nullptr;      // [num_tokens, top_k]
  int64_t* expert_counts = nullptr;     // optional [num_experts], accumulated (+=)
  int64_t num_tokens = 0;
  int64_t top_k = 2;
  int64_t num_experts = 0;
};

struct GatherRowsParams {
  const void* src = nullptr;      // [num_src_rows, hidden] of act_dtype
  const int32_t* rows = nullptr;  // [num_rows], each in [0, num_src_rows)
  void* dst = nullptr;            // [num_rows, hidden] of act_dtype
  int64_t num_rows = 0;
  int64_t num_src_rows = 0;
  int64_t hidden = 0;
  DType act_dtype = DType::kF32;
};

struct GroupedMatmulParams {
  const void* x = nullptr;  // [max_rows, k] of act_dtype (only rows < expert_offsets[E] are read)
  // [num_experts] device arrays of pointers to [n, k] weights of w_dtype (torch.nn.Linear
  // layout). An expert this rank does not hold is nullptr; no rows may be routed to it.
  const void* const* w = nullptr;
  const void* const* w_up = nullptr;  // non-null: the fused SwiGLU form
  DType w_dtype = DType::kBF16;
  void* y = nullptr;                        // [max_rows, n] of act_dtype
  const int32_t* expert_offsets = nullptr;  // [num_experts + 1] device, offsets[0] == 0
  int64_t num_experts = 0;
  int64_t max_rows = 0;  // host upper bound of expert_offsets[num_experts] (grid sizing)
  int64_t n = 0;
  int64_t k = 0;
  DType act_dtype = DType::kF32;
  WeightLayout w_layout =
      WeightLayout::kRows;  // of every expert's w and w_up; kCpuPanels: CPU only
};

struct SwiGluParams {
  const void* gate = nullptr;  // [n] of act_dtype
  const void* up = nullptr;    // [n] of act_dtype
  void* out = nullptr;         // [n] of act_dtype; may alias gate or up
  int64_t n = 0;
  DType act_dtype = DType::kF32;
};

struct MoeCombineParams {
  const void* expert_out = nullptr;   // [num_expert_rows, hidden] of act_dtype
  const int32_t* src_rows = nullptr;  // [num_tokens, top_k]
  const float* weights = nullptr;     // [num_tokens, top_k] fp32
  void* out = nullptr;                // [num_tokens, hidden] of act_dtype
  int64_t num_tokens = 0;
  int64_t top_k = 2;
  int64_t hidden = 0;
  int64_t num_expert_rows = 0;
  DType act_dtype = DType::kF32;
};

// Sizes, dtypes and pointers only (index arrays live on the device).
absl::Status Validate(const MoeAlignParams& p);
absl::Status Validate(const GatherRowsParams& p);
absl::Status Validate(const GroupedMatmulParams& p);
absl::Status Validate(const SwiGluParams& p);
absl::Status Validate(const MoeCombineParams& p);
// Index checks on host copies (expert-parallel paths build these plans on the host).
absl::Status ValidateIndices(const GatherRowsParams& p, const int32_t* host_rows);
absl::Status ValidateIndices(const MoeCombineParams& p, const int32_t* host_src_rows);

}  // namespace moeserve::kernels
