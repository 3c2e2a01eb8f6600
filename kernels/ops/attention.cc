#include "kernels/ops/attention.h"

#include "kernels/ops/check.h"

namespace moeserve::kernels {

absl::Status Validate(const KvWriteParams& p) {
  MOESERVE_PARAM_CHECK("kv_write", p.k && p.v && p.k_cache && p.v_cache && p.slots);
  MOESERVE_PARAM_CHECK("kv_write", p.num_kv_heads > 0 && p.head_dim > 0 && p.num_tokens >= 0);
  for (int64_t t = 0; t < p.num_tokens; ++t) {
    if (p.slots[t] < 0 || p.slots[t] >= p.num_slots) {
      return absl::InvalidArgumentError(absl::StrCat("kv_write: slot ", p.slots[t], " of token ", t,
                                                     " outside [0, ", p.num_slots, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status Validate(const PagedAttentionParams& p) {
  MOESERVE_PARAM_CHECK("attention", p.q && p.out && p.k_cache && p.v_cache);
  MOESERVE_PARAM_CHECK("attention", p.block_tables && p.query_start && p.context_lens);
  MOESERVE_PARAM_CHECK("attention", p.num_q_heads > 0 && p.num_kv_heads > 0 && p.head_dim > 0);
  MOESERVE_PARAM_CHECK("attention", p.num_q_heads % p.num_kv_heads == 0, "(q heads ", p.num_q_heads,
                       ", kv heads ", p.num_kv_heads, ")");
  MOESERVE_PARAM_CHECK("attention", p.block_size > 0 && p.max_blocks_per_seq > 0);
  MOESERVE_PARAM_CHECK("attention", p.sliding_window >= 0);
  MOESERVE_PARAM_CHECK("attention", p.query_start[0] == 0);
  MOESERVE_PARAM_CHECK("attention", p.query_start[p.num_seqs] == p.num_tokens);
  for (int64_t s = 0; s < p.num_seqs; ++s) {
    const int64_t n_q = p.query_start[s + 1] - p.query_start[s];
    const int64_t ctx = p.context_lens[s];
    if (n_q < 0 || ctx < n_q) {
      return absl::InvalidArgumentError(absl::StrCat("attention: sequence ", s, " has ", n_q,
                                                     " queries but context length ", ctx));
    }
    const int64_t blocks = (ctx + p.block_size - 1) / p.block_size;
    if (blocks > p.max_blocks_per_seq) {
      return absl::InvalidArgumentError(absl::StrCat("attention: sequence ", s, " needs ", blocks,
                                                     " blocks, table holds ",
                                                     p.max_blocks_per_seq));
    }
    // Only blocks that hold visible keys are read; with a sliding window, earlier entries may be
    // released (-1).
    const int64_t first_key = p.sliding_window > 0 ? ctx - n_q - p.sliding_window + 1 : 0;
    for (int64_t b = first_key > 0 ? first_key / p.block_size : 0; b < blocks; ++b) {
      const int32_t id = p.block_tables[s * p.max_blocks_per_seq + b];
      if (id < 0 || id >= p.num_blocks) {
        return absl::InvalidArgumentError(absl::StrCat("attention: sequence ", s, " block ", b,
                                                       " has id ", id, " outside [0, ",
                                                       p.num_blocks, ")"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace moeserve::kernels
