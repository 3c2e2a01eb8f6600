// Imbalance measurement (parallel/moe/ep_stats.h): per-layer spreads (max/mean and coefficient of
// variation) over the last step and a sliding window of W steps, per-rank rows per layer, and the
// source -> destination link matrix. Oracles: counters built here step by step, the statistics
// recomputed here in float64 from their definitions; and a real expert-parallel run whose routing
// is forced by a decisive router skew, so the counts follow from the constructed routing alone.
#include <cmath>
#include <numeric>
#include <vector>

#include "gtest/gtest.h"
#include "parallel/moe/ep_stats.h"
#include "tests/golden/ep_harness.h"

namespace moeserve::parallel {
namespace {

// Population CV and max/mean, written out independently of ep_stats.cc.
double Cv(const std::vector<int64_t>& v) {
  const double n = static_cast<double>(v.size());
  const double mean = std::accumulate(v.begin(), v.end(), 0.0) / n;
  if (mean == 0) return 0;
  double ss = 0;
  for (int64_t x : v) ss += (x - mean) * (x - mean);
  return std::sqrt(ss / n) / mean;
}
double Ratio(const std::vector<int64_t>& v) {
  const double mean = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
  return mean == 0 ? 1.0 : static_cast<double>(*std::max_element(v.begin(), v.end())) / mean;
}

EpLayerTrace Trace(std::vector<int64_t> routed, std::vector<int64_t> computed,
                   std::vector<int64_t> sent_to, std::vector<int64_t> received_from) {
  EpLayerTrace t;
  t.routed_per_expert = std::move(routed);
  t.computed_per_expert = std::move(computed);
  t.rows_sent_to = std::move(sent_to);
  t.rows_received_from = std::move(received_from);
  t.row_bytes = 8;
  return t;
}

TEST(EpStatsWindowTest, SpreadOfMatchesItsDefinition) {
  for (const std::vector<int64_t>& v : std::vector<std::vector<int64_t>>{
           {5, 5, 5, 5}, {8, 0, 0, 0}, {3, 1}, {7, 2, 9, 1, 0, 4, 4, 13}}) {
    const LoadSpread s = SpreadOf(v);
    EXPECT_NEAR(s.cv, Cv(v), 1e-12);
    EXPECT_NEAR(s.max_over_mean, Ratio(v), 1e-12);
  }
  EXPECT_EQ(SpreadOf({0, 0}).cv, 0.0);
  EXPECT_EQ(SpreadOf({0, 0}).max_over_mean, 1.0);
  EXPECT_EQ(SpreadOf({}).cv, 0.0);
}

TEST(EpStatsWindowTest, WindowHoldsTheLastWStepsAndLinksFormAMatrix) {
  // Two ranks, 1 layer x 4 experts, W = 3, six steps of known, different load.
  const int64_t W = 3, steps = 6;
  EpStatsRecorder r0(0, 2, 1, 4, W), r1(1, 2, 1, 4, W);
  std::vector<std::vector<int64_t>> routed0, routed1;  // per step, [4]
  for (int64_t s = 0; s < steps; ++s) {
    // Rank 0's tokens route s+1 rows to expert 0 (its own) and 2 to expert 3 (rank 1's); rank
    // 1's route 1 row to expert 1 (rank 0's) and s rows to expert 2 (its own).
    routed0.push_back({s + 1, 0, 0, 2});
    routed1.push_back({0, 1, s, 0});
    r0.BeginStep();
    r1.BeginStep();
    r0.RecordLayer(0, Trace(routed0.back(), {s + 1, 1, 0, 0}, {s + 1, 2}, {s + 1, 1}));
    r1.RecordLayer(0, Trace(routed1.back(), {0, 0, s, 2}, {1, s}, {2, s}));
  }
  const EpStats st = AggregateEpStats({r0.Snapshot(), r1.Snapshot()});
  EXPECT_EQ(st.window_steps, W);
  // The window: the last 3 steps (3, 4, 5), summed here.
  std::vector<int64_t> want(4, 0), last(4, 0);
  for (int64_t s = steps - W; s < steps; ++s) {
    for (int e = 0; e < 4; ++e) want[e] += routed0[s][e] + routed1[s][e];
  }
  for (int e = 0; e < 4; ++e) last[e] = routed0[steps - 1][e] + routed1[steps - 1][e];
  EXPECT_EQ(st.expert_tokens_window[0], want);
  EXPECT_EQ(st.expert_tokens_last_step[0], last);
  EXPECT_NEAR(st.expert_spread_window[0].cv, Cv(want), 1e-12);
  EXPECT_NEAR(st.expert_spread_window[0].max_over_mean, Ratio(want), 1e-12);
  EXPECT_NEAR(st.expert_spread_last_step[0].cv, Cv(last), 1e-12);
  EXPECT_NEAR(st.expert_spread_last_step[0].max_over_mean, Ratio(last), 1e-12);
  // Rows computed per rank in the layer: rank 0 computes (s+1) + 1, rank 1 s + 2.
  std::vector<int64_t> ranks_window = {0, 0};
  for (int64_t s = steps - W; s < steps; ++s) {
    ranks_window[0] += s + 2;
    ranks_window[1] += s + 2;
  }
  EXPECT_EQ(st.rank_rows_per_layer_window[0], ranks_window);
  EXPECT_EQ(st.rank_rows_per_layer_last_step[0], (std::vector<int64_t>{steps + 1, steps + 1}));
  EXPECT_NEAR(st.rank_spread_window[0].cv, 0.0, 1e-12);
  // Links since start: rows 0 -> 1 are 2 per step, 1 -> 0 one per step; diagonals are local.
  int64_t diag0 = 0, diag1 = 0;
  for (int64_t s = 0; s < steps; ++s) diag0 += s + 1, diag1 += s;
  EXPECT_EQ(st.link_rows_total,
            (std::vector<std::vector<int64_t>>{{diag0, 2 * steps}, {steps, diag1}}));
  // Bytes src -> dst: its dispatch rows to dst plus the combine rows it returns to dst (the
  // rows dst dispatched to it), 8 bytes a row; nothing on the diagonal.
  EXPECT_EQ(st.link_bytes_total, (std::vector<std::vector<int64_t>>{{0, (2 + 1) * 8 * steps},
                                                                    {(1 + 2) * 8 * steps, 0}}));
  EXPECT_EQ(st.link_rows_last_step,
            (std::vector<std::vector<int64_t>>{{steps, 2}, {1, steps - 1}}));
  EXPECT_EQ(st.link_bytes_last_step, (std::vector<std::vector<int64_t>>{{0, 24}, {24, 0}}));
}

TEST(EpStatsWindowTest, ResetEmptiesTheWindow) {
  EpStatsRecorder rec(0, 1, 1, 2, 4);
  for (int s = 0; s < 3; ++s) {
    rec.BeginStep();
    rec.RecordLayer(0, Trace({1, 1}, {1, 1}, {2}, {2}));
  }
  EXPECT_EQ(rec.Snapshot().routed_window[0], (std::vector<int64_t>{3, 3}));
  rec.Reset();
  rec.BeginStep();
  rec.RecordLayer(0, Trace({0, 5}, {0, 5}, {5}, {5}));
  EXPECT_EQ(rec.Snapshot().routed_window[0], (std::vector<int64_t>{0, 5}));
}

}  // namespace
}  // namespace moeserve::parallel

namespace moeserve::runtime {
namespace {

// A real 2-rank group (experts 0-3 on rank 0, 4-7 on rank 1) with +1000 on experts 0 and 1:
// every token's top 2 is {0, 1}, both on rank 0. So, per layer, with n_r prompt tokens on rank r:
// experts 0 and 1 get n_0 + n_1 rows each, rank 0 computes all 2(n_0 + n_1) rows, rank 1 none;
// link rows r -> 0 are 2 n_r, r -> 1 zero, and every layer adds them.
TEST(EpStatsWindowTest, ConstructedRoutingGivesKnownCountsSpreadsAndLinks) {
  const ModelConfig config = ep_test::SmallConfig();
  const int64_t layers = config.num_hidden_layers;
  std::vector<ep_test::Script> scripts;
  const std::vector<int64_t> lens = {7, 11, 5};  // sequences 0 and 2 on rank 0, 1 on rank 1
  for (size_t i = 0; i < lens.size(); ++i) {
    ep_test::Script s;
    for (int64_t t = 0; t < lens[i]; ++t) {
      s.prompt.push_back(static_cast<int32_t>((i * 37 + t * 11 + 3) % config.vocab_size));
    }
    s.max_new_tokens = 1;
    scripts.push_back(s);
  }
  auto placement = parallel::ExpertPlacement::Contiguous(layers, 8, 2);
  ASSERT_TRUE(placement.ok());
  ep_test::GroupOptions o;
  o.world = 2;
  o.placement = &*placement;
  o.assign = [](size_t i) { return static_cast<int>(i % 2); };
  o.skew = {{0, 1}, 1000.0f};
  auto run = ep_test::RunGroup(
      [&](kernels::Backend* backend, const ModelLoadOptions& options) {
        return LoadRandomModel(config, 11, backend, options);
      },
      scripts, o);
  ASSERT_TRUE(run.ok()) << run.status();
  const parallel::EpStats st = parallel::AggregateEpStats(run->stats);
  const int64_t n0 = lens[0] + lens[2], n1 = lens[1];
  // One prefill step, no decode (max_new_tokens 1 samples from the prefill): window == step.
  for (int64_t l = 0; l < layers; ++l) {
    const std::vector<int64_t> want = {n0 + n1, n0 + n1, 0, 0, 0, 0, 0, 0};
    EXPECT_EQ(st.expert_tokens_window[l], want) << l;
    EXPECT_NEAR(st.expert_spread_window[l].max_over_mean, 4.0, 1e-12);
    EXPECT_NEAR(st.expert_spread_window[l].cv, parallel::SpreadOf(want).cv, 1e-12);
    EXPECT_NEAR(st.expert_spread_window[l].cv, std::sqrt(3.0), 1e-12);  // two of 8 at 4x mean
    EXPECT_EQ(st.rank_rows_per_layer_window[l], (std::vector<int64_t>{2 * (n0 + n1), 0}));
    EXPECT_NEAR(st.rank_spread_window[l].max_over_mean, 2.0, 1e-12);
    EXPECT_NEAR(st.rank_spread_window[l].cv, 1.0, 1e-12);
  }
  EXPECT_EQ(st.link_rows_total,
            (std::vector<std::vector<int64_t>>{{2 * n0 * layers, 0}, {2 * n1 * layers, 0}}));
  const int64_t row_bytes = config.hidden_size * 4;  // fp32 activations on the CPU backend
  // 1 -> 0: dispatch 2 n1 rows a layer; 0 -> 1: their combine results coming back.
  EXPECT_EQ(st.link_bytes_total,
            (std::vector<std::vector<int64_t>>{{0, 2 * n1 * layers * row_bytes},
                                               {2 * n1 * layers * row_bytes, 0}}));
}

}  // namespace
}  // namespace moeserve::runtime
