// Causal GQA attention over a paged KV cache, with an optional sliding window.
//
// The KV cache of one layer is a pool of blocks: k_cache / v_cache are
// [num_blocks, block_size, num_kv_heads, head_dim] of kv_dtype. Sequence s owns the blocks listed
// in block_tables[s, :]; its key at position j lives in block block_tables[s, j / block_size] at
// offset j % block_size. The new tokens' keys/values must already be written (KvWrite) before
// attention runs, so context_lens[s] counts them.
//
// Queries of sequence s are rows query_start[s] .. query_start[s+1]-1 of q; they are the last
// n_s = query_start[s+1] - query_start[s] positions of the sequence, so the query in row
// query_start[s] + i sits at position context_lens[s] - n_s + i. Query at position p sees keys j
// with j <= p and, when sliding_window > 0, p - j < sliding_window (the window counts the query's
// own position, as in Hugging Face Mixtral). Softmax and P·V accumulate in fp32.
//
// Batch invariance: a query's output depends only on its own sequence's keys and values, with a
// reduction order fixed by its context length (never by num_seqs, num_tokens or max_*_len).
//
// Index arrays (slots, block_tables, query_start, context_lens) are device memory: the kernels do
// not check them. Callers validate the host copies once per step with ValidateIndices().
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/dtype.h"

namespace moeserve::kernels {

struct KvWriteParams {
  const void* k = nullptr;         // [num_tokens, num_kv_heads, head_dim] of act_dtype
  const void* v = nullptr;         // [num_tokens, num_kv_heads, head_dim] of act_dtype
  void* k_cache = nullptr;         // [num_blocks, block_size, num_kv_heads, head_dim] of kv_dtype
  void* v_cache = nullptr;         // same
  const int64_t* slots = nullptr;  // [num_tokens]: block_id * block_size + offset; < 0: skip
  int64_t num_tokens = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t num_slots = 0;  // num_blocks * block_size
  DType act_dtype = DType::kF32;
  DType kv_dtype = DType::kF32;
};

struct PagedAttentionParams {
  const void* q = nullptr;        // [num_tokens, num_q_heads, head_dim] of act_dtype
  void* out = nullptr;            // [num_tokens, num_q_heads, head_dim] of act_dtype
  const void* k_cache = nullptr;  // [num_blocks, block_size, num_kv_heads, head_dim] of kv_dtype
  const void* v_cache = nullptr;
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
  DType act_dtype = DType::kF32;
  DType kv_dtype = DType::kF32;
  // Host upper bounds for grid sizing (a CUDA graph captured for a bucket uses the bucket's
  // bounds). 0: num_tokens / max_blocks_per_seq * block_size.
  int64_t max_query_len = 0;
  int64_t max_context_len = 0;
};

// Sizes, dtypes and pointers only.
absl::Status Validate(const KvWriteParams& p);
absl::Status Validate(const PagedAttentionParams& p);
// The index arrays, read from host copies laid out as in the params.
absl::Status ValidateIndices(const KvWriteParams& p, const int64_t* host_slots);
absl::Status ValidateIndices(const PagedAttentionParams& p, const int32_t* host_block_tables,
                             const int32_t* host_query_start, const int32_t* host_context_lens);

}  // namespace moeserve::kernels
