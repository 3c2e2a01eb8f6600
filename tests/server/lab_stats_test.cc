// GET /v1/lab/stats (server/lab/lab_stats.h): the documented shape, every number equal to the
// series /metrics renders for the same EngineStats, and the window counts equal to sums of the
// constructed per-step load done here.
#include "server/lab/lab_stats.h"

#include <map>
#include <regex>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "server/metrics/metrics.h"
#include "tests/server/ep_stats_fixture.h"

namespace moeserve::server {
namespace {

constexpr int64_t kLayers = 3, kExperts = 5, kSteps = 6, kWindow = 4;
constexpr int kRanks = 2;

parallel::EpRankStats RankStats(int rank) {
  return test::RankStats(rank, kRanks, kLayers, kExperts, kWindow, kSteps);
}

runtime::EngineStats Stats() {
  runtime::EngineStats stats;
  stats.steps = kSteps;
  stats.ep = parallel::AggregateEpStats({RankStats(0), RankStats(1)});
  return stats;
}

// Every series of /metrics, by name + label text ("moeserve_layer_rank_rows{layer=...}").
std::map<std::string, double> MetricValues(const runtime::EngineStats& stats) {
  std::map<std::string, double> value;
  std::istringstream in(ServerMetrics().Render(stats));
  const std::regex line(R"(^(moeserve_\w+(?:\{[^}]*\})?) (\S+)$)");
  for (std::string l; std::getline(in, l);) {
    std::smatch m;
    if (std::regex_match(l, m, line)) value[m[1]] = std::stod(m[2]);
  }
  return value;
}

TEST(LabStatsTest, ShapeAndPlacement) {
  const runtime::EngineStats stats = Stats();
  auto placement = parallel::ExpertPlacement::Contiguous(kLayers, kExperts, kRanks);
  ASSERT_TRUE(placement.ok()) << placement.status();
  const nlohmann::json j = LabStatsJson(stats, &*placement);
  EXPECT_EQ(j["object"], "moeserve.lab.stats");
  EXPECT_EQ(j["engine_steps"], kSteps);
  EXPECT_EQ(j["world_size"], kRanks);
  EXPECT_EQ(j["num_layers"], kLayers);
  EXPECT_EQ(j["num_experts"], kExperts);
  EXPECT_EQ(j["window_steps"], kWindow);
  // 5 experts over 2 ranks: the uneven contiguous split 3, 2.
  for (int64_t l = 0; l < kLayers; ++l) {
    EXPECT_EQ(j["expert_ranks"][l], nlohmann::json::parse("[[0],[0],[0],[1],[1]]")) << l;
  }
  for (const char* span : {"last_step", "window"}) {
    const nlohmann::json& s = j[span];
    ASSERT_EQ(s["expert_tokens"].size(), kLayers);
    EXPECT_EQ(s["expert_tokens"][0].size(), kExperts);
    ASSERT_EQ(s["rank_rows"].size(), kLayers);
    EXPECT_EQ(s["rank_rows"][0].size(), kRanks);
    for (const char* per_layer :
         {"expert_imbalance_ratio", "expert_cv", "rank_imbalance_ratio", "rank_cv"}) {
      EXPECT_EQ(s[per_layer].size(), kLayers) << span << " " << per_layer;
    }
  }
  for (const char* link : {"link_rows", "link_bytes"}) {
    EXPECT_EQ(j["last_step"][link].size(), kRanks);
    EXPECT_EQ(j["total"][link].size(), kRanks);
    EXPECT_EQ(j["total"][link][0].size(), kRanks);
  }
  EXPECT_EQ(j["total"]["rank_rows"].size(), kRanks);
  // World size 1 has no placement: every expert on rank 0.
  EXPECT_EQ(LabStatsJson(stats, nullptr)["expert_ranks"][1][4], nlohmann::json::parse("[0]"));
}

TEST(LabStatsTest, WindowCountsAreTheSumsOfTheConstructedSteps) {
  const nlohmann::json j = LabStatsJson(Stats(), nullptr);
  for (int64_t l = 0; l < kLayers; ++l) {
    std::vector<int64_t> window(kExperts, 0), last(kExperts, 0);
    std::vector<int64_t> rank_window(kRanks, 0);
    for (int64_t step = kSteps - kWindow; step < kSteps; ++step) {
      for (int r = 0; r < kRanks; ++r) {
        window[(l + r + step) % kExperts] += 3 + r;
        if (step == kSteps - 1) last[(l + r + step) % kExperts] += 3 + r;
        rank_window[r] += 2 + step;
      }
    }
    EXPECT_EQ(j["window"]["expert_tokens"][l], nlohmann::json(window)) << l;
    EXPECT_EQ(j["last_step"]["expert_tokens"][l], nlohmann::json(last)) << l;
    EXPECT_EQ(j["window"]["rank_rows"][l], nlohmann::json(rank_window)) << l;
  }
  // Rank 1 sends 2 dispatch rows a layer to rank 0 and returns the 1 row rank 0 sent it, 4 bytes
  // each, over 6 steps x 3 layers.
  EXPECT_EQ(j["total"]["link_rows"][1][0], 2 * kSteps * kLayers);
  EXPECT_EQ(j["total"]["link_bytes"][1][0], (2 + 1) * 4 * kSteps * kLayers);
}

TEST(LabStatsTest, EveryNumberMatchesMetrics) {
  const runtime::EngineStats stats = Stats();
  const nlohmann::json j = LabStatsJson(stats, nullptr);
  std::map<std::string, double> m = MetricValues(stats);
  EXPECT_EQ(m["moeserve_imbalance_window_steps"], j["window_steps"].get<double>());
  EXPECT_EQ(m["moeserve_engine_steps_total"], j["engine_steps"].get<double>());
  auto at = [&](const std::string& key) {
    EXPECT_TRUE(m.count(key)) << key;
    return m[key];
  };
  for (const char* span : {"last_step", "window"}) {
    const nlohmann::json& s = j[span];
    const std::string sp = std::string(",span=\"") + span + "\"}";
    for (int64_t l = 0; l < kLayers; ++l) {
      const std::string layer = "{layer=\"" + std::to_string(l) + "\"";
      for (int64_t e = 0; e < kExperts; ++e) {
        EXPECT_EQ(at("moeserve_layer_expert_tokens" + layer + ",expert=\"" + std::to_string(e) +
                     "\"" + sp),
                  s["expert_tokens"][l][e].get<double>());
      }
      for (int r = 0; r < kRanks; ++r) {
        EXPECT_EQ(
            at("moeserve_layer_rank_rows" + layer + ",rank=\"" + std::to_string(r) + "\"" + sp),
            s["rank_rows"][l][r].get<double>());
      }
      // /metrics prints doubles with 6 significant digits.
      for (const auto& [family, field] :
           {std::pair{"moeserve_layer_expert_imbalance_ratio", "expert_imbalance_ratio"},
            std::pair{"moeserve_layer_expert_cv", "expert_cv"},
            std::pair{"moeserve_layer_rank_imbalance_ratio", "rank_imbalance_ratio"},
            std::pair{"moeserve_layer_rank_cv", "rank_cv"}}) {
        EXPECT_NEAR(at(family + layer + sp), s[field][l].get<double>(), 1e-5) << family;
      }
    }
  }
  for (int src = 0; src < kRanks; ++src) {
    for (int dst = 0; dst < kRanks; ++dst) {
      const std::string link =
          "{src=\"" + std::to_string(src) + "\",dst=\"" + std::to_string(dst) + "\"}";
      EXPECT_EQ(at("moeserve_ep_link_rows_total" + link),
                j["total"]["link_rows"][src][dst].get<double>());
      EXPECT_EQ(at("moeserve_ep_link_bytes_total" + link),
                j["total"]["link_bytes"][src][dst].get<double>());
    }
  }
}

}  // namespace
}  // namespace moeserve::server
