// Paged KV cache storage for one rank: a pool of fixed-size blocks per layer, and per-sequence
// block tables.
//
// Layout, per layer: K and V each [num_blocks, block_size, num_kv_heads, head_dim] of kv_dtype
// (the backend's kv_dtype(): fp32 on CPU, bf16 on CUDA), in the backend's device memory (host
// for CPU, device for CUDA), allocated through the backend and sized in bytes. A sequence's token
// at position p lives in block block_table[p / block_size], offset p % block_size, in every layer.
//
// Threading: owned by the rank's worker thread; not thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace moeserve::runtime {

struct KvCacheShape {
  int64_t num_layers = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t block_size = 16;  // tokens per block
  int64_t num_blocks = 0;
  kernels::DType kv_dtype = kernels::DType::kF32;

  int64_t elements_per_block() const { return block_size * num_kv_heads * head_dim; }
  // Bytes of one block of K (or of V) in one layer.
  int64_t bytes_per_block() const {
    return elements_per_block() * static_cast<int64_t>(kernels::DTypeSize(kv_dtype));
  }
};

// The KV state of one sequence: which blocks it holds and how many positions are cached.
struct SequenceKv {
  std::vector<int32_t> block_table;
  int64_t num_tokens = 0;  // positions whose K/V are written
};

class KvBlockPool {
 public:
  static absl::StatusOr<KvBlockPool> Create(kernels::Backend& backend, const KvCacheShape& shape);

  const KvCacheShape& shape() const { return shape_; }
  int64_t num_free_blocks() const { return static_cast<int64_t>(free_.size()); }
  int64_t num_used_blocks() const { return shape_.num_blocks - num_free_blocks(); }

  // One free block, or nothing when the pool is exhausted (an expected shortage, not an error).
  std::optional<int32_t> AllocateBlock();
  void FreeBlock(int32_t block);

  // Grows seq's block table to hold `total_tokens` positions. All-or-nothing: false (and no
  // change) when the pool lacks blocks.
  bool Reserve(SequenceKv& seq, int64_t total_tokens);
  // Returns all of seq's blocks to the pool and resets it.
  void Release(SequenceKv& seq);
  // Sliding window (the rolling buffer of the Mixtral paper): the next query, at position
  // seq.num_tokens, sees keys j > num_tokens - window, so every block whose last position is at
  // or before num_tokens - window is returned to the pool; its table entry becomes -1 and later
  // positions keep their block. Returns the number of blocks freed. window <= 0: no-op.
  int64_t ReleaseOutOfWindow(SequenceKv& seq, int64_t window);
  // Blocks `seq` holds (entries that are not -1).
  static int64_t LiveBlocks(const SequenceKv& seq);

  // The block that padding rows of bucketed decode steps read (runtime/model/decode_graphs.h):
  // taken from the free blocks on the first call, zeroed in every layer (enqueued on `backend`),
  // never written afterwards and never returned. Nothing when no block is free (the caller runs
  // unpadded). It counts as used in num_used_blocks().
  std::optional<int32_t> PaddingBlock(kernels::Backend& backend);

  // [num_blocks, block_size, num_kv_heads, head_dim] of shape().kv_dtype, backend memory.
  void* k(int64_t layer) { return k_[layer].data(); }
  void* v(int64_t layer) { return v_[layer].data(); }

 private:
  KvCacheShape shape_;
  std::vector<kernels::DeviceBuffer> k_, v_;  // [num_layers]
  std::vector<int32_t> free_;                 // stack of free block ids
  int32_t padding_block_ = -1;                // PaddingBlock(); -1: not taken yet
};

// KV blocks for --gpu-memory-utilization on a device backend: called after the weights and the
// workspaces are allocated, it returns (utilization * total - used) / (bytes of one block in all
// layers, K and V), where used = total - free from backend.MemoryInfo(). `shape.num_blocks` is
// ignored. An error names the numbers when that is fewer than one sequence of `max_seq_len`
// tokens needs (+1 for the padding block of decode graphs).
absl::StatusOr<int64_t> KvBlocksForMemoryUtilization(kernels::Backend& backend,
                                                     const KvCacheShape& shape, double utilization,
                                                     int64_t max_seq_len);
// The same from a memory snapshot (tests).
absl::StatusOr<int64_t> KvBlocksForMemoryUtilization(const kernels::DeviceMemoryInfo& memory,
                                                     const KvCacheShape& shape, double utilization,
                                                     int64_t max_seq_len);

}  // namespace moeserve::runtime
