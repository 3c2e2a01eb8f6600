// CUDA graphs for decode steps: bucketed batch sizes, padding rows and the graph cache.
//
// A decode-only step (every sequence has exactly one new token, no expert parallelism) of S
// sequences is padded to the smallest configured bucket >= S and its device part (embedding to LM
// head logits) is captured once per bucket and replayed afterwards. The upload before and the
// downloads after stay outside the graph. Steps that are not decode-only, or larger than the
// largest bucket, run eagerly and unpadded as before.
//
// Padding rows (rows S .. bucket-1) are made harmless and predictable:
//  - token id 0 at position 0, KV slot -1 (KvWrite skips it), one query row of its own, context
//    length 1 over the pool's padding block (KvBlockPool::PaddingBlock: zeroed, never written);
//  - right after the embedding a row mask (MoeCombine with top_k = 1, weight 1 for real rows, 0
//    for padding) zeroes the padding rows; with no biases in Mixtral's linears, an all-zero row
//    stays exactly zero through every norm, projection, rope, attention (its one key and value are
//    zero) and expert, so its router logits are exactly the router bias (or 0);
//  - their routing is therefore known on the host (PaddingRouting: top-k of the bias, ties to the
//    lower expert index, as the router kernel does) and subtracted from the device expert-load
//    counters (MixtralModel::RecordDeviceExpertLoad), so statistics count real tokens only;
//  - their logits rows are computed but never downloaded.
// Real rows are multiplied by exactly 1.0 in fp32 and are bitwise unchanged (every op is
// row-independent, kernels/ops/moe.h "batch invariance"), so padded steps give the same logits.
//
// Grid sizes: every op of a captured step is sized by the bucket (tokens = sequences = logit rows
// = bucket) and by capacities (block-table stride); PagedAttention gets max_query_len 1 and
// max_context_len = block-table capacity * block size, never the step's host values.
//
// Invalidation: a graph bakes device addresses and sizes. DecodeGraphCache::Validate drops every
// graph when its key (step-buffer, workspace and KV-pool addresses, capacities, router bias)
// changes, e.g. when the step buffers grow; the next step of a bucket captures again.
//
// Backends without graphs (CPU: BeginCapture is Unimplemented) run the same padded step eagerly.
//
// Threading: owned by the model's driving thread.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace moeserve::runtime {

struct DecodeGraphOptions {
  bool enabled = false;  // the model default; the CLI enables it on backends with graphs
  std::vector<int64_t> sizes = {1, 2, 4, 8, 16, 32, 64, 128, 256};  // ascending buckets
};

// "1,2,4,8" -> {1, 2, 4, 8} (sorted, deduplicated); every entry must be in [1, 4096].
absl::StatusOr<std::vector<int64_t>> ParseGraphSizes(const std::string& text);

// The smallest bucket >= num_seqs, or 0 when there is none (the step runs eagerly).
int64_t DecodeBucket(const DecodeGraphOptions& options, int64_t num_seqs);

// Experts a padding row is routed to: the top_k largest of `router_bias` (all zero when empty),
// ties to the lower index, ascending.
std::vector<int32_t> PaddingRouting(const std::vector<float>& router_bias, int64_t num_experts,
                                    int64_t top_k);

// Captured decode graphs by bucket, dropped together when their key changes.
class DecodeGraphCache {
 public:
  // Everything a captured step bakes in besides the bucket.
  struct Key {
    std::vector<const void*> addresses;
    std::vector<int64_t> sizes;
    bool operator==(const Key& o) const { return addresses == o.addresses && sizes == o.sizes; }
  };
  // Drops all graphs when `key` differs from the last one.
  void Validate(const Key& key);
  kernels::Graph* Find(int64_t bucket) const;
  void Insert(int64_t bucket, std::unique_ptr<kernels::Graph> graph);
  void Clear() { graphs_.clear(); }
  int64_t size() const { return static_cast<int64_t>(graphs_.size()); }
  // Times Validate dropped graphs (tests, logs).
  int64_t invalidations() const { return invalidations_; }

 private:
  Key key_;
  std::map<int64_t, std::unique_ptr<kernels::Graph>> graphs_;
  int64_t invalidations_ = 0;
};

}  // namespace moeserve::runtime
