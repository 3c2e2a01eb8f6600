// The AVX-512 path of the CPU matmul (built with -mavx512f -mavx512bw -mavx512vl -mfma; called
// only when the CPU has them, see cpu_features.h). One zmm holds the 16 lanes of one dot product
// (matmul_tile.h); a register block is 4x4, 2x8 or 1x16 (x rows x weight rows), always 16 lane
// vectors, reduced together by a transpose that performs exactly the pairwise order of
// ReduceLanes.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/cpu/matmul_tile.h"

namespace moeserve::kernels::cpu {
namespace {

#define MOESERVE_INLINE inline __attribute__((always_inline))

// Weight loaders: 16 consecutive elements as fp32 (exact), or the first `count` of them with
// zeros after (the masked load never touches the masked-off addresses).
struct Bf16Weights {
  using T = uint16_t;
  static MOESERVE_INLINE __m512 Load(const T* p) {
    const __m512i v =
        _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
  }
  static MOESERVE_INLINE __m512 LoadFirst(const T* p, __mmask16 mask) {
    const __m512i v = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
  }
};
struct F16Weights {
  using T = uint16_t;
  static MOESERVE_INLINE __m512 Load(const T* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static MOESERVE_INLINE __m512 LoadFirst(const T* p, __mmask16 mask) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, p));
  }
};
struct F32Weights {
  using T = float;
  static MOESERVE_INLINE __m512 Load(const T* p) { return _mm512_loadu_ps(p); }
  static MOESERVE_INLINE __m512 LoadFirst(const T* p, __mmask16 mask) {
    return _mm512_maskz_loadu_ps(mask, p);
  }
};

// Lane 4q+i of the result = ReduceLanes(lanes of acc[4i+q]), for 16 lane vectors. Each level adds
// the pairs ReduceLanes adds (lane j + lane j+8, then j + j+4, j + j+2, 0 + 1), two or four
// accumulators per instruction.
MOESERVE_INLINE __m512 Reduce16(const __m512* acc) {
  __m512 s8[8], s4[4], s2[2];
  for (int p = 0; p < 8; ++p) {  // [a.q0 a.q1 b.q0 b.q1] + [a.q2 a.q3 b.q2 b.q3]
    s8[p] = _mm512_add_ps(_mm512_shuffle_f32x4(acc[2 * p], acc[2 * p + 1], 0x44),
                          _mm512_shuffle_f32x4(acc[2 * p], acc[2 * p + 1], 0xEE));
  }
  for (int p = 0; p < 4; ++p) {  // [a.q0 a.q2 b.q0 b.q2] + [a.q1 a.q3 b.q1 b.q3]
    s4[p] = _mm512_add_ps(_mm512_shuffle_f32x4(s8[2 * p], s8[2 * p + 1], 0x88),
                          _mm512_shuffle_f32x4(s8[2 * p], s8[2 * p + 1], 0xDD));
  }
  for (int p = 0; p < 2; ++p) {  // per 128 bits: [a0 a1 b0 b1] + [a2 a3 b2 b3]
    s2[p] = _mm512_add_ps(_mm512_shuffle_ps(s4[2 * p], s4[2 * p + 1], 0x44),
                          _mm512_shuffle_ps(s4[2 * p], s4[2 * p + 1], 0xEE));
  }
  // per 128 bits: [a0 a2 b0 b2] + [a1 a3 b1 b3]
  return _mm512_add_ps(_mm512_shuffle_ps(s2[0], s2[1], 0x88),
                       _mm512_shuffle_ps(s2[0], s2[1], 0xDD));
}

// Accumulator of output (i, j) of a block: Reduce16 then leaves the block row-major in its result.
constexpr int Slot(int i, int j, int nr) { return 4 * ((i * nr + j) % 4) + (i * nr + j) / 4; }

// out[i * NR + j] = dot(x row i, w row j) for an MR x NR block: x rows padded (matmul_tile.h),
// w rows of `full` whole chunks then `tail` elements. out: 64-byte aligned float[16].
template <int MR, int NR, class W, bool kPrefetch>
MOESERVE_INLINE void Block(const float* x, int64_t ldx, const typename W::T* w, int64_t ldw,
                           int64_t full, int tail, float* out) {
  static_assert(MR * NR == 16, "Reduce16 takes 16 accumulators");
  __m512 acc[16];
#pragma GCC unroll 16
  for (int s = 0; s < 16; ++s) acc[s] = _mm512_setzero_ps();
  auto step = [&](int64_t offset, auto load_w) __attribute__((always_inline)) {
    __m512 xv[MR];
#pragma GCC unroll 4
    for (int i = 0; i < MR; ++i) xv[i] = _mm512_loadu_ps(x + i * ldx + offset);
#pragma GCC unroll 16
    for (int j = 0; j < NR; ++j) {
      const __m512 wv = load_w(w + j * ldw + offset);
#pragma GCC unroll 4
      for (int i = 0; i < MR; ++i) {
        acc[Slot(i, j, NR)] = _mm512_fmadd_ps(xv[i], wv, acc[Slot(i, j, NR)]);
      }
    }
  };
  for (int64_t c = 0; c < full; ++c) {
    if constexpr (kPrefetch) {
      // The next block's weight rows (the rows after this block's), while this one computes:
      // decode streams the LM head from DRAM. Harmless past the end (a prefetch never faults).
#pragma GCC unroll 16
      for (int j = 0; j < NR; ++j) {
        _mm_prefetch(reinterpret_cast<const char*>(w + (NR + j) * ldw + c * kChunk), _MM_HINT_T0);
      }
    }
    step(c * kChunk, [](const typename W::T* p) { return W::Load(p); });
  }
  if (tail > 0) {
    const __mmask16 mask = static_cast<__mmask16>((1u << tail) - 1);
    step(full * kChunk, [mask](const typename W::T* p) { return W::LoadFirst(p, mask); });
  }
  _mm512_store_ps(out, Reduce16(acc));
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

// Rows [r0 + skip, r0 + MR) of y over all n columns. A column block that would run past the
// readable rows starts earlier instead (recomputing columns: same bits), so every block is full.
template <int MR, int NR, class W, bool kPrefetch>
void RowBlock(const Panel& p, const typename W::T* w, int64_t r0, int skip) {
  alignas(64) float out[16];
  for (int64_t c = 0; c < p.n;) {
    const int64_t start = c + NR <= p.n + p.after ? c : p.n + p.after - NR;
    Block<MR, NR, W, kPrefetch>(p.x + r0 * p.ldx, p.ldx, w + start * p.ldw, p.ldw, p.full, p.tail,
                                out);
    const int64_t end = std::min(start + NR, p.n);
    for (int i = skip; i < MR; ++i) {
      float* y_row = p.y + (r0 + i) * p.ldy;
      if (start == c && end == c + NR) {  // the common whole block: one vector copy per row
        std::memcpy(y_row + c, out + i * NR, sizeof(float) * NR);
      } else {
        for (int64_t col = c; col < end; ++col) y_row[col] = out[i * NR + (col - start)];
      }
    }
    c = end;
  }
}

// kPrefetch: weights streamed from memory (not a converted panel already in cache).
template <class W, bool kPrefetch>
void Rows(const Panel& p, const typename W::T* w) {
  int64_t r = 0;
  for (; r + 4 <= p.m; r += 4) RowBlock<4, 4, W, kPrefetch>(p, w, r, 0);
  const int64_t rest = p.m - r;
  if (rest == 3 && p.m >= 4) {
    RowBlock<4, 4, W, kPrefetch>(p, w, p.m - 4, 1);  // rows m-4 .. m-1, the first already written
  } else if (rest >= 2) {
    RowBlock<2, 8, W, kPrefetch>(p, w, r, 0);
    if (rest == 3) RowBlock<1, 16, W, kPrefetch>(p, w, r + 2, 0);
  } else if (rest == 1) {
    RowBlock<1, 16, W, kPrefetch>(p, w, r, 0);
  }
}

// From this many x rows on, the weight panel is converted to fp32 once and reused, instead of
// converting each weight vector again for every block of 4 x rows.
constexpr int64_t kConvertMinRows = 8;

template <class W>
void Tile(const MatmulTileArgs& a) {
  using T = typename W::T;
  const int64_t kp = RoundUpToChunk(a.k);
  const T* w = static_cast<const T*>(a.w);
  const bool convert = a.m >= kConvertMinRows || a.n + a.w_rows_before < kChunk;
  if (!convert) {
    // Weights streamed once per block of x rows (decode: once per call).
    const Panel p{a.x, a.ldx, a.m, a.k, a.n, 0, a.k / kChunk, static_cast<int>(a.k % kChunk),
                  a.y, a.ldy};
    Rows<W, true>(p, w);
    return;
  }
  // [rows, kp] fp32, zero-padded along k and up to kChunk rows.
  const int64_t rows = std::max<int64_t>(a.n, kChunk);
  const int64_t full = a.k / kChunk;
  const __mmask16 mask = static_cast<__mmask16>((1u << (a.k % kChunk)) - 1);
  for (int64_t r = 0; r < a.n; ++r) {
    const T* src = w + r * a.k;
    float* dst = a.scratch + r * kp;
    for (int64_t c = 0; c < full; ++c) _mm512_store_ps(dst + c * kChunk, W::Load(src + c * kChunk));
    if (kp > a.k) _mm512_store_ps(dst + full * kChunk, W::LoadFirst(src + full * kChunk, mask));
  }
  std::memset(a.scratch + a.n * kp, 0, sizeof(float) * static_cast<size_t>((rows - a.n) * kp));
  const Panel p{a.x, a.ldx, a.m, kp, a.n, rows - a.n, kp / kChunk, 0, a.y, a.ldy};
  Rows<F32Weights, false>(p, a.scratch);
}

}  // namespace

void MatmulTileAvx512(const MatmulTileArgs& a) {
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
