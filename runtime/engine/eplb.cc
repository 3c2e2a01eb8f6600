#include "runtime/engine/eplb.h"

#include <algorithm>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "kernels/base/status_macros.h"
#include "parallel/placement/eplb_planner.h"
#include "runtime/engine/worker.h"
#include "spdlog/spdlog.h"

namespace moeserve::runtime {

double WindowRankImbalance(const parallel::EpStats& ep) {
  std::vector<double> total;
  for (const std::vector<int64_t>& layer : ep.rank_rows_per_layer_window) {
    total.resize(std::max(total.size(), layer.size()), 0.0);
    for (size_t r = 0; r < layer.size(); ++r) total[r] += static_cast<double>(layer[r]);
  }
  return parallel::MaxOverMeanOf(total);
}

Rebalancer::Rebalancer(std::vector<Worker*> workers, std::vector<ExpertSource> sources,
                       std::shared_ptr<const parallel::ExpertPlacement> base, int world_size,
                       const EngineOptions& options, std::function<EngineStats()> stats,
                       std::function<int64_t()> steps)
    : workers_(std::move(workers)),
      sources_(std::move(sources)),
      base_(std::move(base)),
      world_size_(world_size),
      options_(options),
      stats_(std::move(stats)),
      steps_(std::move(steps)),
      replicas_(workers_.size()) {
  if (base_ != nullptr) placements_.push_back(base_);
  if (options_.eplb_interval_steps > 0 && Supported().ok()) {
    auto_thread_ = std::thread([this] { AutoLoop(); });
  }
}

Rebalancer::~Rebalancer() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (auto_thread_.joinable()) auto_thread_.join();
}

const parallel::ExpertPlacement* Rebalancer::current() const {
  absl::MutexLock lock(&mu_);
  return placements_.empty() ? nullptr : placements_.back().get();
}

EplbCounters Rebalancer::counters() const {
  absl::MutexLock lock(&mu_);
  return counters_;
}

absl::Status Rebalancer::Supported() const {
  if (base_ == nullptr || world_size_ <= 1) {
    return absl::FailedPreconditionError(
        "rebalancing needs expert parallelism (--ep-size > 1): with one rank every expert is "
        "local");
  }
  if (static_cast<int>(workers_.size()) != world_size_) {
    return absl::FailedPreconditionError(
        "rebalancing needs every rank in this process (--ep-launch threads); ranks as processes "
        "(--ep-launch processes) cannot switch placements yet");
  }
  for (const ExpertSource& s : sources_) {
    if (!s) {
      return absl::UnimplementedError(
          "rebalancing is implemented for CPU ranks only (replica weights are packed for the CPU "
          "matmul); this engine has a rank without an expert source");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<RebalanceResult> Rebalancer::Rebalance(int64_t extra_experts_per_rank) {
  MOESERVE_RETURN_IF_ERROR(Supported());
  absl::MutexLock serial(&rebalance_mu_);
  const absl::Time start = absl::Now();
  const int64_t budget =
      extra_experts_per_rank >= 0 ? extra_experts_per_rank : options_.eplb_extra_experts_per_rank;
  const EngineStats stats = stats_();
  int64_t rows = 0;
  for (const auto& layer : stats.ep.expert_tokens_window) {
    for (int64_t v : layer) rows += v;
  }
  if (rows == 0) {
    return absl::FailedPreconditionError(
        "no expert load measured in the statistics window yet; serve some requests first");
  }
  MOESERVE_ASSIGN_OR_RETURN(parallel::EplbPlan plan,
                            parallel::PlanEplb(stats.ep.expert_tokens_window, *base_, budget));
  const parallel::ExpertPlacement* cur = current();
  RebalanceResult result;
  result.old_placement = cur->ToJson();
  result.new_placement = plan.placement.ToJson();
  result.measured_imbalance_before = WindowRankImbalance(stats.ep);
  result.projected_imbalance_before = 1.0;
  {
    // The projection under the placement in use now (not the base: a previous switch may hold).
    std::vector<double> total(static_cast<size_t>(world_size_), 0.0);
    for (int64_t l = 0; l < cur->num_layers(); ++l) {
      const std::vector<double> r =
          parallel::ProjectedRankLoad(*cur, l, stats.ep.expert_tokens_window[l]);
      for (int i = 0; i < world_size_; ++i) total[i] += r[i];
    }
    result.projected_imbalance_before = parallel::MaxOverMeanOf(total);
  }
  result.projected_imbalance_after = plan.imbalance_after;
  result.replicas = plan.replicas_added;
  if (result.new_placement == result.old_placement) {
    result.total_ms = absl::ToDoubleMilliseconds(absl::Now() - start);
    return result;
  }

  // Replica weights per rank: kept from the previous switch when still used, else prepared now
  // (while the ranks keep serving).
  auto swap = std::make_shared<PlacementSwap>();
  auto placement = std::make_shared<const parallel::ExpertPlacement>(plan.placement);
  swap->placement = placement.get();
  swap->added.resize(workers_.size());
  std::vector<std::vector<std::shared_ptr<PreparedExpert>>> next(workers_.size());
  for (int r = 0; r < world_size_; ++r) {
    std::map<std::pair<int64_t, int64_t>, std::shared_ptr<PreparedExpert>> have;
    for (const auto& p : replicas_[r]) have[{p->layer, p->expert}] = p;
    for (const auto& [l, e] : placement->ExpertsOf(r)) {
      if (base_->Holds(r, l, e)) continue;  // loaded at start-up, always kept
      std::shared_ptr<PreparedExpert> w;
      if (auto it = have.find({l, e}); it != have.end()) {
        w = it->second;
      } else {
        MOESERVE_ASSIGN_OR_RETURN(w, sources_[r](l, e));
        ++result.experts_prepared;
      }
      if (!cur->Holds(r, l, e)) swap->added[r].push_back({{l, e}, w->weights});
      next[r].push_back(std::move(w));
    }
  }
  result.prepare_ms = absl::ToDoubleMilliseconds(absl::Now() - start);

  swap->generation = ++generation_;
  {
    absl::MutexLock lock(&swap->mu);
    swap->status.assign(workers_.size(), absl::OkStatus());
    swap->pause_seconds.assign(workers_.size(), 0.0);
  }
  for (Worker* w : workers_) w->PostSwap(swap);
  {
    struct Done {
      const int* applied;
      int want;
    } done{nullptr, world_size_};
    absl::MutexLock lock(&swap->mu);
    done.applied = &swap->applied;
    const absl::Condition all(
        +[](Done* d) { return *d->applied >= d->want; }, &done);
    if (!swap->mu.AwaitWithTimeout(all, absl::Seconds(30))) {
      // The group is stuck or stopping. Leave the replicas alive: a late switch may still use them.
      for (auto& n : next) abandoned_.insert(abandoned_.end(), n.begin(), n.end());
      {
        absl::MutexLock keep(&mu_);
        placements_.insert(placements_.begin(), placement);  // alive, but not current
      }
      return absl::DeadlineExceededError(
          "the ranks did not reach a step boundary within 30 s (is the group stopping?)");
    }
    for (size_t r = 0; r < workers_.size(); ++r) {
      if (!swap->status[r].ok()) {
        return absl::InternalError(
            absl::StrCat("rank ", r, " failed to switch placement: ", swap->status[r].message(),
                         " (the group was aborted)"));
      }
      result.pause_ms = std::max(result.pause_ms, swap->pause_seconds[r] * 1e3);
    }
  }
  // Every rank switched: the previous replicas no longer referenced are freed here.
  replicas_ = std::move(next);
  result.changed = true;
  result.total_ms = absl::ToDoubleMilliseconds(absl::Now() - start);
  {
    absl::MutexLock lock(&mu_);
    placements_.push_back(placement);
    ++counters_.rebalances;
    counters_.last_pause_ms = result.pause_ms;
    counters_.last_imbalance_before = result.measured_imbalance_before;
    counters_.last_imbalance_after = result.projected_imbalance_after;
  }
  spdlog::info(
      "eplb: rebalanced ({} replicas, {} prepared in {:.1f} ms): rank max/mean {:.3f} measured "
      "-> {:.3f} projected; pause {:.3f} ms; placement {}",
      result.replicas, result.experts_prepared, result.prepare_ms, result.measured_imbalance_before,
      result.projected_imbalance_after, result.pause_ms, result.new_placement);
  return result;
}

void Rebalancer::AutoLoop() {
  int64_t next_check = options_.eplb_interval_steps;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stop_), absl::Milliseconds(20))) return;
    }
    const int64_t steps = steps_();
    if (steps < next_check) continue;
    next_check = steps + options_.eplb_interval_steps;
    const EngineStats stats = stats_();
    const double imbalance = WindowRankImbalance(stats.ep);
    if (imbalance <= options_.eplb_threshold) continue;
    spdlog::info("eplb: rank max/mean {:.3f} over the window > --eplb-threshold {:.3f}", imbalance,
                 options_.eplb_threshold);
    absl::StatusOr<RebalanceResult> r = Rebalance();
    if (!r.ok()) {
      spdlog::warn("eplb: automatic rebalance failed: {}", std::string(r.status().message()));
    } else if (r->changed) {
      // The window still holds steps of the old placement: wait for it to refill.
      next_check = steps_() + std::max(options_.eplb_interval_steps, stats.ep.window_steps);
    }
  }
}

}  // namespace moeserve::runtime
