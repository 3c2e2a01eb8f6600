// Where each routed row of an expert-parallel MoE layer goes, as plain host data.
//
// Sender (the rank that owns the tokens): each (token t, choice j) pair is one row. Rows are
// ordered by destination rank, then expert, then token: the rows for rank d form one contiguous
// segment of the send buffer (its all-to-all-v segment), subdivided by expert. counts[d, e] is
// what the all-to-all of counts carries.
//
// Receiver: rows arrive ordered by source rank, then expert, then token. The expert GEMMs want
// them grouped by expert (then source, then token), so the receiver permutes them into that
// order, runs the experts, and permutes the results back into arrival order before returning
// them along the reverse all-to-all-v. The sender then finds the result of choice (t, j) at
// combine_rows[t, j] of what came back: exactly the row it sent.
//
// Everything is a pure function of the routing and the placement, so every rank can rebuild it
// and tests can check it without a communicator.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "parallel/placement/expert_placement.h"

namespace moeserve::parallel {

struct EpSendPlan {
  int world_size = 1;
  int64_t num_experts = 0;
  std::vector<int64_t> counts;        // [world_size, num_experts]: rows for rank d, expert e
  std::vector<int64_t> rank_offsets;  // [world_size + 1]: row offset of rank d's segment
  std::vector<int32_t> send_token;    // [rows]: the token whose state row i carries
  std::vector<int32_t> combine_rows;  // [num_tokens, top_k]: row of choice (t, j)

  int64_t num_rows() const { return rank_offsets.back(); }
  int64_t rows_for_rank(int d) const { return rank_offsets[d + 1] - rank_offsets[d]; }
};

// expert_ids: [num_tokens, top_k] from the router. The replica of a replicated expert is chosen
// by ExpertPlacement::ReplicaFor, counting this rank's rows per expert in token order from
// ordinal_base (ExpertParallelContext::replica_offset: a caller that advances it every call
// makes a source sending one row per expert per call, batch-1 decode, alternate replicas too).
EpSendPlan BuildEpSendPlan(absl::Span<const int32_t> expert_ids, int64_t num_tokens, int64_t top_k,
                           const ExpertPlacement& placement, int64_t layer, int rank,
                           int64_t ordinal_base = 0);

struct EpRecvPlan {
  int world_size = 1;
  int64_t num_experts = 0;
  std::vector<int64_t> counts;             // [world_size, num_experts]: rows from rank s, expert e
  std::vector<int64_t> source_offsets;     // [world_size + 1]: row offset of rank s's segment
  std::vector<int32_t> expert_offsets;     // [num_experts + 1]: expert-grouped row ranges
  std::vector<int32_t> grouped_from_recv;  // [rows]: arrival row of each expert-grouped row
  std::vector<int32_t> recv_from_grouped;  // [rows]: expert-grouped row of each arrival row

  int64_t num_rows() const { return source_offsets.back(); }
  int64_t rows_from_rank(int s) const { return source_offsets[s + 1] - source_offsets[s]; }
};

// counts: what the all-to-all of counts delivered, [world_size, num_experts]. Rows for an
// expert that `rank` does not hold mean the ranks disagree on the placement: InvalidArgument.
absl::StatusOr<EpRecvPlan> BuildEpRecvPlan(absl::Span<const int64_t> counts, int world_size,
                                           int64_t num_experts, const ExpertPlacement& placement,
                                           int64_t layer, int rank);

}  // namespace moeserve::parallel
