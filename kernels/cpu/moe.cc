#include "kernels/cpu/moe.h"

#include <cmath>
#include <cstring>

namespace moeserve::kernels::cpu {

void GatherRows(const GatherRowsParams& p) {
  for (int64_t i = 0; i < p.num_rows; ++i) {
    std::memcpy(p.dst + i * p.hidden, p.src + static_cast<int64_t>(p.rows[i]) * p.hidden,
                sizeof(float) * p.hidden);
  }
}

void SwiGlu(const SwiGluParams& p) {
  for (int64_t i = 0; i < p.n; ++i) {
    const float g = p.gate[i];
    p.out[i] = (g / (1.0f + std::exp(-g))) * p.up[i];
  }
}

void MoeCombine(const MoeCombineParams& p) {
  for (int64_t t = 0; t < p.num_tokens; ++t) {
    float* out = p.out + t * p.hidden;
    for (int64_t h = 0; h < p.hidden; ++h) out[h] = 0.0f;
    for (int64_t j = 0; j < p.top_k; ++j) {
      const float w = p.weights[t * p.top_k + j];
      const float* src =
          p.expert_out + static_cast<int64_t>(p.src_rows[t * p.top_k + j]) * p.hidden;
      for (int64_t h = 0; h < p.hidden; ++h) out[h] += w * src[h];
    }
  }
}

}  // namespace moeserve::kernels::cpu
