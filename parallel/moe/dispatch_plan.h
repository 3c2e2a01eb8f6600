// DispatchPlan: where each routed token copy goes in an MoE layer.
//
// Input: the router's choices, expert_ids [num_tokens, top_k] (ascending expert id per token).
// The plan permutes the num_tokens * top_k (token, choice) pairs into expert-grouped order:
// rows expert_offsets[e] .. expert_offsets[e+1]-1 belong to expert e, in ascending token order.
// Everything is derived from the routing alone, so the plan (and so the arithmetic) of a token
// does not depend on which other tokens share the batch. With expert parallelism, the expert
// groups of one rank are contiguous and become that rank's all-to-all segment.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace moeserve::parallel {

struct DispatchPlan {
  int64_t num_tokens = 0;
  int64_t top_k = 0;
  int64_t num_experts = 0;
  std::vector<int32_t> expert_offsets;  // [num_experts + 1]
  std::vector<int32_t> permuted_token;  // [num_tokens * top_k]: source token of each row
  std::vector<int32_t> combine_rows;    // [num_tokens, top_k]: row holding choice (t, j)

  int64_t num_rows() const { return num_tokens * top_k; }
  int64_t tokens_for_expert(int64_t e) const { return expert_offsets[e + 1] - expert_offsets[e]; }
};

// REQUIRES: every id in [0, num_experts); expert_ids.size() == num_tokens * top_k.
DispatchPlan BuildDispatchPlan(absl::Span<const int32_t> expert_ids, int64_t num_tokens,
                               int64_t top_k, int64_t num_experts);

}  // namespace moeserve::parallel
