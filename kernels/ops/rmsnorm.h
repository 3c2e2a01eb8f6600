// RMSNorm, optionally fused with the residual add that precedes it in every Mixtral block:
//   residual == nullptr:  out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * weight
//   residual != nullptr:  s = residual[r, :] + x[r, :]  (rounded to act_dtype, as the unfused
//                         add would store it);  residual[r, :] = s;  out[r, :] = norm(s) * weight
// Computed in fp32 whatever act_dtype is; out is rounded to act_dtype once.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/dtype.h"

namespace moeserve::kernels {

struct RmsNormParams {
  const void* x = nullptr;       // [rows, hidden] of act_dtype
  const void* weight = nullptr;  // [hidden] of weight_dtype
  DType weight_dtype = DType::kBF16;
  void* out = nullptr;  // [rows, hidden] of act_dtype; may alias x
  int64_t rows = 0;
  int64_t hidden = 0;
  float eps = 1e-5f;
  DType act_dtype = DType::kF32;
  void* residual = nullptr;  // optional [rows, hidden] of act_dtype; must not alias x or out
};

absl::Status Validate(const RmsNormParams& p);

}  // namespace moeserve::kernels
