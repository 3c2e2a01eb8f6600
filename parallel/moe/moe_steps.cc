#include "parallel/moe/moe_steps.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/base/status_macros.h"
#include "kernels/cpu/router.h"

namespace moeserve::parallel {
namespace {

// Uploads a host array to a fresh backend buffer.
template <typename T>
kernels::DeviceBuffer Upload(kernels::Backend& backend, absl::Span<const T> host) {
  kernels::DeviceBuffer buf = backend.Allocate(sizeof(T) * host.size());
  if (!host.empty()) backend.CopyToDevice(buf.data(), host.data(), sizeof(T) * host.size());
  return buf;
}

}  // namespace

absl::Status RouteTokens(kernels::Backend& backend, const MoeLayerShape& shape,
                         const kernels::TensorView& gate, const float* x, int64_t num_tokens,
                         const float* logit_bias, RoutedTokens* routed) {
  routed->expert_ids.assign(static_cast<size_t>(num_tokens * shape.top_k), 0);
  routed->weights.assign(routed->expert_ids.size(), 0.0f);
  if (num_tokens == 0) return absl::OkStatus();
  // Router logits [num_tokens, num_experts] on the backend, then top-k on the host: the
  // routing decisions are needed there to build the dispatch plan.
  kernels::DeviceBuffer logits = backend.Allocate(sizeof(float) * num_tokens * shape.num_experts);
  backend.Matmul(kernels::LinearParams(x, num_tokens, gate, logits.as<float>()));
  std::vector<float> host_logits(static_cast<size_t>(num_tokens * shape.num_experts));
  backend.CopyToHost(host_logits.data(), logits.data(), sizeof(float) * host_logits.size());
  kernels::RouterTopKParams rp;
  rp.logits = host_logits.data();
  rp.logit_bias = logit_bias;
  rp.expert_ids = routed->expert_ids.data();
  rp.weights = routed->weights.data();
  rp.num_tokens = num_tokens;
  rp.num_experts = shape.num_experts;
  rp.top_k = shape.top_k;
  MOESERVE_RETURN_IF_ERROR(kernels::Validate(rp));
  kernels::cpu::RouterTopK(rp);
  return absl::OkStatus();
}

absl::Status GatherRowsFrom(kernels::Backend& backend, const float* src, int64_t num_src_rows,
                            absl::Span<const int32_t> index, int64_t hidden, float* dst) {
  if (index.empty()) return absl::OkStatus();
  kernels::GatherRowsParams gp{src,          index.data(), dst, static_cast<int64_t>(index.size()),
                               num_src_rows, hidden};
  MOESERVE_RETURN_IF_ERROR(kernels::Validate(gp));  // on the host copy of the index
  kernels::DeviceBuffer index_dev = Upload(backend, index);
  gp.rows = index_dev.as<int32_t>();
  backend.GatherRows(gp);
  return absl::OkStatus();
}

absl::Status RunExpertGroups(kernels::Backend& backend, const MoeLayerShape& shape,
                             absl::Span<const ExpertWeights> experts, const float* in,
                             absl::Span<const int32_t> expert_offsets, float* out) {
  const int64_t hidden = shape.hidden, inter = shape.intermediate;
  int64_t max_group = 0;
  for (int64_t e = 0; e < shape.num_experts; ++e) {
    max_group = std::max<int64_t>(max_group, expert_offsets[e + 1] - expert_offsets[e]);
  }
  if (max_group == 0) return absl::OkStatus();
  // Scratch for the widest group; SwiGLU writes its result over the gate projection.
  kernels::DeviceBuffer gate_buf = backend.Allocate(sizeof(float) * max_group * inter);
  kernels::DeviceBuffer up_buf = backend.Allocate(sizeof(float) * max_group * inter);
  for (int64_t e = 0; e < shape.num_experts; ++e) {
    const int64_t n = expert_offsets[e + 1] - expert_offsets[e];
    if (n == 0) continue;
    const ExpertWeights& w = experts[e];
    if (w.w1.data == nullptr || w.w2.data == nullptr || w.w3.data == nullptr) {
      return absl::InternalError(
          absl::StrCat("moe: ", n, " rows were routed to expert ", e,
                       ", whose weights this rank does not hold (placement and weights disagree)"));
    }
    const float* x = in + static_cast<int64_t>(expert_offsets[e]) * hidden;
    backend.Matmul(kernels::LinearParams(x, n, w.w1, gate_buf.as<float>()));
    backend.Matmul(kernels::LinearParams(x, n, w.w3, up_buf.as<float>()));
    backend.SwiGlu({gate_buf.as<float>(), up_buf.as<float>(), gate_buf.as<float>(), n * inter});
    backend.Matmul(kernels::LinearParams(gate_buf.as<float>(), n, w.w2,
                                         out + static_cast<int64_t>(expert_offsets[e]) * hidden));
  }
  return absl::OkStatus();
}

absl::Status CombineRows(kernels::Backend& backend, const MoeLayerShape& shape,
                         const float* expert_out, int64_t num_expert_rows,
                         absl::Span<const int32_t> rows, absl::Span<const float> weights,
                         int64_t num_tokens, float* out) {
  if (num_tokens == 0) return absl::OkStatus();
  kernels::MoeCombineParams cp{expert_out, rows.data(), weights.data(), out,
                               num_tokens, shape.top_k, shape.hidden,   num_expert_rows};
  MOESERVE_RETURN_IF_ERROR(kernels::Validate(cp));  // on the host copies of rows and weights
  kernels::DeviceBuffer rows_dev = Upload(backend, rows);
  kernels::DeviceBuffer weights_dev = Upload(backend, weights);
  cp.src_rows = rows_dev.as<int32_t>();
  cp.weights = weights_dev.as<float>();
  backend.MoeCombine(cp);
  return absl::OkStatus();
}

}  // namespace moeserve::parallel
