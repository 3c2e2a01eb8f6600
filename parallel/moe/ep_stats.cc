#include "parallel/moe/ep_stats.h"

#include <algorithm>

namespace moeserve::parallel {
namespace {

using Grid = std::vector<std::vector<int64_t>>;

Grid Zeros(int64_t layers, int64_t experts) {
  return Grid(static_cast<size_t>(layers), std::vector<int64_t>(static_cast<size_t>(experts), 0));
}

void AddInto(Grid& into, const Grid& from) {
  for (size_t l = 0; l < into.size(); ++l) {
    for (size_t e = 0; e < into[l].size(); ++e) into[l][e] += from[l][e];
  }
}

int64_t Sum(const Grid& g) {
  int64_t s = 0;
  for (const auto& row : g) {
    for (int64_t v : row) s += v;
  }
  return s;
}

// Worst per-layer max/mean.
double WorstLayer(const Grid& g, std::vector<double>* per_layer = nullptr) {
  double worst = 1.0;
  for (const auto& row : g) {
    const double r = MaxOverMean(row);
    if (per_layer) per_layer->push_back(r);
    worst = std::max(worst, r);
  }
  return worst;
}

}  // namespace

double MaxOverMean(absl::Span<const int64_t> load) {
  if (load.empty()) return 1.0;
  int64_t total = 0, max = 0;
  for (int64_t v : load) {
    total += v;
    max = std::max(max, v);
  }
  if (total == 0) return 1.0;
  return static_cast<double>(max) * static_cast<double>(load.size()) / static_cast<double>(total);
}

EpStatsRecorder::EpStatsRecorder(int rank, int world_size, int64_t num_layers,
                                 int64_t num_experts) {
  absl::MutexLock lock(&mu_);
  stats_.rank = rank;
  stats_.world_size = world_size;
  stats_.routed_last_step = stats_.routed_total = stats_.computed_last_step =
      stats_.computed_total = Zeros(num_layers, num_experts);
  stats_.bytes_sent_to.assign(static_cast<size_t>(world_size), 0);
}

void EpStatsRecorder::BeginStep() {
  absl::MutexLock lock(&mu_);
  ++stats_.steps;
  for (auto& row : stats_.routed_last_step) std::fill(row.begin(), row.end(), 0);
  for (auto& row : stats_.computed_last_step) std::fill(row.begin(), row.end(), 0);
}

void EpStatsRecorder::RecordLayer(int64_t layer, const EpLayerTrace& trace) {
  absl::MutexLock lock(&mu_);
  EpRankStats& s = stats_;
  ++s.layer_calls;
  for (size_t e = 0; e < trace.routed_per_expert.size(); ++e) {
    s.routed_last_step[layer][e] += trace.routed_per_expert[e];
    s.routed_total[layer][e] += trace.routed_per_expert[e];
    s.computed_last_step[layer][e] += trace.computed_per_expert[e];
    s.computed_total[layer][e] += trace.computed_per_expert[e];
  }
  for (int p = 0; p < static_cast<int>(trace.rows_sent_to.size()); ++p) {
    const int64_t out = trace.rows_sent_to[p], in = trace.rows_received_from[p];
    if (p == s.rank) {
      s.local_rows += out;
      continue;
    }
    // Dispatch: our token rows go out, peers' rows come in. Combine: the reverse, row for row.
    s.tokens_sent += out;
    s.tokens_received += in;
    s.dispatch_bytes_sent += out * trace.row_bytes;
    s.dispatch_bytes_received += in * trace.row_bytes;
    s.combine_bytes_sent += in * trace.row_bytes;
    s.combine_bytes_received += out * trace.row_bytes;
    s.bytes_sent_to[p] += (out + in) * trace.row_bytes;
  }
  s.all_to_all_seconds += trace.all_to_all_seconds;
}

void EpStatsRecorder::Reset() {
  absl::MutexLock lock(&mu_);
  EpRankStats fresh;
  fresh.rank = stats_.rank;
  fresh.world_size = stats_.world_size;
  const int64_t layers = static_cast<int64_t>(stats_.routed_total.size());
  const int64_t experts = layers ? static_cast<int64_t>(stats_.routed_total[0].size()) : 0;
  fresh.routed_last_step = fresh.routed_total = fresh.computed_last_step = fresh.computed_total =
      Zeros(layers, experts);
  fresh.bytes_sent_to.assign(static_cast<size_t>(stats_.world_size), 0);
  stats_ = std::move(fresh);
}

EpRankStats EpStatsRecorder::Snapshot() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

EpStats AggregateEpStats(absl::Span<const EpRankStats> ranks) {
  EpStats out;
  out.world_size = static_cast<int>(ranks.size());
  out.ranks.assign(ranks.begin(), ranks.end());
  const int64_t layers = static_cast<int64_t>(ranks[0].routed_total.size());
  const int64_t experts = layers ? static_cast<int64_t>(ranks[0].routed_total[0].size()) : 0;
  out.expert_tokens_last_step = out.expert_tokens_total = Zeros(layers, experts);
  for (const EpRankStats& r : ranks) {
    AddInto(out.expert_tokens_last_step, r.routed_last_step);
    AddInto(out.expert_tokens_total, r.routed_total);
    out.rank_rows_last_step.push_back(Sum(r.computed_last_step));
    out.rank_rows_total.push_back(Sum(r.computed_total));
  }
  out.expert_imbalance_last_step = WorstLayer(out.expert_tokens_last_step);
  out.expert_imbalance_total =
      WorstLayer(out.expert_tokens_total, &out.expert_imbalance_per_layer_total);
  out.rank_imbalance_last_step = MaxOverMean(out.rank_rows_last_step);
  out.rank_imbalance_total = MaxOverMean(out.rank_rows_total);
  return out;
}

}  // namespace moeserve::parallel
