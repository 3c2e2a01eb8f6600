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
// with no load at all reports 1.0.
//
// Units: "rows" are (token, expert choice) pairs: a token routed to two experts is two rows.
// Traffic counts only rows that cross to another rank (rows a rank routes to its own experts
// are local_rows); bytes are payload bytes (row_bytes = hidden * sizeof(activation)).
#pragma once

#include <cstdint>
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

struct EpRankStats {
  int rank = 0;
  int world_size = 1;
  int64_t steps = 0;        // BeginStep calls (model Forward calls)
  int64_t layer_calls = 0;  // MoE layer calls recorded
  // [num_layers][num_experts]: rows routed by this rank's tokens, in the latest step and since
  // start; and rows computed by this rank's experts (zero for experts it does not hold).
  std::vector<std::vector<int64_t>> routed_last_step, routed_total;
  std::vector<std::vector<int64_t>> computed_last_step, computed_total;
  // Traffic since start, all layers. Dispatch carries token states out and in; combine carries
  // expert outputs back (this rank sends results for rows it received).
  int64_t tokens_sent = 0;      // dispatch rows sent to other ranks
  int64_t tokens_received = 0;  // dispatch rows received from other ranks
  int64_t local_rows = 0;       // rows routed to this rank's own experts (no transfer)
  int64_t dispatch_bytes_sent = 0, dispatch_bytes_received = 0;
  int64_t combine_bytes_sent = 0, combine_bytes_received = 0;
  std::vector<int64_t> bytes_sent_to;  // [world_size]: dispatch + combine bytes to each rank
  double all_to_all_seconds = 0;       // wall time in AllToAll/AllToAllV (includes waiting)

  int64_t bytes_sent() const { return dispatch_bytes_sent + combine_bytes_sent; }
  int64_t bytes_received() const { return dispatch_bytes_received + combine_bytes_received; }
};

class EpStatsRecorder {
 public:
  EpStatsRecorder(int rank, int world_size, int64_t num_layers, int64_t num_experts);

  // Starts a step: the *_last_step counters are reset. Called by the rank's worker.
  void BeginStep();
  // Adds one layer call. REQUIRES: trace vectors sized num_experts / world_size.
  void RecordLayer(int64_t layer, const EpLayerTrace& trace);
  // Zeroes every counter.
  void Reset();
  // A copy of the counters; any thread.
  EpRankStats Snapshot() const;

 private:
  mutable absl::Mutex mu_;
  EpRankStats stats_ ABSL_GUARDED_BY(mu_);
};

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
};

// REQUIRES: ranks non-empty, all of the same shape.
EpStats AggregateEpStats(absl::Span<const EpRankStats> ranks);

// max/mean of `load`; 1.0 when empty or all zero.
double MaxOverMean(absl::Span<const int64_t> load);

}  // namespace moeserve::parallel
