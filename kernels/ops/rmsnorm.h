// RMSNorm: out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * weight, computed in fp32.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/dtype.h"

namespace moeserve::kernels {

struct RmsNormParams {
  const float* x = nullptr;      // [rows, hidden]
  const void* weight = nullptr;  // [hidden] of weight_dtype
  DType weight_dtype = DType::kBF16;
  float* out = nullptr;  // [rows, hidden]; may alias x
  int64_t rows = 0;
  int64_t hidden = 0;
  float eps = 1e-5f;
};

absl::Status Validate(const RmsNormParams& p);

}  // namespace moeserve::kernels
