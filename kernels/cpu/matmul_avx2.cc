// The AVX2 path of the CPU matmul (built with -mavx2 -mfma -mf16c; called only when the CPU has
// them, see cpu_features.h). The outer-product form of matmul_avx512.cc with ymm: a panel step
// (32 columns) is four ymm, so a register block is 2 rows x 1 panel or 1 row x 2 panels
// (8 accumulators), each lane one output's fma chain in k order (matmul_tile.h).
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/cpu/matmul_tile.h"

namespace moeserve::kernels::cpu {
namespace {

#define MOESERVE_INLINE inline __attribute__((always_inline))

// One panel step as four fp32 vectors of columns 0-7, 8-15, 16-23, 24-31, exact.
struct Bf16Panel {
  using T = uint16_t;
  static MOESERVE_INLINE void Load(const T* p, __m256* v) {
    const __m256i mask = _mm256_set1_epi32(static_cast<int>(0xFFFF0000u));
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));       // words 0-7
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 16));  // words 8-15
    v[0] = _mm256_castsi256_ps(_mm256_slli_epi32(a, 16));
    v[1] = _mm256_castsi256_ps(_mm256_slli_epi32(b, 16));
    v[2] = _mm256_castsi256_ps(_mm256_and_si256(a, mask));
    v[3] = _mm256_castsi256_ps(_mm256_and_si256(b, mask));
  }
};
struct F32Panel {
  using T = float;
  static MOESERVE_INLINE void Load(const T* p, __m256* v) {
    for (int j = 0; j < 4; ++j) v[j] = _mm256_loadu_ps(p + 8 * j);
  }
};

template <int MR, int NP, class P>
void Kernel(const float* x, int64_t ldx, const typename P::T* w, int64_t panel_elems, int64_t k,
            float* y, int64_t ldy, int64_t cols) {
  __m256 acc[MR][NP][4];
  for (int r = 0; r < MR; ++r) {
    for (int q = 0; q < NP; ++q) {
      for (int j = 0; j < 4; ++j) acc[r][q][j] = _mm256_setzero_ps();
    }
  }
  for (int64_t i = 0; i < k; ++i) {
#pragma GCC unroll 2
    for (int q = 0; q < NP; ++q) {
      __m256 wv[4];
      P::Load(w + q * panel_elems + i * kPanelCols, wv);
#pragma GCC unroll 2
      for (int r = 0; r < MR; ++r) {
        const __m256 xb = _mm256_set1_ps(x[r * ldx + i]);
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j) acc[r][q][j] = _mm256_fmadd_ps(xb, wv[j], acc[r][q][j]);
      }
    }
  }
  for (int r = 0; r < MR; ++r) {
    alignas(32) float out[NP * kPanelCols];
    for (int q = 0; q < NP; ++q) {
      for (int j = 0; j < 4; ++j) _mm256_store_ps(out + q * kPanelCols + 8 * j, acc[r][q][j]);
    }
    std::memcpy(y + r * ldy, out, sizeof(float) * static_cast<size_t>(cols));
  }
}

template <class P>
void Block(const MatmulBlockArgs& a) {
  const int64_t panel_elems = a.k * kPanelCols;
  const typename P::T* w = static_cast<const typename P::T*>(a.w);
  for (int64_t r0 = 0; r0 < a.m; r0 += 2) {
    const bool two = r0 + 1 < a.m;
    for (int64_t q0 = 0; q0 < a.panels;) {
      const int np = !two && q0 + 1 < a.panels ? 2 : 1;
      const int64_t cols = std::min<int64_t>(a.cols - q0 * kPanelCols, np * kPanelCols);
      const float* x = a.x + r0 * a.ldx;
      float* y = a.y + r0 * a.ldy + q0 * kPanelCols;
      const typename P::T* wq = w + q0 * panel_elems;
      if (two) {
        Kernel<2, 1, P>(x, a.ldx, wq, panel_elems, a.k, y, a.ldy, cols);
      } else if (np == 2) {
        Kernel<1, 2, P>(x, a.ldx, wq, panel_elems, a.k, y, a.ldy, cols);
      } else {
        Kernel<1, 1, P>(x, a.ldx, wq, panel_elems, a.k, y, a.ldy, cols);
      }
      q0 += np;
    }
  }
}

}  // namespace

void MatmulBlockAvx2(const MatmulBlockArgs& a) {
  if (a.w_dtype == DType::kBF16) return Block<Bf16Panel>(a);
  return Block<F32Panel>(a);
}

}  // namespace moeserve::kernels::cpu
