#include "parallel/moe/ep_stats.h"

#include <algorithm>
#include <cmath>

namespace moeserve::parallel {
namespace {

using Grid = std::vector<std::vector<int64_t>>;

Grid Zeros(int64_t layers, int64_t experts) {
  return Grid(static_cast<size_t>(layers), std::vector<int64_t>(static_cast<size_t>(experts), 0));
}

void AddInto(Grid& into, const Grid& from, int64_t sign = 1) {
  for (size_t l = 0; l < into.size(); ++l) {
    for (size_t e = 0; e < into[l].size(); ++e) into[l][e] += sign * from[l][e];
  }
}

// Rows each layer's experts of `computed` sum to: [num_layers].
std::vector<int64_t> PerLayer(const Grid& computed) {
  std::vector<int64_t> out;
  for (const auto& row : computed) {
    int64_t s = 0;
    for (int64_t v : row) s += v;
    out.push_back(s);
  }
  return out;
}

std::vector<LoadSpread> Spreads(const Grid& g) {
  std::vector<LoadSpread> out;
  for (const auto& row : g) out.push_back(SpreadOf(row));
  return out;
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

LoadSpread SpreadOf(absl::Span<const int64_t> load) {
  LoadSpread s;
  s.max_over_mean = MaxOverMean(load);
  if (load.empty()) return s;
  double total = 0;
  for (int64_t v : load) total += static_cast<double>(v);
  if (total == 0) return s;
  const double mean = total / static_cast<double>(load.size());
  double var = 0;
  for (int64_t v : load) var += (static_cast<double>(v) - mean) * (static_cast<double>(v) - mean);
  s.cv = std::sqrt(var / static_cast<double>(load.size())) / mean;
  return s;
}

EpStatsRecorder::EpStatsRecorder(int rank, int world_size, int64_t num_layers, int64_t num_experts,
                                 int64_t window_steps) {
  absl::MutexLock lock(&mu_);
  stats_.rank = rank;
  stats_.world_size = world_size;
  stats_.window_steps = std::max<int64_t>(1, window_steps);
  stats_.routed_last_step = stats_.routed_total = stats_.computed_last_step =
      stats_.computed_total = routed_history_sum_ = computed_history_sum_ =
          Zeros(num_layers, num_experts);
  stats_.bytes_sent_to.assign(static_cast<size_t>(world_size), 0);
  stats_.bytes_sent_to_last_step = stats_.rows_sent_to_last_step = stats_.rows_sent_to_total =
      stats_.bytes_sent_to;
}

void EpStatsRecorder::BeginStep() {
  absl::MutexLock lock(&mu_);
  if (stats_.steps > 0 && stats_.window_steps > 1) {
    // The step that just ended joins the window's history; the oldest leaves it.
    history_.emplace_back(stats_.routed_last_step, stats_.computed_last_step);
    AddInto(routed_history_sum_, stats_.routed_last_step);
    AddInto(computed_history_sum_, stats_.computed_last_step);
    if (static_cast<int64_t>(history_.size()) > stats_.window_steps - 1) {
      AddInto(routed_history_sum_, history_.front().first, -1);
      AddInto(computed_history_sum_, history_.front().second, -1);
      history_.pop_front();
    }
  }
  ++stats_.steps;
  for (auto& row : stats_.routed_last_step) std::fill(row.begin(), row.end(), 0);
  for (auto& row : stats_.computed_last_step) std::fill(row.begin(), row.end(), 0);
  std::fill(stats_.rows_sent_to_last_step.begin(), stats_.rows_sent_to_last_step.end(), 0);
  std::fill(stats_.bytes_sent_to_last_step.begin(), stats_.bytes_sent_to_last_step.end(), 0);
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
    s.rows_sent_to_last_step[p] += out;
    s.rows_sent_to_total[p] += out;
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
    s.bytes_sent_to_last_step[p] += (out + in) * trace.row_bytes;
  }
  s.all_to_all_seconds += trace.all_to_all_seconds;
}

void EpStatsRecorder::Reset() {
  absl::MutexLock lock(&mu_);
  EpRankStats fresh;
  fresh.rank = stats_.rank;
  fresh.world_size = stats_.world_size;
  fresh.window_steps = stats_.window_steps;
  const int64_t layers = static_cast<int64_t>(stats_.routed_total.size());
  const int64_t experts = layers ? static_cast<int64_t>(stats_.routed_total[0].size()) : 0;
  fresh.routed_last_step = fresh.routed_total = fresh.computed_last_step = fresh.computed_total =
      routed_history_sum_ = computed_history_sum_ = Zeros(layers, experts);
  fresh.bytes_sent_to.assign(static_cast<size_t>(stats_.world_size), 0);
  fresh.bytes_sent_to_last_step = fresh.rows_sent_to_last_step = fresh.rows_sent_to_total =
      fresh.bytes_sent_to;
  history_.clear();
  stats_ = std::move(fresh);
}

EpRankStats EpStatsRecorder::Snapshot() const {
  absl::MutexLock lock(&mu_);
  EpRankStats out = stats_;
  out.routed_window = routed_history_sum_;
  AddInto(out.routed_window, stats_.routed_last_step);
  out.computed_window = computed_history_sum_;
  AddInto(out.computed_window, stats_.computed_last_step);
  return out;
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

  // Per layer, last step and window.
  const size_t world = ranks.size();
  out.window_steps = ranks[0].window_steps;
  out.expert_tokens_window = Zeros(layers, experts);
  out.rank_rows_per_layer_last_step = out.rank_rows_per_layer_window =
      Zeros(layers, static_cast<int64_t>(world));
  for (size_t r = 0; r < world; ++r) {
    if (!ranks[r].routed_window.empty()) AddInto(out.expert_tokens_window, ranks[r].routed_window);
    const std::vector<int64_t> last = PerLayer(ranks[r].computed_last_step);
    const std::vector<int64_t> window =
        ranks[r].computed_window.empty() ? last : PerLayer(ranks[r].computed_window);
    for (int64_t l = 0; l < layers; ++l) {
      out.rank_rows_per_layer_last_step[l][r] = last[l];
      out.rank_rows_per_layer_window[l][r] = window[l];
    }
  }
  out.expert_spread_last_step = Spreads(out.expert_tokens_last_step);
  out.expert_spread_window = Spreads(out.expert_tokens_window);
  out.rank_spread_last_step = Spreads(out.rank_rows_per_layer_last_step);
  out.rank_spread_window = Spreads(out.rank_rows_per_layer_window);

  // Links: row src of each matrix is rank src's own counters.
  const Grid zeros = Zeros(static_cast<int64_t>(world), static_cast<int64_t>(world));
  out.link_rows_last_step = out.link_rows_total = out.link_bytes_last_step = out.link_bytes_total =
      zeros;
  for (size_t src = 0; src < world; ++src) {
    const EpRankStats& r = ranks[src];
    for (size_t dst = 0; dst < world && dst < r.rows_sent_to_total.size(); ++dst) {
      out.link_rows_last_step[src][dst] = r.rows_sent_to_last_step[dst];
      out.link_rows_total[src][dst] = r.rows_sent_to_total[dst];
      out.link_bytes_last_step[src][dst] = r.bytes_sent_to_last_step[dst];
      out.link_bytes_total[src][dst] = r.bytes_sent_to[dst];
    }
  }
  return out;
}

}  // namespace moeserve::parallel
