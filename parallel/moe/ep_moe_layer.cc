#include "parallel/moe/ep_moe_layer.h"

#include <algorithm>
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

// Host data of one call that device work may still read: it must outlive the final
// Synchronize (RunExpertParallelMoeLayer owns it).
struct EpHostState {
  std::vector<int32_t> expert_ids;  // [num_tokens, top_k], copied back from the router
  EpSendPlan send;
  EpRecvPlan recv;
  std::vector<kernels::DeviceBuffer> scratch;  // device buffers of this call
};

// A scratch buffer of `bytes` (at least 1, so its pointer is never null).
absl::StatusOr<void*> Scratch(kernels::Backend& backend, EpHostState& host, size_t bytes) {
  MOESERVE_ASSIGN_OR_RETURN(kernels::DeviceBuffer buf,
                            backend.AllocateScratch(std::max<size_t>(bytes, 1)));
  host.scratch.push_back(std::move(buf));
  return host.scratch.back().data();
}

// A device copy of a host index array (which stays alive in `host`).
absl::StatusOr<const int32_t*> Upload(kernels::Backend& backend, EpHostState& host,
                                      const std::vector<int32_t>& v) {
  MOESERVE_ASSIGN_OR_RETURN(void* dst, Scratch(backend, host, sizeof(int32_t) * v.size()));
  MOESERVE_RETURN_IF_ERROR(backend.CopyToDeviceAsync(dst, v.data(), sizeof(int32_t) * v.size()));
  return static_cast<const int32_t*>(dst);
}

// The layer's work; local failures are turned into an abort by the caller.
absl::Status Run(kernels::Backend& backend, const MoeLayerShape& shape,
                 const MoeLayerWeights& weights, int64_t layer, const ExpertParallelContext& ep,
                 const void* x, int64_t num_tokens, void* out, const float* logit_bias,
                 EpLayerTrace* trace, const float* token_bias, RoutingHostCopy routing,
                 EpHostState& host, bool* local_error) {
  Communicator& comm = *ep.comm;
  const ExpertPlacement& placement = *ep.placement;
  const int rank = comm.rank(), world = comm.world_size();
  const int64_t hidden = shape.hidden, experts = shape.num_experts, top_k = shape.top_k;
  const int64_t row_bytes =
      hidden * static_cast<int64_t>(kernels::DTypeSize(backend.activation_dtype()));
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
#define MOESERVE_LOCAL_ASSIGN(lhs, expr)                                        \
  auto MOESERVE_CONCAT(_ep_or_, __LINE__) = (expr);                             \
  MOESERVE_RETURN_IF_ERROR(local(MOESERVE_CONCAT(_ep_or_, __LINE__).status())); \
  lhs = *std::move(MOESERVE_CONCAT(_ep_or_, __LINE__))

  // 0. Routing on the device; the expert ids come to the host to plan the exchange.
  MOESERVE_LOCAL_ASSIGN(void* logits, Scratch(backend, host, sizeof(float) * num_tokens * experts));
  MOESERVE_LOCAL_ASSIGN(void* ids_dev,
                        Scratch(backend, host, sizeof(int32_t) * num_tokens * top_k));
  MOESERVE_LOCAL_ASSIGN(void* weights_dev,
                        Scratch(backend, host, sizeof(float) * num_tokens * top_k));
  MOESERVE_RETURN_IF_ERROR(local(EnqueueRouter(
      backend, shape, weights.gate, x, num_tokens, logit_bias, static_cast<float*>(logits),
      static_cast<int32_t*>(ids_dev), static_cast<float*>(weights_dev), token_bias)));
  host.expert_ids.resize(static_cast<size_t>(num_tokens * top_k));
  MOESERVE_RETURN_IF_ERROR(local(backend.CopyToHost(host.expert_ids.data(), ids_dev,
                                                    sizeof(int32_t) * host.expert_ids.size())));
  if (routing.expert_ids != nullptr && num_tokens > 0) {
    std::copy(host.expert_ids.begin(), host.expert_ids.end(), routing.expert_ids);
    MOESERVE_RETURN_IF_ERROR(local(backend.CopyToHost(
        routing.weights, weights_dev, sizeof(float) * static_cast<size_t>(num_tokens * top_k))));
  }
  host.send = BuildEpSendPlan(host.expert_ids, num_tokens, top_k, placement, layer, rank,
                              ep.replica_offset);
  const EpSendPlan& send = host.send;

  // 1. Counts: how many rows of each expert every rank sends to every other.
  std::vector<int64_t> recv_counts(static_cast<size_t>(world * experts));
  MOESERVE_RETURN_IF_ERROR(Timed(&comm_seconds, [&] {
    return comm.AllToAll(send.counts.data(), recv_counts.data(), experts);
  }));
  absl::StatusOr<EpRecvPlan> recv_or =
      BuildEpRecvPlan(recv_counts, world, experts, placement, layer, rank);
  MOESERVE_RETURN_IF_ERROR(local(recv_or.status()));
  host.recv = *std::move(recv_or);
  const EpRecvPlan& recv = host.recv;
  for (int64_t e = 0; e < experts; ++e) {
    const int64_t n = recv.expert_offsets[e + 1] - recv.expert_offsets[e];
    if (n > 0 && !weights.experts[e].held()) {
      *local_error = true;
      return absl::InternalError(
          absl::StrCat("moe: ", n, " rows were routed to expert ", e,
                       ", whose weights this rank does not hold (placement and weights disagree)"));
    }
  }

  // 2. Dispatch: token states permuted into (destination, expert, token) order.
  const int64_t send_rows = send.num_rows(), recv_rows = recv.num_rows();
  const Segments to_peers =
      MakeSegments(world, row_bytes, [&](int p) { return send.rows_for_rank(p); });
  const Segments from_peers =
      MakeSegments(world, row_bytes, [&](int p) { return recv.rows_from_rank(p); });
  MOESERVE_LOCAL_ASSIGN(void* send_buf,
                        Scratch(backend, host, static_cast<size_t>(send_rows * row_bytes)));
  MOESERVE_LOCAL_ASSIGN(void* recv_buf,
                        Scratch(backend, host, static_cast<size_t>(recv_rows * row_bytes)));
  MOESERVE_LOCAL_ASSIGN(const int32_t* send_token, Upload(backend, host, send.send_token));
  MOESERVE_RETURN_IF_ERROR(
      local(EnqueueGather(backend, x, num_tokens, send_token, send_rows, hidden, send_buf)));
  MOESERVE_RETURN_IF_ERROR(local(backend.Synchronize()));  // the communicator reads send_buf
  MOESERVE_RETURN_IF_ERROR(Timed(&comm_seconds, [&] {
    return comm.AllToAllV(send_buf, to_peers.bytes.data(), to_peers.offsets.data(), recv_buf,
                          from_peers.bytes.data(), from_peers.offsets.data());
  }));

  // 3. Local experts over expert-grouped rows; results back in arrival order.
  MOESERVE_LOCAL_ASSIGN(void* grouped,
                        Scratch(backend, host, static_cast<size_t>(recv_rows * row_bytes)));
  MOESERVE_LOCAL_ASSIGN(void* grouped_out,
                        Scratch(backend, host, static_cast<size_t>(recv_rows * row_bytes)));
  MOESERVE_LOCAL_ASSIGN(void* inter, Scratch(backend, host,
                                             static_cast<size_t>(recv_rows * shape.intermediate) *
                                                 kernels::DTypeSize(backend.activation_dtype())));
  MOESERVE_LOCAL_ASSIGN(const int32_t* grouped_from_recv,
                        Upload(backend, host, recv.grouped_from_recv));
  MOESERVE_LOCAL_ASSIGN(const int32_t* recv_from_grouped,
                        Upload(backend, host, recv.recv_from_grouped));
  MOESERVE_LOCAL_ASSIGN(const int32_t* expert_offsets, Upload(backend, host, recv.expert_offsets));
  MOESERVE_RETURN_IF_ERROR(local(
      EnqueueGather(backend, recv_buf, recv_rows, grouped_from_recv, recv_rows, hidden, grouped)));
  MOESERVE_RETURN_IF_ERROR(local(EnqueueExperts(backend, shape, weights.tables, grouped,
                                                expert_offsets, recv_rows, inter, grouped_out)));
  // recv_buf is free again: reuse it for the outgoing results.
  MOESERVE_RETURN_IF_ERROR(local(EnqueueGather(backend, grouped_out, recv_rows, recv_from_grouped,
                                               recv_rows, hidden, recv_buf)));
  MOESERVE_RETURN_IF_ERROR(local(backend.Synchronize()));  // the communicator reads recv_buf

  // 4. Combine: the reverse exchange; row i of what comes back is the result for send row i.
  MOESERVE_RETURN_IF_ERROR(Timed(&comm_seconds, [&] {
    return comm.AllToAllV(recv_buf, from_peers.bytes.data(), from_peers.offsets.data(), send_buf,
                          to_peers.bytes.data(), to_peers.offsets.data());
  }));
  MOESERVE_LOCAL_ASSIGN(const int32_t* combine_rows, Upload(backend, host, send.combine_rows));
  MOESERVE_RETURN_IF_ERROR(
      local(EnqueueCombine(backend, shape, send_buf, send_rows, combine_rows,
                           static_cast<const float*>(weights_dev), num_tokens, out)));
#undef MOESERVE_LOCAL_ASSIGN

  if (trace != nullptr) {
    trace->routed_per_expert.assign(static_cast<size_t>(experts), 0);
    trace->computed_per_expert.assign(static_cast<size_t>(experts), 0);
    for (int32_t e : host.expert_ids) ++trace->routed_per_expert[e];
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
                                       const ExpertParallelContext& ep, const void* x,
                                       int64_t num_tokens, void* out, const float* logit_bias,
                                       EpLayerTrace* trace, const float* token_bias,
                                       RoutingHostCopy routing) {
  if (ep.comm == nullptr || ep.placement == nullptr) {
    return absl::InvalidArgumentError("expert-parallel MoE layer: no communicator or placement");
  }
  bool local_error = false;
  EpHostState host;
  absl::Status st = Run(backend, shape, weights, layer, ep, x, num_tokens, out, logit_bias, trace,
                        token_bias, routing, host, &local_error);
  // Device work may still read host's arrays and scratch buffers: finish it before they go.
  absl::Status synced = backend.Synchronize();
  if (st.ok() && !synced.ok()) {
    st = synced;
    local_error = true;
  }
  if (local_error) ep.comm->Abort(st);
  return st;
}

}  // namespace moeserve::parallel
