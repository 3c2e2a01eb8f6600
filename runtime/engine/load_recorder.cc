#include "runtime/engine/load_recorder.h"

#include <algorithm>
#include <numeric>

namespace moeserve::runtime {

LoadRecorder::LoadRecorder(int64_t num_layers, int64_t num_experts, int world_size,
                           int64_t max_steps)
    : num_layers_(num_layers),
      num_experts_(num_experts),
      world_size_(world_size),
      max_steps_(std::max<int64_t>(1, max_steps)) {}

void LoadRecorder::Start() {
  absl::MutexLock lock(&mu_);
  steps_.clear();
  dropped_ = 0;
  recording_.store(true, std::memory_order_relaxed);
}

void LoadRecorder::Stop() {
  absl::MutexLock lock(&mu_);
  recording_.store(false, std::memory_order_relaxed);
}

void LoadRecorder::Record(const parallel::EpRankStats& stats) {
  if (!recording()) return;
  const size_t layers = static_cast<size_t>(num_layers_);
  absl::MutexLock lock(&mu_);
  if (!recording_.load(std::memory_order_relaxed)) return;  // stopped meanwhile
  auto [it, inserted] = steps_.try_emplace(stats.steps);
  RecordedStep& step = it->second;
  if (inserted) {
    step.step = stats.steps;
    step.expert_tokens.assign(layers, std::vector<int64_t>(static_cast<size_t>(num_experts_)));
    step.rank_rows.assign(layers, std::vector<int64_t>(static_cast<size_t>(world_size_)));
  }
  for (size_t l = 0; l < layers && l < stats.routed_last_step.size(); ++l) {
    const std::vector<int64_t>& routed = stats.routed_last_step[l];
    for (size_t e = 0; e < routed.size(); ++e) step.expert_tokens[l][e] += routed[e];
    const std::vector<int64_t>& computed = stats.computed_last_step[l];
    step.rank_rows[l][static_cast<size_t>(stats.rank)] +=
        std::accumulate(computed.begin(), computed.end(), int64_t{0});
  }
  while (static_cast<int64_t>(steps_.size()) > max_steps_) {
    steps_.erase(steps_.begin());
    ++dropped_;
  }
}

RecorderDump LoadRecorder::Dump() const {
  RecorderDump d;
  d.max_steps = max_steps_;
  d.num_layers = num_layers_;
  d.num_experts = num_experts_;
  d.world_size = world_size_;
  absl::MutexLock lock(&mu_);
  d.recording = recording_.load(std::memory_order_relaxed);
  d.steps_dropped = dropped_;
  d.steps.reserve(steps_.size());
  for (const auto& [n, step] : steps_) d.steps.push_back(step);
  return d;
}

}  // namespace moeserve::runtime
