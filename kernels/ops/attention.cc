#include "kernels/ops/attention.h"

#include "kernels/ops/check.h"

namespace moeserve::kernels {

absl::Status Validate(const KvWriteParams& p) {
  MOESERVE_PARAM_CHECK("kv_write", p.k && p.v && p.k_cache && p.v_cache && p.slots);
  MOESERVE_PARAM_CHECK("kv_write", p.num_kv_heads > 0 && p.head_dim > 0 && p.num_tokens >= 0);
  MOESERVE_PARAM_CHECK("kv_write", p.num_slots >= 0);
  MOESERVE_ACT_DTYPE_CHECK("kv_write", "act_dtype", p.act_dtype);
  MOESERVE_ACT_DTYPE_CHECK("kv_write", "kv_dtype", p.kv_dtype);
  return absl::OkStatus();
}

absl::Status ValidateIndices(const KvWriteParams& p, const int64_t* host_slots) {
  MOESERVE_PARAM_CHECK("kv_write", host_slots != nullptr || p.num_tokens == 0);
  for (int64_t t = 0; t < p.num_tokens; ++t) {
    if (host_slots[t] >= p.num_slots) {  // negative: skipped by the kernels
      return absl::InvalidArgumentError(absl::StrCat("kv_write: slot ", host_slots[t], " of token ",
                                                     t, " outside [0, ", p.num_slots, ")"));
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
  MOESERVE_PARAM_CHECK("attention", p.num_seqs >= 0 && p.num_tokens >= 0 && p.num_blocks > 0);
  MOESERVE_PARAM_CHECK("attention", p.sliding_window >= 0);
  MOESERVE_PARAM_CHECK("attention", p.max_query_len >= 0 && p.max_context_len >= 0);
  MOESERVE_ACT_DTYPE_CHECK("attention", "act_dtype", p.act_dtype);
  MOESERVE_ACT_DTYPE_CHECK("attention", "kv_dtype", p.kv_dtype);
  return absl::OkStatus();
}

absl::Status ValidateIndices(const PagedAttentionParams& p, const int32_t* host_block_tables,
                             const int32_t* host_query_start, const int32_t* host_context_lens) {
  MOESERVE_PARAM_CHECK("attention", host_block_tables && host_query_start && host_context_lens);
  MOESERVE_PARAM_CHECK("attention", host_query_start[0] == 0);
  MOESERVE_PARAM_CHECK("attention", host_query_start[p.num_seqs] == p.num_tokens);
  for (int64_t s = 0; s < p.num_seqs; ++s) {
    const int64_t n_q = host_query_start[s + 1] - host_query_start[s];
    const int64_t ctx = host_context_lens[s];
    if (n_q < 0 || ctx < n_q) {
      return absl::InvalidArgumentError(absl::StrCat("attention: sequence ", s, " has ", n_q,
                                                     " queries but context length ", ctx));
    }
    if (p.max_query_len > 0 && n_q > p.max_query_len) {
      return absl::InvalidArgumentError(absl::StrCat(
          "attention: sequence ", s, " has ", n_q, " queries, max_query_len is ", p.max_query_len));
    }
    if (p.max_context_len > 0 && ctx > p.max_context_len) {
      return absl::InvalidArgumentError(absl::StrCat("attention: sequence ", s,
                                                     " has context length ", ctx,
                                                     ", max_context_len is ", p.max_context_len));
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
      const int32_t id = host_block_tables[s * p.max_blocks_per_seq + b];
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
