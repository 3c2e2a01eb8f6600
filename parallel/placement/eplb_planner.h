// EPLB planner: from measured expert load, a placement that replicates hot experts onto the
// least-loaded ranks within a per-rank replica budget. A pure function: no I/O, no threads,
// deterministic (ties go to the lower expert id / lower rank).
//
// Model. In a layer, an expert with load L (rows routed to it) held by R ranks costs each holder
// L / R (ExpertPlacement::ReplicaFor splits a source's rows round robin over the replicas, so the
// split is even up to one row per source). A rank's projected load in a layer is the sum of that
// cost over the experts it holds; imbalance is max/mean of it over ranks.
//
// Greedy, per layer, starting from `base` (every expert keeps the holders it has there):
//   repeat: take the expert with the highest per-replica load L / R (skipping experts with no
//   load and experts no rank can take); replicate it onto the rank with the lowest projected
//   load that does not hold it and has budget left; accept only if the layer's rank loads,
//   sorted from the highest down, become lexicographically smaller (the maximum never grows: a
//   replica must never create a new bottleneck); else try the next expert; stop when no expert
//   can be replicated that way.
// Budget: `extra_experts_per_rank` replicas per rank PER LAYER on top of what `base` gives it
// (the memory of one expert of every layer is one unit; Mixtral 8x7B bf16: 352 MB per layer).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "parallel/placement/expert_placement.h"

namespace moeserve::parallel {

struct EplbPlan {
  ExpertPlacement placement;
  // [num_layers][world_size]: projected rank load under `base` and under `placement`.
  std::vector<std::vector<double>> rank_load_before, rank_load_after;
  // max/mean over ranks of the projected load summed over layers (what
  // EpStats::rank_imbalance_* measures), before and after.
  double imbalance_before = 1.0, imbalance_after = 1.0;
  // The worst layer's max/mean, before and after.
  double worst_layer_imbalance_before = 1.0, worst_layer_imbalance_after = 1.0;
  int64_t replicas_added = 0;  // over all layers and ranks
};

// load: [num_layers][num_experts] rows routed per expert (e.g. EpStats::expert_tokens_window),
// non-negative, the shape of `base`. extra_experts_per_rank >= 0. InvalidArgument otherwise.
absl::StatusOr<EplbPlan> PlanEplb(const std::vector<std::vector<int64_t>>& load,
                                  const ExpertPlacement& base, int64_t extra_experts_per_rank);

// Projected rank load of one layer of `placement` ([world_size]): sum over held experts of
// load / replicas. REQUIRES: layer_load has num_experts entries.
std::vector<double> ProjectedRankLoad(const ExpertPlacement& placement, int64_t layer,
                                      const std::vector<int64_t>& layer_load);

// max/mean of `load`; 1.0 when empty or all zero.
double MaxOverMeanOf(const std::vector<double>& load);

}  // namespace moeserve::parallel
