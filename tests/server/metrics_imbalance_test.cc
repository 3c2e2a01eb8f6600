// The imbalance-lab families of /metrics (docs/imbalance-lab.md): every series documented there,
// no other, with the documented label sets and count (bounded by layers, experts and ranks), and
// values equal to the EpStats they come from, for stats built from constructed rank counters.
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "server/metrics/metrics.h"
#include "tests/server/ep_stats_fixture.h"

namespace moeserve::server {
namespace {

parallel::EpRankStats RankStats(int rank, int world, int64_t layers, int64_t experts) {
  return test::RankStats(rank, world, layers, experts, /*window=*/4, /*steps=*/3);
}

TEST(MetricsImbalanceTest, SeriesAreTheDocumentedOnesWithBoundedLabels) {
  const int64_t L = 3, E = 5;
  const int R = 2;
  runtime::EngineStats stats;
  stats.ep = parallel::AggregateEpStats({RankStats(0, R, L, E), RankStats(1, R, L, E)});
  const std::string text = ServerMetrics().Render(stats);

  // name -> number of series, and each series' value by its full label text.
  std::map<std::string, int> count;
  std::map<std::string, double> value;
  std::istringstream in(text);
  const std::regex line(R"(^(moeserve_(?:layer_|ep_link_|imbalance_)\w*)(\{[^}]*\})? (\S+)$)");
  for (std::string l; std::getline(in, l);) {
    std::smatch m;
    if (!std::regex_match(l, m, line)) continue;
    ++count[m[1]];
    value[m[1].str() + m[2].str()] = std::stod(m[3]);
  }
  const std::map<std::string, int> want = {
      {"moeserve_imbalance_window_steps", 1},  {"moeserve_layer_expert_tokens", 2 * L * E},
      {"moeserve_layer_rank_rows", 2 * L * R}, {"moeserve_layer_expert_imbalance_ratio", 2 * L},
      {"moeserve_layer_expert_cv", 2 * L},     {"moeserve_layer_rank_imbalance_ratio", 2 * L},
      {"moeserve_layer_rank_cv", 2 * L},       {"moeserve_ep_link_rows_total", R * R},
      {"moeserve_ep_link_bytes_total", R * R},
  };
  EXPECT_EQ(count, want);

  const parallel::EpStats& ep = stats.ep;
  EXPECT_EQ(value["moeserve_imbalance_window_steps"], 4);
  for (int64_t l = 0; l < L; ++l) {
    const std::string layer = "layer=\"" + std::to_string(l) + "\"";
    for (int64_t e = 0; e < E; ++e) {
      const std::string expert = layer + ",expert=\"" + std::to_string(e) + "\"";
      EXPECT_EQ(value["moeserve_layer_expert_tokens{" + expert + ",span=\"last_step\"}"],
                ep.expert_tokens_last_step[l][e]);
      EXPECT_EQ(value["moeserve_layer_expert_tokens{" + expert + ",span=\"window\"}"],
                ep.expert_tokens_window[l][e]);
    }
    for (int r = 0; r < R; ++r) {
      EXPECT_EQ(value["moeserve_layer_rank_rows{" + layer + ",rank=\"" + std::to_string(r) +
                      "\",span=\"window\"}"],
                ep.rank_rows_per_layer_window[l][r]);
    }
    EXPECT_NEAR(value["moeserve_layer_expert_cv{" + layer + ",span=\"window\"}"],
                ep.expert_spread_window[l].cv, 1e-5);
    EXPECT_NEAR(value["moeserve_layer_rank_imbalance_ratio{" + layer + ",span=\"last_step\"}"],
                ep.rank_spread_last_step[l].max_over_mean, 1e-5);
  }
  for (int src = 0; src < R; ++src) {
    for (int dst = 0; dst < R; ++dst) {
      const std::string link =
          "{src=\"" + std::to_string(src) + "\",dst=\"" + std::to_string(dst) + "\"}";
      EXPECT_EQ(value["moeserve_ep_link_rows_total" + link], ep.link_rows_total[src][dst]);
      EXPECT_EQ(value["moeserve_ep_link_bytes_total" + link], ep.link_bytes_total[src][dst]);
    }
  }
  // The constructed traffic: rank src sends 1 + src rows a layer to each rank, 3 steps x 3 layers.
  EXPECT_EQ(ep.link_rows_total[1][0], 2 * 3 * L);
  EXPECT_EQ(ep.link_bytes_total[1][0], (2 + 1) * 4 * 3 * L);
}

}  // namespace
}  // namespace moeserve::server
