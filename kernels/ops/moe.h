// MoE token movement and activation:
//  - GatherRows: dst[i, :] = src[rows[i], :]  (permute tokens into expert-grouped order)
//  - SwiGlu:     out[i] = silu(gate[i]) * up[i]  (Mixtral expert activation, silu(x) = x/(1+e^-x))
//  - MoeCombine: out[t, :] = sum_{j < top_k} weights[t, j] * expert_out[src_rows[t, j], :],
//                summed in j order (ascending expert id, see router.h) for determinism.
#pragma once

#include <cstdint>

#include "absl/status/status.h"

namespace moeserve::kernels {

struct GatherRowsParams {
  const float* src = nullptr;     // [num_src_rows, hidden]
  const int32_t* rows = nullptr;  // [num_rows]
  float* dst = nullptr;           // [num_rows, hidden]
  int64_t num_rows = 0;
  int64_t num_src_rows = 0;
  int64_t hidden = 0;
};

struct SwiGluParams {
  const float* gate = nullptr;  // [n]
  const float* up = nullptr;    // [n]
  float* out = nullptr;         // [n]; may alias gate or up
  int64_t n = 0;
};

struct MoeCombineParams {
  const float* expert_out = nullptr;  // [num_expert_rows, hidden]
  const int32_t* src_rows = nullptr;  // [num_tokens, top_k]
  const float* weights = nullptr;     // [num_tokens, top_k]
  float* out = nullptr;               // [num_tokens, hidden]
  int64_t num_tokens = 0;
  int64_t top_k = 2;
  int64_t hidden = 0;
  int64_t num_expert_rows = 0;
};

absl::Status Validate(const GatherRowsParams& p);
absl::Status Validate(const SwiGluParams& p);
absl::Status Validate(const MoeCombineParams& p);

}  // namespace moeserve::kernels
