#include "kernels/ops/moe.h"

#include "kernels/ops/check.h"

namespace moeserve::kernels {

absl::Status Validate(const GatherRowsParams& p) {
  MOESERVE_PARAM_CHECK("gather_rows", p.src && p.rows && p.dst);
  MOESERVE_PARAM_CHECK("gather_rows", p.num_rows >= 0 && p.hidden > 0);
  for (int64_t i = 0; i < p.num_rows; ++i) {
    if (p.rows[i] < 0 || p.rows[i] >= p.num_src_rows) {
      return absl::InvalidArgumentError(
          absl::StrCat("gather_rows: row ", p.rows[i], " outside [0, ", p.num_src_rows, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status Validate(const SwiGluParams& p) {
  MOESERVE_PARAM_CHECK("swiglu", p.gate && p.up && p.out && p.n >= 0);
  return absl::OkStatus();
}

absl::Status Validate(const MoeCombineParams& p) {
  MOESERVE_PARAM_CHECK("moe_combine", p.expert_out && p.src_rows && p.weights && p.out);
  MOESERVE_PARAM_CHECK("moe_combine", p.top_k > 0 && p.hidden > 0 && p.num_tokens >= 0);
  for (int64_t i = 0; i < p.num_tokens * p.top_k; ++i) {
    if (p.src_rows[i] < 0 || p.src_rows[i] >= p.num_expert_rows) {
      return absl::InvalidArgumentError(absl::StrCat("moe_combine: source row ", p.src_rows[i],
                                                     " outside [0, ", p.num_expert_rows, ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace moeserve::kernels
