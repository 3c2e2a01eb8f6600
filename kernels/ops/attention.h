// Causal GQA attention over a paged KV cache, with an optional sliding window.
//
// The KV cache of one layer is a pool of blocks: k_cache / v_cache are
// [num_blocks, block_size, num_kv_heads, head_dim]. Sequence s owns the blocks listed in
// block_tables[s, :]; its key at position j lives in block block_tables[s, j / block_size] at
// offset j % block_size. The new tokens' keys/values must already be written (KvWrite) before
// attention runs, so context_lens[s] counts them.
//
// Queries of sequence s are rows query_start[s] .. query_start[s+1]-1 of q; they are the last
// n_s = query_start[s+1] - query_start[s] positions of the sequence, so the query in row
// query_start[s] + i sits at position context_lens[s] - n_s + i. Query at position p sees keys j
// with j <= p and, when sliding_window > 0, p - j < sliding_window (the window counts the query's
// own position, as in Hugging Face Mixtral).
#pragma once

#include <cstdint>

#include "absl/status/status.h"

namespace moeserve::kernels {

struct KvWriteParams {
  const float* k = nullptr;        // [num_tokens, num_kv_heads, head_dim]
  const float* v = nullptr;        // [num_tokens, num_kv_heads, head_dim]
  float* k_cache = nullptr;        // [num_blocks, block_size, num_kv_heads, head_dim]
  float* v_cache = nullptr;        // same
  const int64_t* slots = nullptr;  // [num_tokens]: block_id * block_size + offset
  int64_t num_tokens = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t num_slots = 0;  // num_blocks * block_size, for bounds checks
};

struct PagedAttentionParams {
  const float* q = nullptr;        // [num_tokens, num_q_heads, head_dim]
  float* out = nullptr;            // [num_tokens, num_q_heads, head_dim]
  const float* k_cache = nullptr;  // [num_blocks, block_size, num_kv_heads, head_dim]
  const float* v_cache = nullptr;
  const int32_t* block_tables = nullptr;  // [num_seqs, max_blocks_per_seq]
  const int32_t* query_start = nullptr;   // [num_seqs + 1], query_start[0] == 0
  const int32_t* context_lens = nullptr;  // [num_seqs]
  int64_t num_seqs = 0;
  int64_t num_tokens = 0;
  int64_t num_q_heads = 0;
  int64_t num_kv_heads = 0;  // divides num_q_heads
  int64_t head_dim = 0;
  int64_t block_size = 0;
  int64_t max_blocks_per_seq = 0;
  int64_t num_blocks = 0;
  int64_t sliding_window = 0;  // 0: full causal attention
  float scale = 1.0f;          // usually 1/sqrt(head_dim)
};

absl::Status Validate(const KvWriteParams& p);
// Checks sizes and, reading the host-visible index arrays, every block id and length.
absl::Status Validate(const PagedAttentionParams& p);

}  // namespace moeserve::kernels
