#include "parallel/moe/moe_steps.h"

#include "kernels/base/status_macros.h"

namespace moeserve::parallel {

absl::Status EnqueueRouter(kernels::Backend& backend, const MoeLayerShape& shape,
                           const kernels::TensorView& gate, const void* x, int64_t num_tokens,
                           const float* logit_bias, float* logits, int32_t* expert_ids,
                           float* weights, const float* token_bias) {
  if (num_tokens == 0) return absl::OkStatus();
  // Router logits in fp32 whatever the activation dtype: the top-k must not flip on rounding.
  kernels::MatmulParams mp =
      kernels::LinearParams(x, num_tokens, gate, logits, backend.activation_dtype());
  mp.y_dtype = kernels::DType::kF32;
  MOESERVE_RETURN_IF_ERROR(kernels::Validate(mp));
  kernels::RouterTopKParams rp;
  rp.logits = logits;
  rp.logit_bias = logit_bias;
  rp.expert_ids = expert_ids;
  rp.weights = weights;
  rp.num_tokens = num_tokens;
  rp.num_experts = shape.num_experts;
  rp.top_k = shape.top_k;
  rp.token_bias = token_bias;
  MOESERVE_RETURN_IF_ERROR(kernels::Validate(rp));
  backend.Matmul(mp);
  backend.RouterTopK(rp);
  return absl::OkStatus();
}

absl::Status EnqueueGather(kernels::Backend& backend, const void* src, int64_t num_src_rows,
                           const int32_t* rows, int64_t num_rows, int64_t hidden, void* dst) {
  if (num_rows == 0) return absl::OkStatus();
  const kernels::GatherRowsParams gp{
      src, rows, dst, num_rows, num_src_rows, hidden, backend.activation_dtype()};
  MOESERVE_RETURN_IF_ERROR(kernels::Validate(gp));
  backend.GatherRows(gp);
  return absl::OkStatus();
}

absl::Status EnqueueExperts(kernels::Backend& backend, const MoeLayerShape& shape,
                            const ExpertTables& tables, const void* in,
                            const int32_t* expert_offsets, int64_t max_rows, void* inter,
                            void* out) {
  if (max_rows == 0) return absl::OkStatus();
  if (!tables.built()) {
    return absl::FailedPreconditionError("moe: expert weight tables were not built");
  }
  kernels::GroupedMatmulParams up;  // inter = silu(in @ w1^T) * (in @ w3^T)
  up.x = in;
  up.w = tables.w1;
  up.w_up = tables.w3;
  up.w_dtype = tables.dtype;
  up.w_layout = tables.layout;
  up.y = inter;
  up.expert_offsets = expert_offsets;
  up.num_experts = shape.num_experts;
  up.max_rows = max_rows;
  up.n = shape.intermediate;
  up.k = shape.hidden;
  up.act_dtype = backend.activation_dtype();
  kernels::GroupedMatmulParams down = up;  // out = inter @ w2^T
  down.x = inter;
  down.w = tables.w2;
  down.w_up = nullptr;
  down.y = out;
  down.n = shape.hidden;
  down.k = shape.intermediate;
  MOESERVE_RETURN_IF_ERROR(kernels::Validate(up));
  MOESERVE_RETURN_IF_ERROR(kernels::Validate(down));
  backend.GroupedMatmul(up);
  backend.GroupedMatmul(down);
  return absl::OkStatus();
}

absl::Status EnqueueCombine(kernels::Backend& backend, const MoeLayerShape& shape,
                            const void* expert_out, int64_t num_expert_rows, const int32_t* rows,
                            const float* weights, int64_t num_tokens, void* out) {
  if (num_tokens == 0) return absl::OkStatus();
  const kernels::MoeCombineParams cp{expert_out,
                                     rows,
                                     weights,
                                     out,
                                     num_tokens,
                                     shape.top_k,
                                     shape.hidden,
                                     num_expert_rows,
                                     backend.activation_dtype()};
  MOESERVE_RETURN_IF_ERROR(kernels::Validate(cp));
  backend.MoeCombine(cp);
  return absl::OkStatus();
}

}  // namespace moeserve::parallel
