// The one per-element arithmetic of the CPU matmuls, and the tile functions that implement it
// once per instruction set (matmul_scalar.cc, matmul_avx2.cc, matmul_avx512.cc).
//
// y[r, c] = dot(x[r, 0:k], w[c, 0:k]) is defined on x and w zero-padded to kp = RoundUpToChunk(k):
//   1. 16 partial sums ("lanes"), all starting at +0: lane j is the fused multiply-add chain
//      lane_j = fma(x[i], w[i], lane_j) over i = j, j + 16, j + 32, ... < kp, in that order
//      (the padded elements add fma(0, 0, lane_j)).
//   2. A fixed pairwise reduction: s8[j] = lane[j] + lane[j+8] (j < 8), s4[j] = s8[j] + s8[j+4],
//      s2[j] = s4[j] + s4[j+2], y = s2[0] + s2[1].
// Weights (bf16, f16, fp32) are converted to fp32 exactly before the multiply. The order depends
// on k only: never on the rows in the call, the tile, the thread or the instruction set. An
// AVX-512 lane vector is one zmm, AVX2 holds it in two ymm (lanes 0-7, 8-15), the scalar path
// in a float[16]; every path gives the same bits (tests/unit/cpu_matmul_paths_test.cc).
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/dtype.h"

namespace moeserve::kernels::cpu {

inline constexpr int64_t kChunk = 16;  // lanes of partial sums = k elements per step
inline int64_t RoundUpToChunk(int64_t k) { return (k + kChunk - 1) / kChunk * kChunk; }

// Step 2 above, on the 16 lanes.
inline float ReduceLanes(const float* lane) {
  float s8[8], s4[4], s2[2];
  for (int j = 0; j < 8; ++j) s8[j] = lane[j] + lane[j + 8];
  for (int j = 0; j < 4; ++j) s4[j] = s8[j] + s8[j + 4];
  for (int j = 0; j < 2; ++j) s2[j] = s4[j] + s4[j + 2];
  return s2[0] + s2[1];
}

// One tile: y[r * ldy + c] = dot(x row r, w row c) for r < m, c < n, fp32.
struct MatmulTileArgs {
  // [m, ldx] fp32. When k % 16 != 0 every row is readable up to kp and zero in [k, kp).
  const float* x = nullptr;
  int64_t ldx = 0;
  int64_t m = 0;
  // [n, k] rows of w_dtype (stride k, not padded): the tile's first weight row.
  const void* w = nullptr;
  DType w_dtype = DType::kBF16;
  int64_t n = 0;
  // Weight rows readable before w (rows of the same matrix before the tile): a tile narrower
  // than a register block re-reads some of them instead of taking a slower path.
  int64_t w_rows_before = 0;
  int64_t k = 0;
  float* y = nullptr;  // [m, ldy]
  int64_t ldy = 0;
  // 64-byte aligned, >= ScratchFloats(n, k) floats: weight panels converted to fp32.
  float* scratch = nullptr;
};

// Scratch a tile of n weight rows may use.
inline int64_t MatmulTileScratchFloats(int64_t n, int64_t k) {
  return (n < kChunk ? kChunk : n) * RoundUpToChunk(k);
}

void MatmulTileScalar(const MatmulTileArgs& a);
#if defined(MOESERVE_X86_KERNELS)
void MatmulTileAvx2(const MatmulTileArgs& a);    // REQUIRES: AVX2, FMA, F16C
void MatmulTileAvx512(const MatmulTileArgs& a);  // REQUIRES: AVX-512 F, BW, VL
#endif

}  // namespace moeserve::kernels::cpu
