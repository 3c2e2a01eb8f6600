// A bounded in-memory recorder of expert load, started, stopped and dumped by a client (the
// daemon's /v1/lab/recorder routes and gRPC StartRecorder / StopRecorder / DumpRecorder).
//
// While recording, every rank's worker adds its share of each engine step after the step's
// Forward: per layer, the rows its tokens routed to each expert, and the rows its experts
// computed. Steps are keyed by the step number every rank shares (ranks run in lockstep), so a
// recorded step holds, per layer,
//   expert_tokens [num_experts]  rows routed to each expert, summed over the ranks
//   rank_rows     [world_size]   rows each rank's experts computed
// Units: a row is one (token, expert choice) pair, as in ep_stats.h (top-2: two rows a token).
//
// Bounded: at most max_steps steps are kept, a ring (the oldest are dropped and counted).
// Start clears what was recorded. A step that straddles Start or Stop may hold only the ranks
// that recorded it while recording was on.
//
// Cost when off: one relaxed atomic load per step and rank. When on: a snapshot of the rank's
// counters (O(layers x experts)) and a merge under a mutex; `moeserve bench --recorder` measures
// it.
//
// Threading: Record from the workers; Start / Stop / Dump from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "parallel/moe/ep_stats.h"

namespace moeserve::runtime {

struct RecordedStep {
  int64_t step = 0;                                 // the ranks' Forward count (1-based)
  std::vector<std::vector<int64_t>> expert_tokens;  // [num_layers][num_experts]
  std::vector<std::vector<int64_t>> rank_rows;      // [num_layers][world_size]
};

struct RecorderDump {
  bool recording = false;
  int64_t max_steps = 0;
  int64_t num_layers = 0, num_experts = 0;
  int world_size = 1;
  int64_t steps_dropped = 0;        // recorded steps pushed out of the ring since Start
  std::vector<RecordedStep> steps;  // oldest first
};

inline constexpr int64_t kDefaultRecorderMaxSteps = 4096;

class LoadRecorder {
 public:
  LoadRecorder(int64_t num_layers, int64_t num_experts, int world_size, int64_t max_steps);

  void Start();  // clears the ring and starts recording
  void Stop();   // stops; the ring stays for Dump
  bool recording() const { return recording_.load(std::memory_order_relaxed); }
  // A rank's share of its latest step (stats.*_last_step, keyed by stats.steps). No-op when
  // not recording. REQUIRES: stats of this recorder's shape.
  void Record(const parallel::EpRankStats& stats);
  RecorderDump Dump() const;

 private:
  const int64_t num_layers_, num_experts_;
  const int world_size_;
  const int64_t max_steps_;
  std::atomic<bool> recording_{false};
  mutable absl::Mutex mu_;
  std::map<int64_t, RecordedStep> steps_ ABSL_GUARDED_BY(mu_);  // by step number
  int64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace moeserve::runtime
