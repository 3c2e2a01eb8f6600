#include "kernels/ops/matmul.h"

#include "kernels/ops/check.h"

namespace moeserve::kernels {

absl::Status Validate(const MatmulParams& p) {
  MOESERVE_PARAM_CHECK("matmul", p.x && p.w && p.y);
  MOESERVE_PARAM_CHECK("matmul", p.m_rows >= 0 && p.n > 0 && p.k > 0, "(m=", p.m_rows, " n=", p.n,
                       " k=", p.k, ")");
  MOESERVE_PARAM_CHECK("matmul", IsFloat(p.w_dtype));
  MOESERVE_ACT_DTYPE_CHECK("matmul", "x_dtype", p.x_dtype);
  MOESERVE_ACT_DTYPE_CHECK("matmul", "y_dtype", p.y_dtype);
  MOESERVE_PARAM_CHECK("matmul", p.x != static_cast<const void*>(p.y));
  return absl::OkStatus();
}

MatmulParams LinearParams(const void* x, int64_t rows, const TensorView& w, void* y, DType act) {
  MatmulParams p;
  p.x = x;
  p.w = w.data;
  p.w_dtype = w.dtype;
  p.y = y;
  p.m_rows = rows;
  p.n = w.dim(0);
  p.k = w.dim(1);
  p.x_dtype = act;
  p.y_dtype = act;
  p.w_layout = w.layout;
  return p;
}

}  // namespace moeserve::kernels
