#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/act.h"

namespace moeserve::kernels::cpu {
namespace {

template <typename A, typename K>
void KvWriteTyped(const KvWriteParams& p) {
  const int64_t row = p.num_kv_heads * p.head_dim;
  const A* k = static_cast<const A*>(p.k);
  const A* v = static_cast<const A*>(p.v);
  K* k_cache = static_cast<K*>(p.k_cache);
  K* v_cache = static_cast<K*>(p.v_cache);
  for (int64_t t = 0; t < p.num_tokens; ++t) {
    const int64_t slot = p.slots[t];
    if (slot < 0) continue;  // padding / a token whose K/V is not cached
    for (int64_t i = 0; i < row; ++i) {
      k_cache[slot * row + i] = FromF32<K>(ToF32(k[t * row + i]));
      v_cache[slot * row + i] = FromF32<K>(ToF32(v[t * row + i]));
    }
  }
}

template <typename A, typename K>
void PagedAttentionTyped(const PagedAttentionParams& p) {
  const int64_t group = p.num_q_heads / p.num_kv_heads;
  const int64_t kv_row = p.num_kv_heads * p.head_dim;  // elements per cached token
  const A* q_all = static_cast<const A*>(p.q);
  A* out_all = static_cast<A*>(p.out);
  const K* k_cache = static_cast<const K*>(p.k_cache);
  const K* v_cache = static_cast<const K*>(p.v_cache);
  // Flatten (sequence, query, head) work items; each is independent and computed in a fixed order.
  std::vector<int32_t> token_seq(static_cast<size_t>(p.num_tokens));
  for (int64_t s = 0; s < p.num_seqs; ++s) {
    for (int32_t t = p.query_start[s]; t < p.query_start[s + 1]; ++t) token_seq[t] = s;
  }
#pragma omp parallel
  {
    std::vector<float> scores, q(static_cast<size_t>(p.head_dim)),
        out(static_cast<size_t>(p.head_dim));
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
      const A* q_src = q_all + (t * p.num_q_heads + h) * p.head_dim;
      for (int64_t d = 0; d < p.head_dim; ++d) q[d] = ToF32(q_src[d]);

      scores.resize(static_cast<size_t>(pos - first + 1));
      float max_score = -std::numeric_limits<float>::infinity();
      for (int64_t j = first; j <= pos; ++j) {
        const int64_t slot = table[j / p.block_size] * p.block_size + j % p.block_size;
        const K* k = k_cache + slot * kv_row + kv_h * p.head_dim;
        float dot = 0.0f;
        for (int64_t d = 0; d < p.head_dim; ++d) dot += q[d] * ToF32(k[d]);
        scores[j - first] = dot * p.scale;
        max_score = std::max(max_score, scores[j - first]);
      }
      float denom = 0.0f;
      for (float& sc : scores) {
        sc = std::exp(sc - max_score);
        denom += sc;
      }
      std::fill(out.begin(), out.end(), 0.0f);
      for (int64_t j = first; j <= pos; ++j) {
        const int64_t slot = table[j / p.block_size] * p.block_size + j % p.block_size;
        const K* v = v_cache + slot * kv_row + kv_h * p.head_dim;
        const float w = scores[j - first] / denom;
        for (int64_t d = 0; d < p.head_dim; ++d) out[d] += w * ToF32(v[d]);
      }
      A* dst = out_all + (t * p.num_q_heads + h) * p.head_dim;
      for (int64_t d = 0; d < p.head_dim; ++d) dst[d] = FromF32<A>(out[d]);
    }
  }
}

}  // namespace

void KvWrite(const KvWriteParams& p) {
  DispatchAct(p.act_dtype, [&](auto a) {
    DispatchAct(p.kv_dtype, [&](auto k) { KvWriteTyped<decltype(a), decltype(k)>(p); });
  });
}

void PagedAttention(const PagedAttentionParams& p) {
  DispatchAct(p.act_dtype, [&](auto a) {
    DispatchAct(p.kv_dtype, [&](auto k) { PagedAttentionTyped<decltype(a), decltype(k)>(p); });
  });
}

}  // namespace moeserve::kernels::cpu
