#include "kernels/cpu/router.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace moeserve::kernels::cpu {

void RouterTopK(const RouterTopKParams& p) {
  std::vector<float> biased(static_cast<size_t>(p.num_experts));
  std::vector<int32_t> chosen(static_cast<size_t>(p.top_k));
  for (int64_t t = 0; t < p.num_tokens; ++t) {
    const float* logits = p.logits + t * p.num_experts;
    for (int64_t e = 0; e < p.num_experts; ++e) {
      biased[e] = logits[e] + (p.logit_bias ? p.logit_bias[e] : 0.0f);
      if (p.token_bias) biased[e] += p.token_bias[t * p.num_experts + e];
    }
    // Selection by repeated max: strict '>' keeps the lowest index among equal logits.
    std::vector<bool> taken(static_cast<size_t>(p.num_experts), false);
    for (int64_t j = 0; j < p.top_k; ++j) {
      int64_t best = -1;
      for (int64_t e = 0; e < p.num_experts; ++e) {
        if (!taken[e] && (best < 0 || biased[e] > biased[best])) best = e;
      }
      taken[best] = true;
      chosen[j] = static_cast<int32_t>(best);
    }
    // Softmax over the chosen logits, max-subtracted (chosen[0] holds the max).
    const float max_logit = biased[chosen[0]];
    float denom = 0.0f;
    std::vector<float> expv(static_cast<size_t>(p.top_k));
    for (int64_t j = 0; j < p.top_k; ++j) {
      expv[j] = std::exp(biased[chosen[j]] - max_logit);
      denom += expv[j];
    }
    // Emit in ascending expert order: the combine sums in this order.
    std::vector<int64_t> order(static_cast<size_t>(p.top_k));
    for (int64_t j = 0; j < p.top_k; ++j) order[j] = j;
    std::sort(order.begin(), order.end(),
              [&](int64_t a, int64_t b) { return chosen[a] < chosen[b]; });
    for (int64_t j = 0; j < p.top_k; ++j) {
      p.expert_ids[t * p.top_k + j] = chosen[order[j]];
      p.weights[t * p.top_k + j] = expv[order[j]] / denom;
    }
  }
}

}  // namespace moeserve::kernels::cpu
