#include "runtime/model/decode_graphs.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace moeserve::runtime {

absl::StatusOr<std::vector<int64_t>> ParseGraphSizes(const std::string& text) {
  std::vector<int64_t> sizes;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int64_t n = 0;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &n) || n < 1 || n > 4096) {
      return absl::InvalidArgumentError(
          absl::StrCat("--cuda-graph-sizes: '", part,
                       "' is not a batch size in [1, 4096] (expected e.g. 1,2,4,8)"));
    }
    sizes.push_back(n);
  }
  if (sizes.empty()) {
    return absl::InvalidArgumentError(
        "--cuda-graph-sizes is empty (use --no-cuda-graphs to turn graphs off)");
  }
  std::sort(sizes.begin(), sizes.end());
  sizes.erase(std::unique(sizes.begin(), sizes.end()), sizes.end());
  return sizes;
}

int64_t DecodeBucket(const DecodeGraphOptions& options, int64_t num_seqs) {
  if (!options.enabled || num_seqs <= 0) return 0;
  for (int64_t b : options.sizes) {
    if (b >= num_seqs) return b;
  }
  return 0;
}

std::vector<int32_t> PaddingRouting(const std::vector<float>& router_bias, int64_t num_experts,
                                    int64_t top_k) {
  std::vector<float> logits(static_cast<size_t>(num_experts), 0.0f);
  if (static_cast<int64_t>(router_bias.size()) == num_experts) logits = router_bias;
  std::vector<int32_t> order(static_cast<size_t>(num_experts));
  for (int32_t e = 0; e < num_experts; ++e) order[e] = e;
  // Larger logit first, ties to the lower index (kernels/ops/router.h).
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  order.resize(static_cast<size_t>(std::min(top_k, num_experts)));
  std::sort(order.begin(), order.end());
  return order;
}

void DecodeGraphCache::Validate(const Key& key) {
  if (key == key_) return;
  if (!graphs_.empty()) ++invalidations_;
  graphs_.clear();
  key_ = key;
}

kernels::Graph* DecodeGraphCache::Find(int64_t bucket) const {
  auto it = graphs_.find(bucket);
  return it == graphs_.end() ? nullptr : it->second.get();
}

void DecodeGraphCache::Insert(int64_t bucket, std::unique_ptr<kernels::Graph> graph) {
  graphs_[bucket] = std::move(graph);
}

}  // namespace moeserve::runtime
