// The AVX2 path of the CPU matmul (built with -mavx2 -mfma -mf16c; called only when the CPU has
// them, see cpu_features.h). The 16 lanes of one dot product (matmul_tile.h) live in two ymm
// (lanes 0-7 and 8-15); a register block is 2x2 or 1x4 (x rows x weight rows) = 8 ymm of sums.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/cpu/matmul_tile.h"

namespace moeserve::kernels::cpu {
namespace {

#define MOESERVE_INLINE inline __attribute__((always_inline))

// Weight loaders: 8 consecutive elements as fp32 (exact).
struct Bf16Weights {
  using T = uint16_t;
  static MOESERVE_INLINE __m256 Load8(const T* p) {
    const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
  }
};
struct F16Weights {
  using T = uint16_t;
  static MOESERVE_INLINE __m256 Load8(const T* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
};
struct F32Weights {
  using T = float;
  static MOESERVE_INLINE __m256 Load8(const T* p) { return _mm256_loadu_ps(p); }
};

// ReduceLanes on the lanes (lo = 0-7, hi = 8-15), in its order.
MOESERVE_INLINE float Reduce(__m256 lo, __m256 hi) {
  const __m256 s8 = _mm256_add_ps(lo, hi);  // lane j + lane j+8
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));  // j + j+2
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
}

// out[i * NR + j] = dot(x row i, w row j) for an MR x NR block: x rows padded (matmul_tile.h),
// w rows of `full` whole chunks then `tail` elements (copied to a zero-padded buffer).
template <int MR, int NR, class W>
MOESERVE_INLINE void Block(const float* x, int64_t ldx, const typename W::T* w, int64_t ldw,
                           int64_t full, int tail, float* out) {
  using T = typename W::T;
  __m256 lo[MR * NR], hi[MR * NR];
  for (int s = 0; s < MR * NR; ++s) lo[s] = hi[s] = _mm256_setzero_ps();
  auto step = [&](int64_t offset, const T* const* w_rows) __attribute__((always_inline)) {
    __m256 xl[MR], xh[MR];
    for (int i = 0; i < MR; ++i) {
      xl[i] = _mm256_loadu_ps(x + i * ldx + offset);
      xh[i] = _mm256_loadu_ps(x + i * ldx + offset + 8);
    }
    for (int j = 0; j < NR; ++j) {
      const __m256 wl = W::Load8(w_rows[j]);
      const __m256 wh = W::Load8(w_rows[j] + 8);
      for (int i = 0; i < MR; ++i) {
        lo[i * NR + j] = _mm256_fmadd_ps(xl[i], wl, lo[i * NR + j]);
        hi[i * NR + j] = _mm256_fmadd_ps(xh[i], wh, hi[i * NR + j]);
      }
    }
  };
  for (int64_t c = 0; c < full; ++c) {
    const T* rows[NR];
    for (int j = 0; j < NR; ++j) rows[j] = w + j * ldw + c * kChunk;
    step(c * kChunk, rows);
  }
  if (tail > 0) {
    T padded[NR][kChunk] = {};
    const T* rows[NR];
    for (int j = 0; j < NR; ++j) {
      std::memcpy(padded[j], w + j * ldw + full * kChunk, sizeof(T) * static_cast<size_t>(tail));
      rows[j] = padded[j];
    }
    step(full * kChunk, rows);
  }
  for (int s = 0; s < MR * NR; ++s) out[s] = Reduce(lo[s], hi[s]);
}

struct Panel {
  const float* x;
  int64_t ldx, m;
  int64_t ldw, n;
  int64_t after;  // weight rows readable after n (zero rows of a converted panel)
  int64_t full;
  int tail;
  float* y;
  int64_t ldy;
};

// Rows [r0, r0 + MR) of y over all n columns; see matmul_avx512.cc.
template <int MR, int NR, class W>
void RowBlock(const Panel& p, const typename W::T* w, int64_t r0) {
  float out[MR * NR];
  for (int64_t c = 0; c < p.n;) {
    const int64_t start = c + NR <= p.n + p.after ? c : p.n + p.after - NR;
    Block<MR, NR, W>(p.x + r0 * p.ldx, p.ldx, w + start * p.ldw, p.ldw, p.full, p.tail, out);
    const int64_t end = std::min(start + NR, p.n);
    for (int i = 0; i < MR; ++i) {
      float* y_row = p.y + (r0 + i) * p.ldy;
      for (int64_t col = c; col < end; ++col) y_row[col] = out[i * NR + (col - start)];
    }
    c = end;
  }
}

template <class W>
void Rows(const Panel& p, const typename W::T* w) {
  int64_t r = 0;
  for (; r + 2 <= p.m; r += 2) RowBlock<2, 2, W>(p, w, r);
  if (r < p.m) RowBlock<1, 4, W>(p, w, r);
}

constexpr int64_t kConvertMinRows = 4;  // see matmul_avx512.cc

template <class W>
void Tile(const MatmulTileArgs& a) {
  using T = typename W::T;
  const int64_t kp = RoundUpToChunk(a.k);
  const T* w = static_cast<const T*>(a.w);
  const bool convert = a.m >= kConvertMinRows || a.n + a.w_rows_before < kChunk;
  if (!convert) {
    const Panel p{a.x, a.ldx, a.m, a.k, a.n, 0, a.k / kChunk, static_cast<int>(a.k % kChunk),
                  a.y, a.ldy};
    Rows<W>(p, w);
    return;
  }
  // [rows, kp] fp32, zero-padded along k and up to kChunk rows.
  const int64_t rows = std::max<int64_t>(a.n, kChunk);
  const int64_t full8 = a.k / 8;
  for (int64_t r = 0; r < a.n; ++r) {
    const T* src = w + r * a.k;
    float* dst = a.scratch + r * kp;
    for (int64_t c = 0; c < full8; ++c) _mm256_store_ps(dst + c * 8, W::Load8(src + c * 8));
    T tail[8] = {};
    std::memcpy(tail, src + full8 * 8, sizeof(T) * static_cast<size_t>(a.k % 8));
    for (int64_t i = full8 * 8; i < kp; i += 8) {
      _mm256_store_ps(dst + i, i == full8 * 8 ? W::Load8(tail) : _mm256_setzero_ps());
    }
  }
  std::memset(a.scratch + a.n * kp, 0, sizeof(float) * static_cast<size_t>((rows - a.n) * kp));
  const Panel p{a.x, a.ldx, a.m, kp, a.n, rows - a.n, kp / kChunk, 0, a.y, a.ldy};
  Rows<F32Weights>(p, a.scratch);
}

}  // namespace

void MatmulTileAvx2(const MatmulTileArgs& a) {
  switch (a.w_dtype) {
    case DType::kBF16:
      return Tile<Bf16Weights>(a);
    case DType::kF16:
      return Tile<F16Weights>(a);
    default:
      return Tile<F32Weights>(a);
  }
}

}  // namespace moeserve::kernels::cpu
