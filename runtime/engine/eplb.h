// Live expert rebalancing (EPLB, issue 12): plans a placement with replicas of hot experts from
// the measured sliding-window load (parallel/placement/eplb_planner.h), prepares the replicas'
// packed weights on the caller's thread while the ranks keep serving, then switches every rank
// between two steps (Worker::PostSwap: the ranks agree on the step in their step agreement).
// Outputs do not change: any valid placement gives the same bits (expert_placement.h).
//
// Scope: ranks that are threads of this process on the CPU. Ranks as processes
// (--ep-launch processes) and CUDA ranks are refused with FailedPrecondition / Unimplemented.
//
// Threading: Rebalance may be called from any thread; calls are serialized. The automatic
// trigger (interval_steps > 0) runs on its own thread, stopped by the destructor, which must run
// before the workers are destroyed.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "parallel/placement/expert_placement.h"
#include "runtime/engine/engine.h"
#include "runtime/model/expert_source.h"

namespace moeserve::runtime {

class Worker;

struct RebalanceResult {
  std::string old_placement, new_placement;  // ExpertPlacement::ToJson
  bool changed = false;  // false: the plan equals the current placement, nothing switched
  // max/mean over ranks of the rows computed, summed over layers: measured over the statistics
  // window before, and projected (eplb_planner.h) under the old and the new placement.
  double measured_imbalance_before = 1.0;
  double projected_imbalance_before = 1.0, projected_imbalance_after = 1.0;
  int64_t replicas = 0;          // extra replicas in the new placement, all layers and ranks
  int64_t experts_prepared = 0;  // replica weights loaded and packed for this switch
  double prepare_ms = 0;         // planning + loading + packing, while the ranks served
  double pause_ms = 0;           // the longest time a rank's step loop was held by the switch
  double total_ms = 0;           // the whole call
};

class Rebalancer {
 public:
  // workers: the engine's, one per rank of the group (index = rank); sources: one per worker
  // (null entries: that rank cannot prepare replicas); stats: the engine's Stats.
  Rebalancer(std::vector<Worker*> workers, std::vector<ExpertSource> sources,
             std::shared_ptr<const parallel::ExpertPlacement> base, int world_size,
             const EngineOptions& options, std::function<EngineStats()> stats,
             std::function<int64_t()> steps);
  ~Rebalancer();

  // extra_experts_per_rank < 0: options.eplb_extra_experts_per_rank.
  absl::StatusOr<RebalanceResult> Rebalance(int64_t extra_experts_per_rank = -1);
  // The placement the ranks use now (null at world size 1). Stays valid for the engine's life.
  const parallel::ExpertPlacement* current() const;
  EplbCounters counters() const;
  // OK when this engine can rebalance; else why not (the error Rebalance returns).
  absl::Status Supported() const;

 private:
  void AutoLoop();

  const std::vector<Worker*> workers_;
  const std::vector<ExpertSource> sources_;
  const std::shared_ptr<const parallel::ExpertPlacement> base_;
  const int world_size_;
  const EngineOptions options_;
  const std::function<EngineStats()> stats_;
  const std::function<int64_t()> steps_;

  absl::Mutex rebalance_mu_;  // serializes Rebalance
  mutable absl::Mutex mu_;
  // Every placement ever switched to, kept alive (raw pointers to them were handed out).
  std::vector<std::shared_ptr<const parallel::ExpertPlacement>> placements_ ABSL_GUARDED_BY(mu_);
  EplbCounters counters_ ABSL_GUARDED_BY(mu_);
  // [rank] -> the replica weights that rank uses now (only touched under rebalance_mu_).
  std::vector<std::vector<std::shared_ptr<PreparedExpert>>> replicas_;
  // Replicas of a switch that timed out: a late switch may still point at them.
  std::vector<std::shared_ptr<PreparedExpert>> abandoned_;
  int64_t generation_ = 0;  // under rebalance_mu_
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread auto_thread_;
};

// max/mean over ranks of rank_rows_per_layer_window summed over layers (the window's measured
// rank imbalance).
double WindowRankImbalance(const parallel::EpStats& ep);

}  // namespace moeserve::runtime
