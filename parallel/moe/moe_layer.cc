#include "parallel/moe/moe_layer.h"

#include <algorithm>

#include "kernels/base/status_macros.h"
#include "kernels/cpu/router.h"
#include "parallel/moe/dispatch_plan.h"

namespace moeserve::parallel {
namespace {

kernels::MatmulParams Linear(const float* x, int64_t rows, const kernels::TensorView& w, float* y) {
  kernels::MatmulParams p;
  p.x = x;
  p.w = w.data;
  p.w_dtype = w.dtype;
  p.y = y;
  p.m_rows = rows;
  p.n = w.dim(0);
  p.k = w.dim(1);
  return p;
}

}  // namespace

absl::Status RunMoeLayer(kernels::Backend& backend, const MoeLayerShape& shape,
                         const MoeLayerWeights& weights, const float* x, int64_t num_tokens,
                         float* out, const float* logit_bias, MoeRoutingStats* stats) {
  const int64_t hidden = shape.hidden, inter = shape.intermediate, top_k = shape.top_k;
  if (num_tokens == 0) {
    if (stats) stats->tokens_per_expert.assign(static_cast<size_t>(shape.num_experts), 0);
    return absl::OkStatus();
  }

  // Router: logits [num_tokens, num_experts] -> expert_ids / weights [num_tokens, top_k].
  kernels::DeviceBuffer logits = backend.Allocate(sizeof(float) * num_tokens * shape.num_experts);
  backend.Matmul(Linear(x, num_tokens, weights.gate, logits.as<float>()));
  std::vector<int32_t> expert_ids(static_cast<size_t>(num_tokens * top_k));
  std::vector<float> route_weights(expert_ids.size());
  {
    // Routing decisions are needed on the host to build the plan (counts for the all-to-all).
    std::vector<float> host_logits(static_cast<size_t>(num_tokens * shape.num_experts));
    backend.CopyToHost(host_logits.data(), logits.data(), sizeof(float) * host_logits.size());
    kernels::RouterTopKParams rp;
    rp.logits = host_logits.data();
    rp.logit_bias = logit_bias;
    rp.expert_ids = expert_ids.data();
    rp.weights = route_weights.data();
    rp.num_tokens = num_tokens;
    rp.num_experts = shape.num_experts;
    rp.top_k = top_k;
    MOESERVE_RETURN_IF_ERROR(kernels::Validate(rp));
    kernels::cpu::RouterTopK(rp);
  }
  const DispatchPlan plan = BuildDispatchPlan(expert_ids, num_tokens, top_k, shape.num_experts);
  if (stats) {
    stats->tokens_per_expert.resize(static_cast<size_t>(shape.num_experts));
    for (int64_t e = 0; e < shape.num_experts; ++e) {
      stats->tokens_per_expert[e] = plan.tokens_for_expert(e);
    }
  }

  // Permute token states into expert-grouped rows.
  const int64_t rows = plan.num_rows();
  kernels::DeviceBuffer permuted = backend.Allocate(sizeof(float) * rows * hidden);
  kernels::DeviceBuffer index = backend.Allocate(sizeof(int32_t) * rows);
  backend.CopyToDevice(index.data(), plan.permuted_token.data(), sizeof(int32_t) * rows);
  kernels::GatherRowsParams gp{x,    index.as<int32_t>(), permuted.as<float>(),
                               rows, num_tokens,          hidden};
  MOESERVE_RETURN_IF_ERROR(kernels::Validate(gp));
  backend.GatherRows(gp);

  // Experts, one group of rows at a time: expert_out[rows of e] = w2(silu(w1 x) * w3 x).
  int64_t max_group = 0;
  for (int64_t e = 0; e < shape.num_experts; ++e) {
    max_group = std::max(max_group, plan.tokens_for_expert(e));
  }
  kernels::DeviceBuffer expert_out = backend.Allocate(sizeof(float) * rows * hidden);
  kernels::DeviceBuffer gate_buf = backend.Allocate(sizeof(float) * max_group * inter);
  kernels::DeviceBuffer up_buf = backend.Allocate(sizeof(float) * max_group * inter);
  for (int64_t e = 0; e < shape.num_experts; ++e) {
    const int64_t n = plan.tokens_for_expert(e);
    if (n == 0) continue;
    const float* in = permuted.as<float>() + plan.expert_offsets[e] * hidden;
    const ExpertWeights& w = weights.experts[e];
    backend.Matmul(Linear(in, n, w.w1, gate_buf.as<float>()));
    backend.Matmul(Linear(in, n, w.w3, up_buf.as<float>()));
    backend.SwiGlu({gate_buf.as<float>(), up_buf.as<float>(), gate_buf.as<float>(), n * inter});
    backend.Matmul(Linear(gate_buf.as<float>(), n, w.w2,
                          expert_out.as<float>() + plan.expert_offsets[e] * hidden));
  }

  // Combine: out[t] = sum_j weight[t, j] * expert_out[combine_rows[t, j]].
  kernels::DeviceBuffer rows_dev = backend.Allocate(sizeof(int32_t) * rows);
  kernels::DeviceBuffer weights_dev = backend.Allocate(sizeof(float) * rows);
  backend.CopyToDevice(rows_dev.data(), plan.combine_rows.data(), sizeof(int32_t) * rows);
  backend.CopyToDevice(weights_dev.data(), route_weights.data(), sizeof(float) * rows);
  kernels::MoeCombineParams cp{expert_out.as<float>(),
                               rows_dev.as<int32_t>(),
                               weights_dev.as<float>(),
                               out,
                               num_tokens,
                               top_k,
                               hidden,
                               rows};
  backend.MoeCombine(cp);
  return absl::OkStatus();
}

}  // namespace moeserve::parallel
