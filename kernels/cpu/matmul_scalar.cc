// The portable path of the CPU matmul: the arithmetic of matmul_tile.h one element at a time,
// with std::fma (exactly rounded, like the vector FMA instructions), so it gives the bits of the
// AVX2 and AVX-512 paths on any CPU. It is the fallback and the readable statement of the order.
#include <cmath>

#include "kernels/cpu/matmul_tile.h"

namespace moeserve::kernels::cpu {
namespace {

float LoadW(const void* w, DType dtype, int64_t i) {
  switch (dtype) {
    case DType::kBF16:
      return Bf16ToF32(static_cast<const uint16_t*>(w)[i]);
    case DType::kF16:
      return F16ToF32(static_cast<const uint16_t*>(w)[i]);
    default:
      return static_cast<const float*>(w)[i];
  }
}

}  // namespace

void MatmulTileScalar(const MatmulTileArgs& a) {
  const int64_t kp = RoundUpToChunk(a.k);
  const size_t w_elem = DTypeSize(a.w_dtype);
  for (int64_t c = 0; c < a.n; ++c) {
    const void* w_row = static_cast<const char*>(a.w) + static_cast<size_t>(c * a.k) * w_elem;
    for (int64_t r = 0; r < a.m; ++r) {
      const float* x_row = a.x + r * a.ldx;
      float lane[kChunk] = {};
      for (int64_t i = 0; i < a.k; ++i) {
        lane[i % kChunk] = std::fma(x_row[i], LoadW(w_row, a.w_dtype, i), lane[i % kChunk]);
      }
      // The zero padding: fma(0, 0, lane) is lane except that -0 becomes +0; kept so the bits
      // are those of the vector paths in every case.
      for (int64_t i = a.k; i < kp; ++i) lane[i % kChunk] = std::fma(0.0f, 0.0f, lane[i % kChunk]);
      a.y[r * a.ldy + c] = ReduceLanes(lane);
    }
  }
}

}  // namespace moeserve::kernels::cpu
