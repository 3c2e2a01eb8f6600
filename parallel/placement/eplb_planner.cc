#include "parallel/placement/eplb_planner.h"

#include <algorithm>
#include <functional>

#include "absl/strings/str_cat.h"

namespace moeserve::parallel {

std::vector<double> ProjectedRankLoad(const ExpertPlacement& placement, int64_t layer,
                                      const std::vector<int64_t>& layer_load) {
  std::vector<double> load(static_cast<size_t>(placement.world_size()), 0.0);
  for (int64_t e = 0; e < placement.num_experts(); ++e) {
    const std::vector<int>& holders = placement.replicas(layer, e);
    const double share = static_cast<double>(layer_load[e]) / static_cast<double>(holders.size());
    for (int r : holders) load[r] += share;
  }
  return load;
}

double MaxOverMeanOf(const std::vector<double>& load) {
  double sum = 0, max = 0;
  for (double v : load) {
    sum += v;
    max = std::max(max, v);
  }
  if (load.empty() || sum <= 0) return 1.0;
  return max / (sum / static_cast<double>(load.size()));
}

namespace {

// Sums [layers][ranks] over layers.
std::vector<double> SumOverLayers(const std::vector<std::vector<double>>& per_layer, int world) {
  std::vector<double> total(static_cast<size_t>(world), 0.0);
  for (const auto& layer : per_layer) {
    for (int r = 0; r < world; ++r) total[r] += layer[r];
  }
  return total;
}

// Whether rank loads `a` are better balanced than `b`: sorted from the highest down, a is
// lexicographically smaller (a lower maximum, or the same maximum on fewer ranks, ...). A move
// is taken only when it is better, so the maximum never grows and the greedy terminates.
bool Better(std::vector<double> a, std::vector<double> b) {
  std::sort(a.begin(), a.end(), std::greater<>());
  std::sort(b.begin(), b.end(), std::greater<>());
  return a < b;
}

// The greedy of the header on one layer; holders[e] is updated in place (kept sorted).
int64_t PlanLayer(const std::vector<int64_t>& load, int world, int64_t budget,
                  std::vector<std::vector<int>>& holders) {
  const size_t num_experts = holders.size();
  std::vector<int64_t> budget_left(static_cast<size_t>(world), budget);
  std::vector<double> rank_load(static_cast<size_t>(world), 0.0);
  auto recompute = [&] {
    std::fill(rank_load.begin(), rank_load.end(), 0.0);
    for (size_t e = 0; e < num_experts; ++e) {
      const double share = static_cast<double>(load[e]) / static_cast<double>(holders[e].size());
      for (int r : holders[e]) rank_load[r] += share;
    }
  };
  recompute();
  int64_t added = 0;
  while (true) {
    // Experts by per-replica load, highest first; ties to the lower id (stable sort).
    std::vector<size_t> order;
    for (size_t e = 0; e < num_experts; ++e) {
      if (load[e] > 0) order.push_back(e);
    }
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return static_cast<double>(load[a]) / static_cast<double>(holders[a].size()) >
             static_cast<double>(load[b]) / static_cast<double>(holders[b].size());
    });
    bool replicated = false;
    for (size_t e : order) {
      // The least-loaded rank with budget that does not hold e; ties to the lower rank.
      int best = -1;
      for (int r = 0; r < world; ++r) {
        if (budget_left[r] <= 0 || std::binary_search(holders[e].begin(), holders[e].end(), r)) {
          continue;
        }
        if (best < 0 || rank_load[r] < rank_load[best]) best = r;
      }
      if (best < 0) continue;
      // The loads after the move: e's holders (old and new) each carry load / (R + 1).
      const double old_share =
          static_cast<double>(load[e]) / static_cast<double>(holders[e].size());
      const double new_share =
          static_cast<double>(load[e]) / static_cast<double>(holders[e].size() + 1);
      std::vector<double> moved = rank_load;
      for (int r : holders[e]) moved[r] += new_share - old_share;
      moved[best] += new_share;
      if (!Better(moved, rank_load)) continue;
      holders[e].insert(std::upper_bound(holders[e].begin(), holders[e].end(), best), best);
      --budget_left[best];
      ++added;
      recompute();
      replicated = true;
      break;
    }
    if (!replicated) return added;
  }
}

}  // namespace

absl::StatusOr<EplbPlan> PlanEplb(const std::vector<std::vector<int64_t>>& load,
                                  const ExpertPlacement& base, int64_t extra_experts_per_rank) {
  if (extra_experts_per_rank < 0) {
    return absl::InvalidArgumentError(absl::StrCat("EPLB replica budget ", extra_experts_per_rank,
                                                   " experts per rank must be >= 0"));
  }
  const int64_t layers = base.num_layers(), experts = base.num_experts();
  const int world = base.world_size();
  if (static_cast<int64_t>(load.size()) != layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("EPLB load has ", load.size(), " layers, the placement ", layers));
  }
  std::vector<std::vector<std::vector<int>>> table(static_cast<size_t>(layers));
  EplbPlan plan{.placement = base};
  for (int64_t l = 0; l < layers; ++l) {
    if (static_cast<int64_t>(load[l].size()) != experts) {
      return absl::InvalidArgumentError(absl::StrCat(
          "EPLB load of layer ", l, " has ", load[l].size(), " experts, the placement ", experts));
    }
    for (int64_t v : load[l]) {
      if (v < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("EPLB load of layer ", l, " has a negative count ", v));
      }
    }
    for (int64_t e = 0; e < experts; ++e) table[l].push_back(base.replicas(l, e));
    plan.rank_load_before.push_back(ProjectedRankLoad(base, l, load[l]));
    plan.replicas_added += PlanLayer(load[l], world, extra_experts_per_rank, table[l]);
  }
  auto placed = ExpertPlacement::FromTable(world, std::move(table));
  if (!placed.ok()) return placed.status();
  plan.placement = *std::move(placed);
  for (int64_t l = 0; l < layers; ++l) {
    plan.rank_load_after.push_back(ProjectedRankLoad(plan.placement, l, load[l]));
    plan.worst_layer_imbalance_before =
        std::max(plan.worst_layer_imbalance_before, MaxOverMeanOf(plan.rank_load_before[l]));
    plan.worst_layer_imbalance_after =
        std::max(plan.worst_layer_imbalance_after, MaxOverMeanOf(plan.rank_load_after[l]));
  }
  plan.imbalance_before = MaxOverMeanOf(SumOverLayers(plan.rank_load_before, world));
  plan.imbalance_after = MaxOverMeanOf(SumOverLayers(plan.rank_load_after, world));
  return plan;
}

}  // namespace moeserve::parallel
