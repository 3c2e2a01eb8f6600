#include "parallel/moe/dispatch_plan.h"

namespace moeserve::parallel {

DispatchPlan BuildDispatchPlan(absl::Span<const int32_t> expert_ids, int64_t num_tokens,
                               int64_t top_k, int64_t num_experts) {
  DispatchPlan plan;
  plan.num_tokens = num_tokens;
  plan.top_k = top_k;
  plan.num_experts = num_experts;
  plan.expert_offsets.assign(static_cast<size_t>(num_experts + 1), 0);
  for (int32_t e : expert_ids) ++plan.expert_offsets[e + 1];
  for (int64_t e = 0; e < num_experts; ++e) plan.expert_offsets[e + 1] += plan.expert_offsets[e];

  // Counting sort by expert; scanning tokens in order keeps each group in ascending token order.
  std::vector<int32_t> cursor(plan.expert_offsets.begin(), plan.expert_offsets.end() - 1);
  plan.permuted_token.resize(expert_ids.size());
  plan.combine_rows.resize(expert_ids.size());
  for (int64_t t = 0; t < num_tokens; ++t) {
    for (int64_t j = 0; j < top_k; ++j) {
      const int32_t e = expert_ids[t * top_k + j];
      const int32_t row = cursor[e]++;
      plan.permuted_token[row] = static_cast<int32_t>(t);
      plan.combine_rows[t * top_k + j] = row;
    }
  }
  return plan;
}

}  // namespace moeserve::parallel
