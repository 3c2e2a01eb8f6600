// Dense linear layer without bias, torch.nn.Linear layout: y[m, n] = sum_k x[m, k] * w[n, k].
// Weights stay in their stored dtype; accumulation is fp32.
//
// Determinism contract: y[m, n] depends only on row m of x and row n of w, with a summation order
// that does not depend on m_rows, the thread count or the batch composition. This is what makes a
// batch of sequences give the same bits as each sequence alone.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/dtype.h"
#include "kernels/tensor.h"

namespace moeserve::kernels {

struct MatmulParams {
  const float* x = nullptr;  // [m_rows, k]
  const void* w = nullptr;   // [n, k] of w_dtype
  DType w_dtype = DType::kBF16;
  float* y = nullptr;  // [m_rows, n]; must not alias x
  int64_t m_rows = 0;
  int64_t n = 0;
  int64_t k = 0;
};

absl::Status Validate(const MatmulParams& p);

// The params of a torch.nn.Linear without bias: y [rows, n] = x [rows, k] @ w^T, w a [n, k] view.
MatmulParams LinearParams(const float* x, int64_t rows, const TensorView& w, float* y);

}  // namespace moeserve::kernels
