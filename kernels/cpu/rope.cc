#include "kernels/cpu/rope.h"

#include <cmath>
#include <vector>

#include "kernels/cpu/act.h"

namespace moeserve::kernels::cpu {
namespace {

// Rotates every head of one token in place (fp32 math, one rounding per stored element).
template <typename T>
void RotateHeads(T* x, int64_t num_heads, int64_t head_dim, const float* cos_v,
                 const float* sin_v) {
  const int64_t half = head_dim / 2;
  for (int64_t h = 0; h < num_heads; ++h) {
    T* v = x + h * head_dim;
    for (int64_t i = 0; i < half; ++i) {
      const float a = ToF32(v[i]);
      const float b = ToF32(v[i + half]);
      v[i] = FromF32<T>(a * cos_v[i] - b * sin_v[i]);
      v[i + half] = FromF32<T>(b * cos_v[i] + a * sin_v[i]);
    }
  }
}

}  // namespace

void Rope(const RopeParams& p) {
  const int64_t half = p.head_dim / 2;
  // inv_freq in fp32 as Hugging Face computes it: 1 / theta^(2i/d).
  std::vector<float> inv_freq(half);
  for (int64_t i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(p.head_dim);
    inv_freq[i] = 1.0f / std::pow(p.theta, exponent);
  }
  DispatchAct(p.act_dtype, [&](auto tag) {
    using T = decltype(tag);
    // Tokens are independent (each rotates its own heads): threads for prefill-sized batches.
#pragma omp parallel if (p.num_tokens >= 64)
    {
      std::vector<float> cos_v(half), sin_v(half);
#pragma omp for schedule(dynamic, 16)
      for (int64_t t = 0; t < p.num_tokens; ++t) {
        const float pos = static_cast<float>(p.positions[t]);
        for (int64_t i = 0; i < half; ++i) {
          const float angle = pos * inv_freq[i];  // fp32 product, like HF's fp32 matmul
          cos_v[i] = std::cos(angle);
          sin_v[i] = std::sin(angle);
        }
        RotateHeads(static_cast<T*>(p.q) + t * p.num_q_heads * p.head_dim, p.num_q_heads,
                    p.head_dim, cos_v.data(), sin_v.data());
        RotateHeads(static_cast<T*>(p.k) + t * p.num_kv_heads * p.head_dim, p.num_kv_heads,
                    p.head_dim, cos_v.data(), sin_v.data());
      }
    }
  });
}

}  // namespace moeserve::kernels::cpu
