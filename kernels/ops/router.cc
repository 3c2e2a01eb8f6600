#include "kernels/ops/router.h"

#include "kernels/ops/check.h"

namespace moeserve::kernels {

absl::Status Validate(const RouterTopKParams& p) {
  MOESERVE_PARAM_CHECK("router", p.logits && p.expert_ids && p.weights);
  MOESERVE_PARAM_CHECK("router", p.num_tokens >= 0);
  MOESERVE_PARAM_CHECK("router", p.top_k > 0 && p.top_k <= p.num_experts, "(top_k=", p.top_k,
                       " num_experts=", p.num_experts, ")");
  return absl::OkStatus();
}

}  // namespace moeserve::kernels
