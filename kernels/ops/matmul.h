// Dense linear layer without bias, torch.nn.Linear layout: y[m, n] = sum_k x[m, k] * w[n, k].
// Weights stay in their stored dtype; accumulation is fp32; y is rounded to y_dtype once.
//
// Determinism contract (batch invariance): y[m, n] depends only on row m of x and row n of w,
// with a summation order that does not depend on m_rows, the thread count or the batch
// composition (no split-K whose split varies with the batch). This is what makes a batch of
// sequences give the same bits as each sequence alone, on every backend.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/dtype.h"
#include "kernels/tensor.h"

namespace moeserve::kernels {

struct MatmulParams {
  const void* x = nullptr;  // [m_rows, k] of x_dtype
  const void* w = nullptr;  // [n, k] of w_dtype, laid out as w_layout
  DType w_dtype = DType::kBF16;
  void* y = nullptr;  // [m_rows, n] of y_dtype; must not alias x
  int64_t m_rows = 0;
  int64_t n = 0;
  int64_t k = 0;
  DType x_dtype = DType::kF32;
  DType y_dtype = DType::kF32;
  WeightLayout w_layout = WeightLayout::kRows;  // kCpuPanels: CPU backend only
};

absl::Status Validate(const MatmulParams& p);

// The params of a torch.nn.Linear without bias: y [rows, n] = x [rows, k] @ w^T, w a [n, k] view;
// x and y of `act` (y_dtype may be overridden afterwards, e.g. fp32 logits).
MatmulParams LinearParams(const void* x, int64_t rows, const TensorView& w, void* y,
                          DType act = DType::kF32);

}  // namespace moeserve::kernels
