#include "kernels/ops/moe.h"

#include "kernels/ops/check.h"

namespace moeserve::kernels {

absl::Status Validate(const MoeAlignParams& p) {
  // expert_offsets is written even for 0 tokens (all zero): GroupedMatmul reads it.
  MOESERVE_PARAM_CHECK("moe_align", p.expert_offsets != nullptr);
  MOESERVE_PARAM_CHECK("moe_align",
                       p.num_tokens == 0 || (p.expert_ids && p.permuted_token && p.combine_rows));
  MOESERVE_PARAM_CHECK("moe_align", p.num_tokens >= 0 && p.num_experts > 0);
  MOESERVE_PARAM_CHECK("moe_align", p.top_k > 0 && p.top_k <= p.num_experts, "(top_k=", p.top_k,
                       " num_experts=", p.num_experts, ")");
  return absl::OkStatus();
}

absl::Status Validate(const GatherRowsParams& p) {
  MOESERVE_PARAM_CHECK("gather_rows", p.src && p.rows && p.dst);
  MOESERVE_PARAM_CHECK("gather_rows", p.num_rows >= 0 && p.num_src_rows >= 0 && p.hidden > 0);
  MOESERVE_ACT_DTYPE_CHECK("gather_rows", "act_dtype", p.act_dtype);
  return absl::OkStatus();
}

absl::Status ValidateIndices(const GatherRowsParams& p, const int32_t* host_rows) {
  MOESERVE_PARAM_CHECK("gather_rows", host_rows != nullptr || p.num_rows == 0);
  for (int64_t i = 0; i < p.num_rows; ++i) {
    if (host_rows[i] < 0 || host_rows[i] >= p.num_src_rows) {
      return absl::InvalidArgumentError(
          absl::StrCat("gather_rows: row ", host_rows[i], " outside [0, ", p.num_src_rows, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status Validate(const GroupedMatmulParams& p) {
  MOESERVE_PARAM_CHECK("grouped_matmul", p.x && p.w && p.y && p.expert_offsets);
  MOESERVE_PARAM_CHECK("grouped_matmul", p.num_experts > 0 && p.max_rows >= 0);
  MOESERVE_PARAM_CHECK("grouped_matmul", p.n > 0 && p.k > 0, "(n=", p.n, " k=", p.k, ")");
  MOESERVE_PARAM_CHECK("grouped_matmul", IsFloat(p.w_dtype));
  MOESERVE_ACT_DTYPE_CHECK("grouped_matmul", "act_dtype", p.act_dtype);
  MOESERVE_PARAM_CHECK("grouped_matmul", p.x != static_cast<const void*>(p.y));
  return absl::OkStatus();
}

absl::Status Validate(const SwiGluParams& p) {
  MOESERVE_PARAM_CHECK("swiglu", p.gate && p.up && p.out && p.n >= 0);
  MOESERVE_ACT_DTYPE_CHECK("swiglu", "act_dtype", p.act_dtype);
  return absl::OkStatus();
}

absl::Status Validate(const MoeCombineParams& p) {
  MOESERVE_PARAM_CHECK("moe_combine", p.expert_out && p.src_rows && p.weights && p.out);
  MOESERVE_PARAM_CHECK("moe_combine", p.top_k > 0 && p.hidden > 0 && p.num_tokens >= 0);
  MOESERVE_PARAM_CHECK("moe_combine", p.num_expert_rows >= 0);
  MOESERVE_ACT_DTYPE_CHECK("moe_combine", "act_dtype", p.act_dtype);
  return absl::OkStatus();
}

absl::Status ValidateIndices(const MoeCombineParams& p, const int32_t* host_src_rows) {
  MOESERVE_PARAM_CHECK("moe_combine", host_src_rows != nullptr || p.num_tokens == 0);
  for (int64_t i = 0; i < p.num_tokens * p.top_k; ++i) {
    if (host_src_rows[i] < 0 || host_src_rows[i] >= p.num_expert_rows) {
      return absl::InvalidArgumentError(absl::StrCat("moe_combine: source row ", host_src_rows[i],
                                                     " outside [0, ", p.num_expert_rows, ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace moeserve::kernels
