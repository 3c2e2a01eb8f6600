#include "kernels/ops/matmul.h"

#include "kernels/ops/check.h"

namespace moeserve::kernels {

absl::Status Validate(const MatmulParams& p) {
  MOESERVE_PARAM_CHECK("matmul", p.x && p.w && p.y);
  MOESERVE_PARAM_CHECK("matmul", p.m_rows >= 0 && p.n > 0 && p.k > 0, "(m=", p.m_rows, " n=", p.n,
                       " k=", p.k, ")");
  MOESERVE_PARAM_CHECK("matmul", IsFloat(p.w_dtype));
  MOESERVE_PARAM_CHECK("matmul", static_cast<const void*>(p.x) != static_cast<void*>(p.y));
  return absl::OkStatus();
}

MatmulParams LinearParams(const float* x, int64_t rows, const TensorView& w, float* y) {
  MatmulParams p;
  p.x = x;
  p.w = w.data;
  p.w_dtype = w.dtype;
  p.y = y;
  p.m_rows = rows;
  p.n = w.dim(0);
  p.k = w.dim(1);
  return p;
}

}  // namespace moeserve::kernels
