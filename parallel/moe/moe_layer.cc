#include "parallel/moe/moe_layer.h"

#include "kernels/base/status_macros.h"
#include "parallel/moe/dispatch_plan.h"
#include "parallel/moe/moe_steps.h"

namespace moeserve::parallel {

absl::Status RunMoeLayer(kernels::Backend& backend, const MoeLayerShape& shape,
                         const MoeLayerWeights& weights, const float* x, int64_t num_tokens,
                         float* out, const float* logit_bias, MoeRoutingStats* stats) {
  const int64_t hidden = shape.hidden;
  if (num_tokens == 0) {
    if (stats) stats->tokens_per_expert.assign(static_cast<size_t>(shape.num_experts), 0);
    return absl::OkStatus();
  }
  RoutedTokens routed;
  MOESERVE_RETURN_IF_ERROR(
      RouteTokens(backend, shape, weights.gate, x, num_tokens, logit_bias, &routed));
  const DispatchPlan plan =
      BuildDispatchPlan(routed.expert_ids, num_tokens, shape.top_k, shape.num_experts);
  if (stats) {
    stats->tokens_per_expert.resize(static_cast<size_t>(shape.num_experts));
    for (int64_t e = 0; e < shape.num_experts; ++e) {
      stats->tokens_per_expert[e] = plan.tokens_for_expert(e);
    }
  }
  // Permute token states into expert-grouped rows, run each expert's group, combine.
  const int64_t rows = plan.num_rows();
  kernels::DeviceBuffer permuted = backend.Allocate(sizeof(float) * rows * hidden);
  kernels::DeviceBuffer expert_out = backend.Allocate(sizeof(float) * rows * hidden);
  MOESERVE_RETURN_IF_ERROR(
      GatherRowsFrom(backend, x, num_tokens, plan.permuted_token, hidden, permuted.as<float>()));
  MOESERVE_RETURN_IF_ERROR(RunExpertGroups(backend, shape, weights.experts, permuted.as<float>(),
                                           plan.expert_offsets, expert_out.as<float>()));
  return CombineRows(backend, shape, expert_out.as<float>(), rows, plan.combine_rows,
                     routed.weights, num_tokens, out);
}

}  // namespace moeserve::parallel
