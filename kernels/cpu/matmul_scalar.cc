// The portable path of the CPU matmul: the arithmetic of matmul_tile.h one element at a time,
// with std::fma (exactly rounded, like the vector FMA instructions), so it gives the bits of the
// AVX2 and AVX-512 paths on any CPU. It is the fallback and the readable statement of the order.
#include <cmath>

#include "kernels/cpu/matmul_tile.h"

namespace moeserve::kernels::cpu {
namespace {

// Packed element (step i, column j of the panel) as fp32 (matmul_pack.h).
float PanelValue(const void* panel, DType dtype, int64_t i, int64_t j) {
  if (dtype == DType::kBF16) {
    return Bf16ToF32(static_cast<const uint16_t*>(panel)[i * kPanelCols + 2 * (j % 16) + j / 16]);
  }
  return static_cast<const float*>(panel)[i * kPanelCols + j];
}

}  // namespace

void MatmulBlockScalar(const MatmulBlockArgs& a) {
  const size_t panel_bytes = static_cast<size_t>(a.k * kPanelCols) * DTypeSize(a.w_dtype);
  for (int64_t c = 0; c < a.cols; ++c) {
    const void* panel =
        static_cast<const char*>(a.w) + static_cast<size_t>(c / kPanelCols) * panel_bytes;
    const int64_t j = c % kPanelCols;
    for (int64_t r = 0; r < a.m; ++r) {
      const float* x_row = a.x + r * a.ldx;
      float acc = 0.0f;
      for (int64_t i = 0; i < a.k; ++i)
        acc = std::fma(x_row[i], PanelValue(panel, a.w_dtype, i, j), acc);
      a.y[r * a.ldy + c] = acc;
    }
  }
}

}  // namespace moeserve::kernels::cpu
