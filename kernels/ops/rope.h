// Rotary position embedding, Hugging Face "rotate_half" convention (the layout of HF Mixtral
// checkpoints): for i < d/2, with f_i = theta^(-2i/d) in fp32 and angle a = pos * f_i,
//   x'[i]       = x[i] * cos(a) - x[i + d/2] * sin(a)
//   x'[i + d/2] = x[i + d/2] * cos(a) + x[i] * sin(a)
// Applied in place to the query and key heads of every token, in fp32, rounded to act_dtype.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/dtype.h"

namespace moeserve::kernels {

struct RopeParams {
  void* q = nullptr;                   // [num_tokens, num_q_heads, head_dim] of act_dtype
  void* k = nullptr;                   // [num_tokens, num_kv_heads, head_dim] of act_dtype
  const int32_t* positions = nullptr;  // [num_tokens] device
  int64_t num_tokens = 0;
  int64_t num_q_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;  // even
  float theta = 1e6f;
  DType act_dtype = DType::kF32;
};

absl::Status Validate(const RopeParams& p);

}  // namespace moeserve::kernels
