#include "server/lab/lab_stats.h"

#include <vector>

namespace moeserve::server {
namespace {

using Json = nlohmann::json;

Json Ratios(const std::vector<parallel::LoadSpread>& spreads, bool cv) {
  Json out = Json::array();
  for (const parallel::LoadSpread& s : spreads) out.push_back(cv ? s.cv : s.max_over_mean);
  return out;
}

// The per-layer part of a span: what the heatmap and the per-rank bars draw.
Json Span(const std::vector<std::vector<int64_t>>& expert_tokens,
          const std::vector<parallel::LoadSpread>& expert_spread,
          const std::vector<std::vector<int64_t>>& rank_rows,
          const std::vector<parallel::LoadSpread>& rank_spread) {
  return Json{{"expert_tokens", expert_tokens},
              {"expert_imbalance_ratio", Ratios(expert_spread, false)},
              {"expert_cv", Ratios(expert_spread, true)},
              {"rank_rows", rank_rows},
              {"rank_imbalance_ratio", Ratios(rank_spread, false)},
              {"rank_cv", Ratios(rank_spread, true)}};
}

}  // namespace

Json LabStatsJson(const runtime::EngineStats& stats, const parallel::ExpertPlacement* placement) {
  const parallel::EpStats& ep = stats.ep;
  const size_t layers = ep.expert_tokens_last_step.size();
  const size_t experts = layers > 0 ? ep.expert_tokens_last_step[0].size() : 0;
  Json expert_ranks = Json::array();
  for (size_t l = 0; l < layers; ++l) {
    Json row = Json::array();
    for (size_t e = 0; e < experts; ++e) {
      row.push_back(placement != nullptr
                        ? placement->replicas(static_cast<int64_t>(l), static_cast<int64_t>(e))
                        : std::vector<int>{0});
    }
    expert_ranks.push_back(std::move(row));
  }
  Json last_step = Span(ep.expert_tokens_last_step, ep.expert_spread_last_step,
                        ep.rank_rows_per_layer_last_step, ep.rank_spread_last_step);
  last_step["link_rows"] = ep.link_rows_last_step;
  last_step["link_bytes"] = ep.link_bytes_last_step;
  return Json{{"object", "moeserve.lab.stats"},
              {"engine_steps", stats.steps},
              {"world_size", ep.world_size},
              {"num_layers", layers},
              {"num_experts", experts},
              {"window_steps", ep.window_steps},
              {"expert_ranks", std::move(expert_ranks)},
              {"last_step", std::move(last_step)},
              {"window", Span(ep.expert_tokens_window, ep.expert_spread_window,
                              ep.rank_rows_per_layer_window, ep.rank_spread_window)},
              {"total",
               {{"expert_tokens", ep.expert_tokens_total},
                {"rank_rows", ep.rank_rows_total},
                {"link_rows", ep.link_rows_total},
                {"link_bytes", ep.link_bytes_total}}}};
}

}  // namespace moeserve::server
