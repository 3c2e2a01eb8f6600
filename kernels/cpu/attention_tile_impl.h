// The attention tile algorithm (attention_tile.h), written once over a small SIMD vocabulary and
// instantiated by attention_{scalar,avx2,avx512}.cc, each compiled for its instruction set.
//
// Include only from those files. Everything here has internal linkage: an inline function
// compiled with AVX-512 must never be picked by the linker for a baseline caller. For the same
// reason nothing here calls into the standard library (std::max, std::fma, ...): builtins only.
//
// Bits: every operation below is a single IEEE-754 operation (add, sub, mul, div, fma, max, min,
// compare, select) on one lane, so each lane of a vector computes exactly what the scalar path
// computes. The target is built with -ffp-contract=off, so nothing gets fused behind our back.
#pragma once

#include <cstdint>
#include <cstring>

#include "kernels/cpu/attention_tile.h"

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace moeserve::kernels::cpu {
namespace {

struct ScalarIsa {
  static constexpr int64_t kLanes = 1;
  using V = float;
  using I = int32_t;
  using M = bool;
  static V Load(const float* p) { return *p; }
  static void Store(float* p, V v) { *p = v; }
  static V Set1(float x) { return x; }
  static V Fma(V a, V b, V c) { return __builtin_fmaf(a, b, c); }
  static V Add(V a, V b) { return a + b; }
  static V Sub(V a, V b) { return a - b; }
  static V Mul(V a, V b) { return a * b; }
  static V Div(V a, V b) { return a / b; }
  static V Max(V a, V b) { return a > b ? a : b; }  // MAXPS: (a > b) ? a : b
  static V Min(V a, V b) { return a < b ? a : b; }  // MINPS: (a < b) ? a : b
  static M GreaterEq(V a, V b) { return a >= b; }   // ordered: false for NaN
  static V Select(M m, V yes, V no) { return m ? yes : no; }
  static I LoadI(const int32_t* p) { return *p; }
  static M InRange(I first, I last, int32_t i) { return first <= i && i <= last; }
  // 2^n for integral n in [-126, 0].
  static V Pow2(V n) {
    const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
    float f;
    std::memcpy(&f, &bits, sizeof(f));
    return f;
  }
};

#if defined(__AVX2__) && defined(__FMA__)
struct Avx2Isa {
  static constexpr int64_t kLanes = 8;
  using V = __m256;
  using I = __m256i;
  using M = __m256;  // all-ones / all-zeros lanes
  static V Load(const float* p) { return _mm256_loadu_ps(p); }
  static void Store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V Set1(float x) { return _mm256_set1_ps(x); }
  static V Fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V Add(V a, V b) { return _mm256_add_ps(a, b); }
  static V Sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static V Mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V Div(V a, V b) { return _mm256_div_ps(a, b); }
  static V Max(V a, V b) { return _mm256_max_ps(a, b); }
  static V Min(V a, V b) { return _mm256_min_ps(a, b); }
  static M GreaterEq(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_GE_OQ); }
  static V Select(M m, V yes, V no) { return _mm256_blendv_ps(no, yes, m); }
  static I LoadI(const int32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const I*>(p)); }
  static M InRange(I first, I last, int32_t i) {
    const I iv = _mm256_set1_epi32(i);
    const I outside = _mm256_or_si256(_mm256_cmpgt_epi32(first, iv), _mm256_cmpgt_epi32(iv, last));
    return _mm256_castsi256_ps(_mm256_xor_si256(outside, _mm256_set1_epi32(-1)));
  }
  static V Pow2(V n) {
    const I e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
  }
};
#endif

#if defined(__AVX512F__)
struct Avx512Isa {
  static constexpr int64_t kLanes = 16;
  using V = __m512;
  using I = __m512i;
  using M = __mmask16;
  static V Load(const float* p) { return _mm512_loadu_ps(p); }
  static void Store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V Set1(float x) { return _mm512_set1_ps(x); }
  static V Fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V Add(V a, V b) { return _mm512_add_ps(a, b); }
  static V Sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static V Mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V Div(V a, V b) { return _mm512_div_ps(a, b); }
  static V Max(V a, V b) { return _mm512_max_ps(a, b); }
  static V Min(V a, V b) { return _mm512_min_ps(a, b); }
  static M GreaterEq(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_GE_OQ); }
  static V Select(M m, V yes, V no) { return _mm512_mask_blend_ps(m, no, yes); }
  static I LoadI(const int32_t* p) { return _mm512_loadu_si512(p); }
  static M InRange(I first, I last, int32_t i) {
    const I iv = _mm512_set1_epi32(i);
    return _mm512_cmple_epi32_mask(first, iv) & _mm512_cmple_epi32_mask(iv, last);
  }
  static V Pow2(V n) {
    const I e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
    return _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
  }
};
#endif

// exp(x) for the softmax, where x = score - max <= 0: Cody-Waite reduction x = n ln2 + r,
// |r| <= ln2/2, and Cephes expf's degree-6 polynomial (max error ~2 ulp); 0 below ln(FLT_MIN)
// and for NaN. Inputs above 0 (only in lanes that are masked off) are clamped to 0.
template <class Isa>
typename Isa::V AttentionExp(typename Isa::V x) {
  using V = typename Isa::V;
  const V lowest = Isa::Set1(-87.33654f);  // ln(FLT_MIN): below it 2^n would be subnormal
  const typename Isa::M normal = Isa::GreaterEq(x, lowest);
  x = Isa::Min(Isa::Max(x, lowest), Isa::Set1(0.0f));
  // n = round-to-nearest-even(x * log2(e)) by the 1.5 * 2^23 trick: one add and one subtract,
  // the same on every path (no rounding-mode dependent instruction).
  const V shifter = Isa::Set1(12582912.0f);
  const V n = Isa::Sub(Isa::Add(Isa::Mul(x, Isa::Set1(1.44269504088896341f)), shifter), shifter);
  V r = Isa::Fma(n, Isa::Set1(-0.693359375f), x);
  r = Isa::Fma(n, Isa::Set1(2.12194440e-4f), r);
  V p = Isa::Set1(1.9875691500e-4f);
  p = Isa::Fma(p, r, Isa::Set1(1.3981999507e-3f));
  p = Isa::Fma(p, r, Isa::Set1(8.3334519073e-3f));
  p = Isa::Fma(p, r, Isa::Set1(4.1665795894e-2f));
  p = Isa::Fma(p, r, Isa::Set1(1.6666665459e-1f));
  p = Isa::Fma(p, r, Isa::Set1(5.0000001201e-1f));
  V y = Isa::Fma(p, Isa::Mul(r, r), r);
  y = Isa::Mul(Isa::Add(y, Isa::Set1(1.0f)), Isa::Pow2(n));
  return Isa::Select(normal, y, Isa::Set1(0.0f));
}

constexpr int64_t kPvRows = 4;  // rows whose P·V accumulators share each loaded V chunk

// out[r0 .. r0+3][d0 .. d0 + kChunk * lanes) for the rows of one P·V group. Row r's
// accumulators see exactly its visible keys, in key order; keys in [common_lo, common_hi] are
// visible to every valid row of the group (rows past t.rows compute garbage, never stored).
template <class Isa, int kChunk>
void PvChunk(const AttentionTile& t, int64_t r0, int64_t d0, int32_t lo, int32_t hi,
             int32_t common_lo, int32_t common_hi, const float* inv_sum) {
  using V = typename Isa::V;
  constexpr int64_t kLanes = Isa::kLanes;
  V acc[kPvRows][kChunk];
#pragma GCC unroll 16
  for (int64_t r = 0; r < kPvRows; ++r) {
#pragma GCC unroll 16
    for (int c = 0; c < kChunk; ++c) acc[r][c] = Isa::Set1(0.0f);
  }
  for (int32_t i = lo; i <= hi; ++i) {
    const float* v = t.v_rows[i] + d0;
    V vv[kChunk];
#pragma GCC unroll 16
    for (int c = 0; c < kChunk; ++c) vv[c] = Isa::Load(v + c * kLanes);
    const float* p = t.scores + i * kAttentionTileRows + r0;
    if (i >= common_lo && i <= common_hi) {
#pragma GCC unroll 16
      for (int64_t r = 0; r < kPvRows; ++r) {
        const V pr = Isa::Set1(p[r]);
#pragma GCC unroll 16
        for (int c = 0; c < kChunk; ++c) acc[r][c] = Isa::Fma(pr, vv[c], acc[r][c]);
      }
    } else {
#pragma GCC unroll 16
      for (int64_t r = 0; r < kPvRows; ++r) {
        if (t.first_key[r0 + r] <= i && i <= t.last_key[r0 + r]) {
          const V pr = Isa::Set1(p[r]);
#pragma GCC unroll 16
          for (int c = 0; c < kChunk; ++c) acc[r][c] = Isa::Fma(pr, vv[c], acc[r][c]);
        }
      }
    }
  }
  for (int64_t r = 0; r < kPvRows && r0 + r < t.rows; ++r) {
    const V inv = Isa::Set1(inv_sum[r0 + r]);
    float* out = t.out + (r0 + r) * t.head_dim + d0;
#pragma GCC unroll 16
    for (int c = 0; c < kChunk; ++c) Isa::Store(out + c * kLanes, Isa::Mul(acc[r][c], inv));
  }
}

// Scores of the rows in lanes [lane0, lane0 + kLanes) against keys [i, i + kKeys): kKeys
// independent fma chains over d in flight.
template <class Isa, int kKeys>
void ScoreKeys(const AttentionTile& t, int64_t lane0, int64_t i) {
  using V = typename Isa::V;
  V acc[kKeys];
  const float* k[kKeys];
#pragma GCC unroll 16
  for (int j = 0; j < kKeys; ++j) {
    acc[j] = Isa::Set1(0.0f);
    k[j] = t.k_rows[i + j];
  }
  const float* q = t.q_t + lane0;
  for (int64_t d = 0; d < t.head_dim; ++d) {
    const V qd = Isa::Load(q + d * kAttentionTileRows);
#pragma GCC unroll 16
    for (int j = 0; j < kKeys; ++j) acc[j] = Isa::Fma(qd, Isa::Set1(k[j][d]), acc[j]);
  }
  const V scale = Isa::Set1(t.scale);
#pragma GCC unroll 16
  for (int j = 0; j < kKeys; ++j) {
    Isa::Store(t.scores + (i + j) * kAttentionTileRows + lane0, Isa::Mul(acc[j], scale));
  }
}

template <class Isa>
void ComputeAttentionTile(const AttentionTile& t) {
  using V = typename Isa::V;
  constexpr int64_t kLanes = Isa::kLanes;
  const int64_t num_keys = t.num_keys;
  // Lanes holding valid rows, rounded up so that P·V below never reads an unwritten score
  // (padding rows have q = 0 and an empty key range).
  constexpr int64_t kLaneStep = kLanes > kPvRows ? kLanes : kPvRows;
  const int64_t lane_end = (t.rows + kLaneStep - 1) / kLaneStep * kLaneStep;
  float inv_sum[kAttentionTileRows];

  // Scores, softmax weights and 1 / sum, kLanes rows at a time (lanes over rows).
  for (int64_t lane0 = 0; lane0 < lane_end; lane0 += kLanes) {
    int64_t i = 0;
    // 8 independent chains hide the FMA latency (4 cycles, 2 per cycle on current cores).
    for (; i + 8 <= num_keys; i += 8) ScoreKeys<Isa, 8>(t, lane0, i);
    for (; i + 4 <= num_keys; i += 4) ScoreKeys<Isa, 4>(t, lane0, i);
    for (; i < num_keys; ++i) ScoreKeys<Isa, 1>(t, lane0, i);

    const typename Isa::I first = Isa::LoadI(t.first_key + lane0);
    const typename Isa::I last = Isa::LoadI(t.last_key + lane0);
    V max = Isa::Set1(-__builtin_inff());
    for (int32_t k = 0; k < num_keys; ++k) {
      const V s = Isa::Load(t.scores + k * kAttentionTileRows + lane0);
      max = Isa::Select(Isa::InRange(first, last, k), Isa::Max(max, s), max);
    }
    V sum = Isa::Set1(0.0f);
    for (int32_t k = 0; k < num_keys; ++k) {
      float* s = t.scores + k * kAttentionTileRows + lane0;
      const V e = AttentionExp<Isa>(Isa::Sub(Isa::Load(s), max));
      sum = Isa::Select(Isa::InRange(first, last, k), Isa::Add(sum, e), sum);
      Isa::Store(s, e);
    }
    Isa::Store(inv_sum + lane0, Isa::Div(Isa::Set1(1.0f), sum));
  }

  // P·V, lanes over d, kPvRows rows per pass over the keys.
  for (int64_t r0 = 0; r0 < t.rows; r0 += kPvRows) {
    const int64_t r_end = r0 + kPvRows < t.rows ? r0 + kPvRows : t.rows;
    int32_t lo = t.first_key[r0], hi = t.last_key[r0];
    int32_t common_lo = lo, common_hi = hi;
    for (int64_t r = r0 + 1; r < r_end; ++r) {
      const int32_t f = t.first_key[r], l = t.last_key[r];
      lo = f < lo ? f : lo;
      hi = l > hi ? l : hi;
      common_lo = f > common_lo ? f : common_lo;
      common_hi = l < common_hi ? l : common_hi;
    }
    int64_t d0 = 0;
    for (; d0 + 2 * kLanes <= t.head_dim; d0 += 2 * kLanes) {
      PvChunk<Isa, 2>(t, r0, d0, lo, hi, common_lo, common_hi, inv_sum);
    }
    for (; d0 + kLanes <= t.head_dim; d0 += kLanes) {
      PvChunk<Isa, 1>(t, r0, d0, lo, hi, common_lo, common_hi, inv_sum);
    }
    for (; d0 < t.head_dim; ++d0) {
      PvChunk<ScalarIsa, 1>(t, r0, d0, lo, hi, common_lo, common_hi, inv_sum);
    }
  }
}

}  // namespace
}  // namespace moeserve::kernels::cpu
