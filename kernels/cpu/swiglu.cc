#include "kernels/cpu/swiglu.h"

#include <cstdint>

#include "kernels/cpu/kernel_clones.h"

namespace moeserve::kernels::cpu {
namespace {

// exp(x): Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, and Cephes expf's degree-6
// polynomial (max error ~2 ulp), the same as the attention softmax's (attention_tile_impl.h),
// extended to positive x: x < ln(FLT_MIN) gives 0 and x > 88 gives +inf (so silu of a gate
// below -88 is -0, where the exact value is below 1e-35 in magnitude); the polynomial only sees
// x in [ln(FLT_MIN), 88], where 2^n stays a normal float. NaN gives 0 (the NaN still reaches
// out through gate). Branch-free, only single IEEE operations and integer bit moves, so the
// vectoriser computes each lane exactly as this scalar code does.
inline float SwiGluExp(float x) {
  const float lowest = -87.33654f;
  const bool normal = x >= lowest;
  const bool overflow = x > 88.0f;
  x = x < lowest ? lowest : x;
  x = x > 88.0f ? 88.0f : x;
  // n = round-to-nearest-even(x * log2(e)) by the 1.5 * 2^23 trick; its low mantissa bits are
  // then n itself, which gives 2^n by integer moves (no float -> int conversion).
  const float shifter = 12582912.0f;
  const float shifted = x * 1.44269504088896341f + shifter;
  const float n = shifted - shifter;
  float r = __builtin_fmaf(n, -0.693359375f, x);
  r = __builtin_fmaf(n, 2.12194440e-4f, r);
  float p = 1.9875691500e-4f;
  p = __builtin_fmaf(p, r, 1.3981999507e-3f);
  p = __builtin_fmaf(p, r, 8.3334519073e-3f);
  p = __builtin_fmaf(p, r, 4.1665795894e-2f);
  p = __builtin_fmaf(p, r, 1.6666665459e-1f);
  p = __builtin_fmaf(p, r, 5.0000001201e-1f);
  float y = __builtin_fmaf(p, r * r, r);
  const uint32_t n_bits = __builtin_bit_cast(uint32_t, shifted) - 0x4B400000u;  // n mod 2^32
  const float pow2 = __builtin_bit_cast(float, (n_bits + 127u) << 23);
  y = (y + 1.0f) * pow2;
  y = overflow ? __builtin_inff() : y;
  return normal ? y : 0.0f;
}

inline float SiluMulOne(float g, float u) { return g / (1.0f + SwiGluExp(-g)) * u; }

}  // namespace

// Blocks of 16 (a fixed trip count the -O2 vectoriser takes: one zmm or two ymm), then the tail
// one element at a time; the same operations per element either way.
MOESERVE_KERNEL_CLONES void SiluMulRow(const float* gate, const float* up, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    float block[16];
    for (int j = 0; j < 16; ++j) block[j] = SiluMulOne(gate[i + j], up[i + j]);
    for (int j = 0; j < 16; ++j) out[i + j] = block[j];
  }
  for (; i < n; ++i) out[i] = SiluMulOne(gate[i], up[i]);
}

float SiluMul(float gate, float up) { return SiluMulOne(gate, up); }

}  // namespace moeserve::kernels::cpu
