// Expert-load and all-to-all statistics.
//
//   EpLayerTrace     what one MoE layer call on one rank routed, computed and moved
//   EpStatsRecorder  accumulates traces into one rank's counters (the rank's worker writes,
//                    any thread may take a Snapshot)
//   EpRankStats      a snapshot of one rank's counters: plain data for GetStats and /metrics
//   EpStats          the group view, aggregated from every rank's snapshot: per-expert load
//                    summed over ranks and the imbalance ratios
//
// Imbalance is max/mean: 1.0 is perfectly even; for top-2 of 8 experts the worst expert ratio is
// 4 (every token picks the same expert) and the worst rank ratio is world_size. A layer or group
// with no load at all reports 1.0. The coefficient of variation (population standard deviation /
// mean; 0 is even, 0 for no load) complements it: max/mean sees only the hottest expert.
//
// Windows: "last step" is the latest BeginStep..now; "window" is the last W steps, the latest
// included (W = window_steps, default kDefaultWindowSteps); "total" is since start or Reset.
//
// Units: "rows" are (token, expert choice) pairs: a token routed to two experts is two rows.
// Traffic counts only rows that cross to another rank (rows a rank routes to its own experts
// are local_rows); bytes are payload bytes (row_bytes = hidden * sizeof(activation)).
#pragma once

#include <cstdint>
#include <deque>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"

namespace moeserve::parallel {

struct EpLayerTrace {
  std::vector<int64_t> routed_per_expert;    // [num_experts]: rows this rank's tokens routed
  std::vector<int64_t> computed_per_expert;  // [num_experts]: rows this rank's experts computed
  std::vector<int64_t> rows_sent_to;         // [world_size]: dispatch rows to each rank (self too)
  std::vector<int64_t> rows_received_from;   // [world_size]: dispatch rows from each rank
  int64_t row_bytes = 0;                     // bytes per row on the wire (both directions)
  double all_to_all_seconds = 0;             // wall time in the layer's collectives
};

inline constexpr int64_t kDefaultWindowSteps = 64;

struct EpRankStats {
  int rank = 0;
  int world_size = 1;
  int64_t window_steps = kDefaultWindowSteps;  // W of the *_window counters
  int64_t steps = 0;                           // BeginStep calls (model Forward calls)
  int64_t layer_calls = 0;                     // MoE layer calls recorded
  // [num_layers][num_experts]: rows routed by this rank's tokens, in the latest step and since
  // start; and rows computed by this rank's experts (zero for experts it does not hold).
  std::vector<std::vector<int64_t>> routed_last_step, routed_total;
  std::vector<std::vector<int64_t>> computed_last_step, computed_total;
  // The same over the last window_steps steps (fewer right after start or Reset).
  std::vector<std::vector<int64_t>> routed_window, computed_window;
  // [world_size]: dispatch rows this rank's tokens sent to each rank, this rank included (rows
  // computed locally), in the latest step and since start.
  std::vector<int64_t> rows_sent_to_last_step, rows_sent_to_total;
  // Traffic since start, all layers. Dispatch carries token states out and in; combine carries
  // expert outputs back (this rank sends results for rows it received).
  int64_t tokens_sent = 0;      // dispatch rows sent to other ranks
  int64_t tokens_received = 0;  // dispatch rows received from other ranks
  int64_t local_rows = 0;       // rows routed to this rank's own experts (no transfer)
  int64_t dispatch_bytes_sent = 0, dispatch_bytes_received = 0;
  int64_t combine_bytes_sent = 0, combine_bytes_received = 0;
  std::vector<int64_t> bytes_sent_to;  // [world_size]: dispatch + combine bytes to each rank
  std::vector<int64_t> bytes_sent_to_last_step;  // [world_size]: the same, latest step
  double all_to_all_seconds = 0;  // wall time in AllToAll/AllToAllV (includes waiting)

  int64_t bytes_sent() const { return dispatch_bytes_sent + combine_bytes_sent; }
  int64_t bytes_received() const { return dispatch_bytes_received + combine_bytes_received; }
};

class EpStatsRecorder {
 public:
  // window_steps >= 1 (values below are taken as 1).
  EpStatsRecorder(int rank, int world_size, int64_t num_layers, int64_t num_experts,
                  int64_t window_steps = kDefaultWindowSteps);

  // Starts a step: the *_last_step counters are reset. Called by the rank's worker.
  void BeginStep();
  // Adds one layer call. REQUIRES: trace vectors sized num_experts / world_size.
  void RecordLayer(int64_t layer, const EpLayerTrace& trace);
  // Zeroes every counter.
  void Reset();
  // A copy of the counters; any thread.
  EpRankStats Snapshot() const;

 private:
  using Grid = std::vector<std::vector<int64_t>>;
  mutable absl::Mutex mu_;
  EpRankStats stats_ ABSL_GUARDED_BY(mu_);
  // The completed steps before the latest one that are still in the window (at most W - 1),
  // oldest first, and their sums: window = history sums + the latest step.
  std::deque<std::pair<Grid, Grid>> history_ ABSL_GUARDED_BY(mu_);  // (routed, computed)
  Grid routed_history_sum_ ABSL_GUARDED_BY(mu_), computed_history_sum_ ABSL_GUARDED_BY(mu_);
};

// How uneven a load vector is.
struct LoadSpread {
  double max_over_mean = 1.0;  // 1.0 when empty or all zero
  double cv = 0.0;             // population std / mean; 0.0 when empty or all zero
};
LoadSpread SpreadOf(absl::Span<const int64_t> load);

struct EpStats {
  int world_size = 1;
  std::vector<EpRankStats> ranks;
  // [num_layers][num_experts], summed over ranks (each row counted once, by its source rank).
  std::vector<std::vector<int64_t>> expert_tokens_last_step, expert_tokens_total;
  // Rows computed per rank, all layers: [world_size].
  std::vector<int64_t> rank_rows_last_step, rank_rows_total;
  // max/mean over the experts of each layer ([num_layers]), and their maximum over layers.
  std::vector<double> expert_imbalance_per_layer_total;
  double expert_imbalance_last_step = 1.0, expert_imbalance_total = 1.0;
  // max/mean over ranks of rows computed.
  double rank_imbalance_last_step = 1.0, rank_imbalance_total = 1.0;

  // Per layer, over the last step and the window (W = window_steps):
  int64_t window_steps = kDefaultWindowSteps;
  std::vector<std::vector<int64_t>> expert_tokens_window;  // [num_layers][num_experts]
  // [num_layers][world_size]: expert rows each rank computed in the layer.
  std::vector<std::vector<int64_t>> rank_rows_per_layer_last_step, rank_rows_per_layer_window;
  // [num_layers]: spread of expert_tokens_* and rank_rows_per_layer_* of each layer.
  std::vector<LoadSpread> expert_spread_last_step, expert_spread_window;
  std::vector<LoadSpread> rank_spread_last_step, rank_spread_window;
  // [world_size][world_size], source rank -> destination rank. Rows: dispatch rows (the
  // diagonal: rows computed by the source itself, which cross no link). Bytes: dispatch rows
  // src -> dst plus the combine rows returning from src to dst; 0 on the diagonal.
  std::vector<std::vector<int64_t>> link_rows_last_step, link_rows_total;
  std::vector<std::vector<int64_t>> link_bytes_last_step, link_bytes_total;
};

// REQUIRES: ranks non-empty, all of the same shape.
EpStats AggregateEpStats(absl::Span<const EpRankStats> ranks);

// max/mean of `load`; 1.0 when empty or all zero.
double MaxOverMean(absl::Span<const int64_t> load);

}  // namespace moeserve::parallel
