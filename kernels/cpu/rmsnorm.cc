#include "kernels/cpu/rmsnorm.h"

#include <cmath>

namespace moeserve::kernels::cpu {

void RmsNorm(const RmsNormParams& p) {
  for (int64_t r = 0; r < p.rows; ++r) {
    const float* x = p.x + r * p.hidden;
    float* out = p.out + r * p.hidden;
    // Sequential fp32 sum: the order is fixed so every row normalises identically in any batch.
    float sum_sq = 0.0f;
    for (int64_t h = 0; h < p.hidden; ++h) sum_sq += x[h] * x[h];
    const float inv_rms = 1.0f / std::sqrt(sum_sq / static_cast<float>(p.hidden) + p.eps);
    for (int64_t h = 0; h < p.hidden; ++h) {
      out[h] = (x[h] * inv_rms) * LoadAsF32(p.weight, p.weight_dtype, h);
    }
  }
}

}  // namespace moeserve::kernels::cpu
