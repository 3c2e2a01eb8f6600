#include "kernels/cpu/rmsnorm.h"

#include <cmath>

#include "kernels/cpu/act.h"

namespace moeserve::kernels::cpu {

void RmsNorm(const RmsNormParams& p) {
  DispatchAct(p.act_dtype, [&](auto tag) {
    using T = decltype(tag);
    for (int64_t r = 0; r < p.rows; ++r) {
      const T* x = static_cast<const T*>(p.x) + r * p.hidden;
      T* out = static_cast<T*>(p.out) + r * p.hidden;
      // The normalised input: x itself, or the fused residual sum s = residual + x, stored back
      // into residual as the unfused AddInPlace would (same fp32 add, same rounding).
      const T* in = x;
      if (p.residual != nullptr) {
        T* res = static_cast<T*>(p.residual) + r * p.hidden;
        for (int64_t h = 0; h < p.hidden; ++h) res[h] = FromF32<T>(ToF32(res[h]) + ToF32(x[h]));
        in = res;
      }
      // Sequential fp32 sum: the order is fixed so every row normalises identically in any batch.
      float sum_sq = 0.0f;
      for (int64_t h = 0; h < p.hidden; ++h) {
        const float v = ToF32(in[h]);
        sum_sq += v * v;
      }
      const float inv_rms = 1.0f / std::sqrt(sum_sq / static_cast<float>(p.hidden) + p.eps);
      for (int64_t h = 0; h < p.hidden; ++h) {
        out[h] = FromF32<T>((ToF32(in[h]) * inv_rms) * LoadAsF32(p.weight, p.weight_dtype, h));
      }
    }
  });
}

}  // namespace moeserve::kernels::cpu
