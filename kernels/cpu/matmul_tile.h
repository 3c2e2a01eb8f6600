// The one per-element arithmetic of the CPU matmuls, and the block functions that implement it
// once per instruction set (matmul_scalar.cc, matmul_avx2.cc, matmul_avx512.cc).
//
// y[r, c] = dot(x[r, 0:k], w[c, 0:k]) is one fused multiply-add chain over k, in order:
//   acc = +0; for i = 0 .. k-1: acc = fma(x[r, i], w[c, i], acc); y[r, c] = acc
// with weights (bf16, f16, fp32) converted to fp32 exactly before the multiply. The order depends
// on k only: never on the rows in the call, the block, the thread or the instruction set. The
// vector paths hold one chain per lane, a lane per output column (outer-product form: x[r, i] is
// broadcast, a panel step of w (matmul_pack.h) is loaded), so every path gives the same bits
// (tests/unit/cpu_matmul_paths_test.cc). Weights come packed (matmul_pack.h).
#pragma once

#include <cstdint>

#include "kernels/cpu/matmul_pack.h"
#include "kernels/dtype.h"

namespace moeserve::kernels::cpu {

// One block: y[r * ldy + c] = dot(x row r, w row c0 + c) for r < m, c < cols, fp32, where the
// block's weight rows are `panels` consecutive packed panels starting at row c0 (a multiple of
// kPanelCols) and cols <= panels * kPanelCols (the last panel may be partial).
struct MatmulBlockArgs {
  const float* x = nullptr;  // [m, ldx] fp32
  int64_t ldx = 0;
  int64_t m = 0;
  const void* w = nullptr;       // the first panel, PackedDType elements
  DType w_dtype = DType::kBF16;  // PackedDType: kBF16 or kF32
  int64_t panels = 0;
  int64_t cols = 0;
  int64_t k = 0;
  float* y = nullptr;  // [m, ldy]
  int64_t ldy = 0;
};

void MatmulBlockScalar(const MatmulBlockArgs& a);
#if defined(MOESERVE_X86_KERNELS)
void MatmulBlockAvx2(const MatmulBlockArgs& a);    // REQUIRES: AVX2, FMA
void MatmulBlockAvx512(const MatmulBlockArgs& a);  // REQUIRES: AVX-512 F, BW, VL
#endif

}  // namespace moeserve::kernels::cpu
