// The AVX-512 path of the CPU matmul (built with -mavx512f -mavx512bw -mavx512vl -mfma; called
// only when the CPU has them, see cpu_features.h). Outer-product form over packed panels
// (matmul_pack.h): a register block is MR x rows by NP panels (2 zmm of 16 columns each); per k
// step it loads NP panel steps and broadcasts MR x values, each zmm lane being one output's fma
// chain in k order (matmul_tile.h). MR x NP x 2 accumulators stay in registers for the whole k.
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <utility>

#include "kernels/cpu/matmul_tile.h"

namespace moeserve::kernels::cpu {
namespace {

#define MOESERVE_INLINE inline __attribute__((always_inline))

// One panel step (32 columns) as two fp32 vectors: columns 0..15 and 16..31, exact.
struct Bf16Panel {
  using T = uint16_t;
  static MOESERVE_INLINE void Load(const T* p, __m512& lo, __m512& hi) {
    const __m512i v = _mm512_loadu_si512(p);
    lo = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
    hi = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(static_cast<int>(0xFFFF0000u))));
  }
};
struct F32Panel {
  using T = float;
  static MOESERVE_INLINE void Load(const T* p, __m512& lo, __m512& hi) {
    lo = _mm512_loadu_ps(p);
    hi = _mm512_loadu_ps(p + 16);
  }
};

struct Micro {
  const float* x;
  int64_t ldx;
  const void* w;
  int64_t panel_elems;  // elements from one panel to the next
  int64_t k;
  float* y;
  int64_t ldy;
  int64_t cols;  // valid columns of this block, <= 32 * NP
};

// y[r][c] for r < MR, c < cols over NP panels.
template <int MR, int NP, class P>
void Kernel(const Micro& a) {
  using T = typename P::T;
  const T* w = static_cast<const T*>(a.w);
  __m512 acc[MR][NP][2];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 4
    for (int q = 0; q < NP; ++q) acc[r][q][0] = acc[r][q][1] = _mm512_setzero_ps();
  }
  for (int64_t i = 0; i < a.k; ++i) {
    __m512 wv[NP][2];
#pragma GCC unroll 4
    for (int q = 0; q < NP; ++q)
      P::Load(w + q * a.panel_elems + i * kPanelCols, wv[q][0], wv[q][1]);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const __m512 xb = _mm512_set1_ps(a.x[r * a.ldx + i]);
#pragma GCC unroll 4
      for (int q = 0; q < NP; ++q) {
        acc[r][q][0] = _mm512_fmadd_ps(xb, wv[q][0], acc[r][q][0]);
        acc[r][q][1] = _mm512_fmadd_ps(xb, wv[q][1], acc[r][q][1]);
      }
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    float* y = a.y + r * a.ldy;
#pragma GCC unroll 8
    for (int v = 0; v < 2 * NP; ++v) {
      const int64_t col = 16 * v;
      if (col + 16 <= a.cols) {
        _mm512_storeu_ps(y + col, acc[r][v / 2][v % 2]);
      } else if (col < a.cols) {
        _mm512_mask_storeu_ps(y + col, static_cast<__mmask16>((1u << (a.cols - col)) - 1),
                              acc[r][v / 2][v % 2]);
      }
    }
  }
}

using KernelFn = void (*)(const Micro&);
constexpr int kMaxRows = 12;  // MR x 2 accumulators + 2 panel vectors + broadcast <= 32 zmm

template <int NP, class P, int... R>
constexpr std::array<KernelFn, sizeof...(R)> Table(std::integer_sequence<int, R...>) {
  return {&Kernel<R + 1, NP, P>...};
}

// Panels per register block for MR rows: enough independent chains (>= 8) to cover the FMA
// latency, few enough accumulators to stay in registers.
constexpr int PanelsFor(int64_t rows) { return rows <= 2 ? 4 : rows <= 6 ? 2 : 1; }

template <class P>
void Block(const MatmulBlockArgs& a) {
  static constexpr auto k1 = Table<1, P>(std::make_integer_sequence<int, kMaxRows>());
  static constexpr auto k2 = Table<2, P>(std::make_integer_sequence<int, 6>());
  static constexpr auto k4 = Table<4, P>(std::make_integer_sequence<int, 2>());
  const int64_t panel_elems = a.k * kPanelCols;
  for (int64_t r0 = 0; r0 < a.m; r0 += kMaxRows) {
    const int64_t rows = std::min<int64_t>(kMaxRows, a.m - r0);
    const int np_max = PanelsFor(rows);
    for (int64_t q0 = 0; q0 < a.panels;) {
      int np = np_max;
      while (np > a.panels - q0) np /= 2;
      const Micro micro{a.x + r0 * a.ldx,
                        a.ldx,
                        static_cast<const typename P::T*>(a.w) + q0 * panel_elems,
                        panel_elems,
                        a.k,
                        a.y + r0 * a.ldy + q0 * kPanelCols,
                        a.ldy,
                        std::min<int64_t>(a.cols - q0 * kPanelCols, np * kPanelCols)};
      const size_t index = static_cast<size_t>(rows - 1);
      (np == 4 ? k4[index] : np == 2 ? k2[index] : k1[index])(micro);
      q0 += np;
    }
  }
}

}  // namespace

void MatmulBlockAvx512(const MatmulBlockArgs& a) {
  if (a.w_dtype == DType::kBF16) return Block<Bf16Panel>(a);
  return Block<F32Panel>(a);
}

}  // namespace moeserve::kernels::cpu
