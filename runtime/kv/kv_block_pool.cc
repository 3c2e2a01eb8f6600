#include "runtime/kv/kv_block_pool.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/base/status_macros.h"

namespace moeserve::runtime {

absl::StatusOr<KvBlockPool> KvBlockPool::Create(kernels::Backend& backend,
                                                const KvCacheShape& shape) {
  if (shape.num_layers <= 0 || shape.num_kv_heads <= 0 || shape.head_dim <= 0 ||
      shape.block_size <= 0 || shape.num_blocks <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("kv cache: every dimension must be > 0 (layers=", shape.num_layers,
                     " kv_heads=", shape.num_kv_heads, " head_dim=", shape.head_dim,
                     " block_size=", shape.block_size, " num_blocks=", shape.num_blocks, ")"));
  }
  if (shape.kv_dtype != kernels::DType::kF32 && shape.kv_dtype != kernels::DType::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat("kv cache: dtype ",
                                                   std::string(kernels::DTypeName(shape.kv_dtype)),
                                                   " is not F32 or BF16"));
  }
  KvBlockPool pool;
  pool.shape_ = shape;
  const size_t bytes = static_cast<size_t>(shape.num_blocks * shape.bytes_per_block());
  for (int64_t l = 0; l < shape.num_layers; ++l) {
    for (std::vector<kernels::DeviceBuffer>* kv : {&pool.k_, &pool.v_}) {
      absl::StatusOr<kernels::DeviceBuffer> buf = backend.Allocate(bytes);
      if (!buf.ok()) {
        return absl::ResourceExhaustedError(
            absl::StrCat("kv cache: cannot allocate ", shape.num_layers, " layers x 2 x ", bytes,
                         " bytes on ", std::string(backend.name()), " (", buf.status().message(),
                         "); lower --kv-blocks or --kv-cache-bytes"));
      }
      kv->push_back(*std::move(buf));
    }
  }
  // Pop order hands out block 0 first (reverse stack); order is irrelevant to results.
  for (int64_t b = shape.num_blocks - 1; b >= 0; --b) pool.free_.push_back(static_cast<int32_t>(b));
  return pool;
}

std::optional<int32_t> KvBlockPool::AllocateBlock() {
  if (free_.empty()) return std::nullopt;
  const int32_t b = free_.back();
  free_.pop_back();
  return b;
}

void KvBlockPool::FreeBlock(int32_t block) { free_.push_back(block); }

bool KvBlockPool::Reserve(SequenceKv& seq, int64_t total_tokens) {
  const int64_t needed = (total_tokens + shape_.block_size - 1) / shape_.block_size;
  const int64_t missing = needed - static_cast<int64_t>(seq.block_table.size());
  if (missing <= 0) return true;
  if (missing > num_free_blocks()) return false;
  for (int64_t i = 0; i < missing; ++i) seq.block_table.push_back(*AllocateBlock());
  return true;
}

void KvBlockPool::Release(SequenceKv& seq) {
  for (int32_t b : seq.block_table) {
    if (b >= 0) FreeBlock(b);
  }
  seq.block_table.clear();
  seq.num_tokens = 0;
}

int64_t KvBlockPool::ReleaseOutOfWindow(SequenceKv& seq, int64_t window) {
  if (window <= 0) return 0;
  const int64_t first_needed = seq.num_tokens - window + 1;  // earliest key the next query sees
  int64_t freed = 0;
  for (size_t i = 0; i < seq.block_table.size(); ++i) {
    const int64_t last_pos = static_cast<int64_t>(i + 1) * shape_.block_size - 1;
    if (last_pos >= first_needed) break;
    if (seq.block_table[i] >= 0) {
      FreeBlock(seq.block_table[i]);
      seq.block_table[i] = -1;
      ++freed;
    }
  }
  return freed;
}

int64_t KvBlockPool::LiveBlocks(const SequenceKv& seq) {
  int64_t live = 0;
  for (int32_t b : seq.block_table) live += b >= 0 ? 1 : 0;
  return live;
}

std::optional<int32_t> KvBlockPool::PaddingBlock(kernels::Backend& backend) {
  if (padding_block_ >= 0) return padding_block_;
  std::optional<int32_t> block = AllocateBlock();
  if (!block) return std::nullopt;
  const size_t bytes = static_cast<size_t>(shape_.bytes_per_block());
  for (int64_t l = 0; l < shape_.num_layers; ++l) {
    for (void* base : {k(l), v(l)}) {
      if (!backend
               .MemsetAsync(static_cast<char*>(base) + bytes * static_cast<size_t>(*block), 0,
                            bytes)
               .ok()) {
        FreeBlock(*block);
        return std::nullopt;
      }
    }
  }
  padding_block_ = *block;
  return padding_block_;
}

absl::StatusOr<int64_t> KvBlocksForMemoryUtilization(kernels::Backend& backend,
                                                     const KvCacheShape& shape, double utilization,
                                                     int64_t max_seq_len) {
  MOESERVE_ASSIGN_OR_RETURN(const kernels::DeviceMemoryInfo memory, backend.MemoryInfo());
  return KvBlocksForMemoryUtilization(memory, shape, utilization, max_seq_len);
}

absl::StatusOr<int64_t> KvBlocksForMemoryUtilization(const kernels::DeviceMemoryInfo& mem,
                                                     const KvCacheShape& shape, double utilization,
                                                     int64_t max_seq_len) {
  if (!(utilization > 0.0 && utilization <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--gpu-memory-utilization=", utilization, " is not in (0, 1]"));
  }
  if (shape.num_layers <= 0 || shape.block_size <= 0 || shape.bytes_per_block() <= 0) {
    return absl::InvalidArgumentError("kv cache: empty block shape");
  }
  const int64_t total = static_cast<int64_t>(mem.total_bytes);
  const int64_t used = total - static_cast<int64_t>(mem.free_bytes);
  const int64_t budget = static_cast<int64_t>(utilization * static_cast<double>(total)) - used;
  const int64_t per_block = 2 * shape.num_layers * shape.bytes_per_block();
  const int64_t blocks = budget > 0 ? budget / per_block : 0;
  const int64_t needed = (max_seq_len + shape.block_size - 1) / shape.block_size + 1;
  if (blocks < needed) {
    return absl::ResourceExhaustedError(
        absl::StrCat("kv cache: --gpu-memory-utilization=", utilization, " of ", total,
                     " bytes leaves ", std::max<int64_t>(budget, 0), " bytes after the ", used,
                     " bytes in use (weights, workspaces), i.e. ", blocks, " KV blocks of ",
                     per_block, " bytes (all layers, K and V), but one sequence of ", max_seq_len,
                     " tokens needs ", needed, " blocks of ", shape.block_size,
                     " tokens (with the padding block); raise --gpu-memory-utilization or lower "
                     "max_position_embeddings / use a smaller model"));
  }
  return blocks;
}

}  // namespace moeserve::runtime
