#include "parallel/moe/ep_dispatch_plan.h"

#include "absl/strings/str_cat.h"

namespace moeserve::parallel {

EpSendPlan BuildEpSendPlan(absl::Span<const int32_t> expert_ids, int64_t num_tokens, int64_t top_k,
                           const ExpertPlacement& placement, int64_t layer, int rank,
                           int64_t ordinal_base) {
  EpSendPlan plan;
  const int world = placement.world_size();
  const int64_t experts = placement.num_experts();
  plan.world_size = world;
  plan.num_experts = experts;
  plan.counts.assign(static_cast<size_t>(world * experts), 0);

  // Destination of every row, in token order (the order ReplicaFor's ordinals count in).
  const int64_t rows = num_tokens * top_k;
  std::vector<int32_t> dest(static_cast<size_t>(rows));
  std::vector<int64_t> ordinal(static_cast<size_t>(experts), ordinal_base);
  for (int64_t i = 0; i < rows; ++i) {
    const int32_t e = expert_ids[i];
    dest[i] = placement.ReplicaFor(layer, e, rank, ordinal[e]++);
    ++plan.counts[dest[i] * experts + e];
  }
  // Counting sort by (destination, expert); scanning in token order keeps tokens ascending.
  std::vector<int64_t> cursor(static_cast<size_t>(world * experts));
  int64_t offset = 0;
  plan.rank_offsets.assign(static_cast<size_t>(world + 1), 0);
  for (int d = 0; d < world; ++d) {
    for (int64_t e = 0; e < experts; ++e) {
      cursor[d * experts + e] = offset;
      offset += plan.counts[d * experts + e];
    }
    plan.rank_offsets[d + 1] = offset;
  }
  plan.send_token.resize(static_cast<size_t>(rows));
  plan.combine_rows.resize(static_cast<size_t>(rows));
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t row = cursor[dest[i] * experts + expert_ids[i]]++;
    plan.send_token[row] = static_cast<int32_t>(i / top_k);
    plan.combine_rows[i] = static_cast<int32_t>(row);
  }
  return plan;
}

absl::StatusOr<EpRecvPlan> BuildEpRecvPlan(absl::Span<const int64_t> counts, int world_size,
                                           int64_t num_experts, const ExpertPlacement& placement,
                                           int64_t layer, int rank) {
  EpRecvPlan plan;
  plan.world_size = world_size;
  plan.num_experts = num_experts;
  plan.counts.assign(counts.begin(), counts.end());
  plan.source_offsets.assign(static_cast<size_t>(world_size + 1), 0);
  plan.expert_offsets.assign(static_cast<size_t>(num_experts + 1), 0);
  for (int s = 0; s < world_size; ++s) {
    int64_t from_s = 0;
    for (int64_t e = 0; e < num_experts; ++e) {
      const int64_t n = counts[s * num_experts + e];
      if (n < 0 || (n > 0 && !placement.Holds(rank, layer, e))) {
        return absl::InvalidArgumentError(absl::StrCat(
            "expert-parallel dispatch: rank ", s, " sent ", n, " rows of layer ", layer, " expert ",
            e, " to rank ", rank, ", which does not hold it (placements differ?)"));
      }
      from_s += n;
      plan.expert_offsets[e + 1] += static_cast<int32_t>(n);
    }
    plan.source_offsets[s + 1] = plan.source_offsets[s] + from_s;
  }
  for (int64_t e = 0; e < num_experts; ++e) plan.expert_offsets[e + 1] += plan.expert_offsets[e];

  // Arrival order is (source, expert, token); grouped order is (expert, source, token).
  const int64_t rows = plan.num_rows();
  plan.grouped_from_recv.resize(static_cast<size_t>(rows));
  plan.recv_from_grouped.resize(static_cast<size_t>(rows));
  std::vector<int64_t> cursor(plan.expert_offsets.begin(), plan.expert_offsets.end() - 1);
  int64_t arrival = 0;
  for (int s = 0; s < world_size; ++s) {
    for (int64_t e = 0; e < num_experts; ++e) {
      for (int64_t i = 0; i < counts[s * num_experts + e]; ++i, ++arrival) {
        const int64_t grouped = cursor[e]++;
        plan.grouped_from_recv[grouped] = static_cast<int32_t>(arrival);
        plan.recv_from_grouped[arrival] = static_cast<int32_t>(grouped);
      }
    }
  }
  return plan;
}

}  // namespace moeserve::parallel
