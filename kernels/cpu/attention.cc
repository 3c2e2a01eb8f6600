#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace moeserve::kernels::cpu {

void KvWrite(const KvWriteParams& p) {
  const int64_t row = p.num_kv_heads * p.head_dim;
  for (int64_t t = 0; t < p.num_tokens; ++t) {
    std::memcpy(p.k_cache + p.slots[t] * row, p.k + t * row, sizeof(float) * row);
    std::memcpy(p.v_cache + p.slots[t] * row, p.v + t * row, sizeof(float) * row);
  }
}

void PagedAttention(const PagedAttentionParams& p) {
  const int64_t group = p.num_q_heads / p.num_kv_heads;
  const int64_t kv_row = p.num_kv_heads * p.head_dim;  // floats per cached token
  // Flatten (sequence, query, head) work items; each is independent and computed in a fixed order.
  std::vector<int32_t> token_seq(static_cast<size_t>(p.num_tokens));
  for (int64_t s = 0; s < p.num_seqs; ++s) {
    for (int32_t t = p.query_start[s]; t < p.query_start[s + 1]; ++t) token_seq[t] = s;
  }
#pragma omp parallel
  {
    std::vector<float> scores;
#pragma omp for schedule(dynamic, 4)
    for (int64_t item = 0; item < p.num_tokens * p.num_q_heads; ++item) {
      const int64_t t = item / p.num_q_heads;
      const int64_t h = item % p.num_q_heads;
      const int64_t kv_h = h / group;
      const int64_t s = token_seq[t];
      const int64_t n_q = p.query_start[s + 1] - p.query_start[s];
      const int64_t pos = p.context_lens[s] - n_q + (t - p.query_start[s]);
      const int64_t first =
          p.sliding_window > 0 ? std::max<int64_t>(0, pos - p.sliding_window + 1) : 0;
      const int32_t* table = p.block_tables + s * p.max_blocks_per_seq;
      const float* q = p.q + (t * p.num_q_heads + h) * p.head_dim;
      float* out = p.out + (t * p.num_q_heads + h) * p.head_dim;

      scores.resize(static_cast<size_t>(pos - first + 1));
      float max_score = -std::numeric_limits<float>::infinity();
      for (int64_t j = first; j <= pos; ++j) {
        const int64_t slot = table[j / p.block_size] * p.block_size + j % p.block_size;
        const float* k = p.k_cache + slot * kv_row + kv_h * p.head_dim;
        float dot = 0.0f;
        for (int64_t d = 0; d < p.head_dim; ++d) dot += q[d] * k[d];
        scores[j - first] = dot * p.scale;
        max_score = std::max(max_score, scores[j - first]);
      }
      float denom = 0.0f;
      for (float& sc : scores) {
        sc = std::exp(sc - max_score);
        denom += sc;
      }
      std::fill(out, out + p.head_dim, 0.0f);
      for (int64_t j = first; j <= pos; ++j) {
        const int64_t slot = table[j / p.block_size] * p.block_size + j % p.block_size;
        const float* v = p.v_cache + slot * kv_row + kv_h * p.head_dim;
        const float w = scores[j - first] / denom;
        for (int64_t d = 0; d < p.head_dim; ++d) out[d] += w * v[d];
      }
    }
  }
}

}  // namespace moeserve::kernels::cpu
