#include "parallel/moe/ep_moe_layer.h"

#include <chrono>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/base/status_macros.h"
#include "parallel/moe/ep_dispatch_plan.h"
#include "parallel/moe/moe_steps.h"

namespace moeserve::parallel {
namespace {

// Byte counts and offsets [world_size] of segments of `rows_per_rank` rows of `row_bytes`.
struct Segments {
  std::vector<int64_t> bytes, offsets;
};

template <typename RowsOf>
Segments MakeSegments(int world, int64_t row_bytes, RowsOf rows_of) {
  Segments s;
  int64_t offset = 0;
  for (int p = 0; p < world; ++p) {
    s.offsets.push_back(offset);
    s.bytes.push_back(rows_of(p) * row_bytes);
    offset += s.bytes.back();
  }
  return s;
}

// Times a collective into *seconds.
template <typename Fn>
absl::Status Timed(double* seconds, Fn fn) {
  const auto start = std::chrono::steady_clock::now();
  absl::Status st = fn();
  *seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return st;
}

// The layer's work; local failures are turned into an abort by the caller.
absl::Status Run(kernels::Backend& backend, const MoeLayerShape& shape,
                 const MoeLayerWeights& weights, int64_t layer, const ExpertParallelContext& ep,
                 const float* x, int64_t num_tokens, float* out, const float* logit_bias,
                 EpLayerTrace* trace, bool* local_error) {
  Communicator& comm = *ep.comm;
  const ExpertPlacement& placement = *ep.placement;
  const int rank = comm.rank(), world = comm.world_size();
  const int64_t hidden = shape.hidden, experts = shape.num_experts;
  const int64_t row_bytes = hidden * static_cast<int64_t>(sizeof(float));
  double comm_seconds = 0;
  if (placement.world_size() != world || placement.num_experts() != experts || layer < 0 ||
      layer >= placement.num_layers()) {
    *local_error = true;
    return absl::InvalidArgumentError(
        absl::StrCat("expert-parallel MoE layer ", layer, ": placement (", placement.Summary(),
                     ") does not fit a group of ", world, " ranks and ", experts, " experts"));
  }
  // Marks errors raised here (not by a collective) so the caller aborts the group for them.
  auto local = [&](absl::Status st) {
    if (!st.ok()) *local_error = true;
    return st;
  };

  RoutedTokens routed;
  MOESERVE_RETURN_IF_ERROR(
      local(RouteTokens(backend, shape, weights.gate, x, num_tokens, logit_bias, &routed)));
  const EpSendPlan send =
      BuildEpSendPlan(routed.expert_ids, num_tokens, shape.top_k, placement, layer, rank);

  // 1. Counts: how many rows of each expert every rank sends to every other.
  std::vector<int64_t> recv_counts(static_cast<size_t>(world * experts));
  MOESERVE_RETURN_IF_ERROR(Timed(&comm_seconds, [&] {
    return comm.AllToAll(send.counts.data(), recv_counts.data(), experts);
  }));
  absl::StatusOr<EpRecvPlan> recv_or =
      BuildEpRecvPlan(recv_counts, world, experts, placement, layer, rank);
  MOESERVE_RETURN_IF_ERROR(local(recv_or.status()));
  const EpRecvPlan& recv = *recv_or;

  // 2. Dispatch: token states permuted into (destination, expert, token) order.
  const int64_t send_rows = send.num_rows(), recv_rows = recv.num_rows();
  const Segments to_peers =
      MakeSegments(world, row_bytes, [&](int p) { return send.rows_for_rank(p); });
  const Segments from_peers =
      MakeSegments(world, row_bytes, [&](int p) { return recv.rows_from_rank(p); });
  kernels::DeviceBuffer send_buf = backend.Allocate(static_cast<size_t>(send_rows * row_bytes));
  kernels::DeviceBuffer recv_buf = backend.Allocate(static_cast<size_t>(recv_rows * row_bytes));
  MOESERVE_RETURN_IF_ERROR(
      local(GatherRowsFrom(backend, x, num_tokens, send.send_token, hidden, send_buf.as<float>())));
  MOESERVE_RETURN_IF_ERROR(Timed(&comm_seconds, [&] {
    return comm.AllToAllV(send_buf.data(), to_peers.bytes.data(), to_peers.offsets.data(),
                          recv_buf.data(), from_peers.bytes.data(), from_peers.offsets.data());
  }));

  // 3. Local experts over expert-grouped rows; results back in arrival order.
  kernels::DeviceBuffer grouped = backend.Allocate(static_cast<size_t>(recv_rows * row_bytes));
  kernels::DeviceBuffer grouped_out = backend.Allocate(static_cast<size_t>(recv_rows * row_bytes));
  MOESERVE_RETURN_IF_ERROR(
      local(GatherRowsFrom(backend, recv_buf.as<float>(), recv_rows, recv.grouped_from_recv, hidden,
                           grouped.as<float>())));
  MOESERVE_RETURN_IF_ERROR(
      local(RunExpertGroups(backend, shape, weights.experts, grouped.as<float>(),
                            recv.expert_offsets, grouped_out.as<float>())));
  // recv_buf is free again: reuse it for the outgoing results.
  MOESERVE_RETURN_IF_ERROR(
      local(GatherRowsFrom(backend, grouped_out.as<float>(), recv_rows, recv.recv_from_grouped,
                           hidden, recv_buf.as<float>())));

  // 4. Combine: the reverse exchange; row i of what comes back is the result for send row i.
  MOESERVE_RETURN_IF_ERROR(Timed(&comm_seconds, [&] {
    return comm.AllToAllV(recv_buf.data(), from_peers.bytes.data(), from_peers.offsets.data(),
                          send_buf.data(), to_peers.bytes.data(), to_peers.offsets.data());
  }));
  MOESERVE_RETURN_IF_ERROR(local(CombineRows(backend, shape, send_buf.as<float>(), send_rows,
                                             send.combine_rows, routed.weights, num_tokens, out)));

  if (trace != nullptr) {
    trace->routed_per_expert.assign(static_cast<size_t>(experts), 0);
    trace->computed_per_expert.assign(static_cast<size_t>(experts), 0);
    for (int32_t e : routed.expert_ids) ++trace->routed_per_expert[e];
    for (int64_t e = 0; e < experts; ++e) {
      trace->computed_per_expert[e] = recv.expert_offsets[e + 1] - recv.expert_offsets[e];
    }
    trace->rows_sent_to.resize(static_cast<size_t>(world));
    trace->rows_received_from.resize(static_cast<size_t>(world));
    for (int p = 0; p < world; ++p) {
      trace->rows_sent_to[p] = send.rows_for_rank(p);
      trace->rows_received_from[p] = recv.rows_from_rank(p);
    }
    trace->row_bytes = row_bytes;
    trace->all_to_all_seconds = comm_seconds;
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RunExpertParallelMoeLayer(kernels::Backend& backend, const MoeLayerShape& shape,
                                       const MoeLayerWeights& weights, int64_t layer,
                                       const ExpertParallelContext& ep, const float* x,
                                       int64_t num_tokens, float* out, const float* logit_bias,
                                       EpLayerTrace* trace) {
  if (ep.comm == nullptr || ep.placement == nullptr) {
    return absl::InvalidArgumentError("expert-parallel MoE layer: no communicator or placement");
  }
  bool local_error = false;
  absl::Status st =
      Run(backend, shape, weights, layer, ep, x, num_tokens, out, logit_bias, trace, &local_error);
  if (local_error) ep.comm->Abort(st);
  return st;
}

}  // namespace moeserve::parallel
