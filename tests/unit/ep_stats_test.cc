// Expert-load statistics: the recorder's per-step and cumulative counters, the traffic
// accounting of one layer call, and the group aggregation with its imbalance ratios, against
// values worked out by hand.
#include "parallel/moe/ep_stats.h"

#include "gtest/gtest.h"

namespace moeserve::parallel {
namespace {

EpLayerTrace Trace(std::vector<int64_t> routed, std::vector<int64_t> computed,
                   std::vector<int64_t> sent_to, std::vector<int64_t> received_from) {
  EpLayerTrace t;
  t.routed_per_expert = std::move(routed);
  t.computed_per_expert = std::move(computed);
  t.rows_sent_to = std::move(sent_to);
  t.rows_received_from = std::move(received_from);
  t.row_bytes = 16;
  t.all_to_all_seconds = 0.25;
  return t;
}

TEST(EpStatsTest, MaxOverMean) {
  EXPECT_EQ(MaxOverMean({}), 1.0);
  EXPECT_EQ(MaxOverMean({0, 0, 0}), 1.0);
  EXPECT_EQ(MaxOverMean({5, 5, 5, 5}), 1.0);
  EXPECT_EQ(MaxOverMean({8, 0, 0, 0}), 4.0);
  EXPECT_DOUBLE_EQ(MaxOverMean({3, 1}), 1.5);
}

TEST(EpStatsTest, RecorderCountsStepsLayersAndTraffic) {
  // Rank 1 of 2; 2 layers x 4 experts; it holds experts 2 and 3.
  EpStatsRecorder rec(1, 2, 2, 4);
  rec.BeginStep();
  // Layer 0: its 3 tokens route 6 rows: 4 to rank 0's experts, 2 to its own; it receives 5
  // rows from rank 0 and computes 7 rows (5 + its own 2).
  rec.RecordLayer(0, Trace({2, 2, 1, 1}, {0, 0, 3, 4}, {4, 2}, {5, 2}));
  rec.RecordLayer(1, Trace({0, 0, 6, 0}, {0, 0, 6, 0}, {0, 6}, {0, 6}));
  EpRankStats s = rec.Snapshot();
  EXPECT_EQ(s.rank, 1);
  EXPECT_EQ(s.steps, 1);
  EXPECT_EQ(s.layer_calls, 2);
  EXPECT_EQ(s.routed_total[0], (std::vector<int64_t>{2, 2, 1, 1}));
  EXPECT_EQ(s.computed_last_step[1], (std::vector<int64_t>{0, 0, 6, 0}));
  EXPECT_EQ(s.tokens_sent, 4);
  EXPECT_EQ(s.tokens_received, 5);
  EXPECT_EQ(s.local_rows, 8);
  EXPECT_EQ(s.dispatch_bytes_sent, 4 * 16);
  EXPECT_EQ(s.dispatch_bytes_received, 5 * 16);
  EXPECT_EQ(s.combine_bytes_sent, 5 * 16);  // results for the rows it received
  EXPECT_EQ(s.combine_bytes_received, 4 * 16);
  EXPECT_EQ(s.bytes_sent(), 9 * 16);
  EXPECT_EQ(s.bytes_sent_to, (std::vector<int64_t>{9 * 16, 0}));
  EXPECT_DOUBLE_EQ(s.all_to_all_seconds, 0.5);

  // A second step: last-step counters restart, totals accumulate.
  rec.BeginStep();
  rec.RecordLayer(0, Trace({1, 0, 0, 1}, {0, 0, 0, 1}, {1, 1}, {0, 1}));
  s = rec.Snapshot();
  EXPECT_EQ(s.steps, 2);
  EXPECT_EQ(s.routed_last_step[0], (std::vector<int64_t>{1, 0, 0, 1}));
  EXPECT_EQ(s.routed_last_step[1], (std::vector<int64_t>{0, 0, 0, 0}));
  EXPECT_EQ(s.routed_total[0], (std::vector<int64_t>{3, 2, 1, 2}));
  EXPECT_EQ(s.tokens_sent, 5);

  rec.Reset();
  s = rec.Snapshot();
  EXPECT_EQ(s.steps, 0);
  EXPECT_EQ(s.routed_total[0], (std::vector<int64_t>{0, 0, 0, 0}));
  EXPECT_EQ(s.rank, 1);
}

TEST(EpStatsTest, AggregateSumsExpertsAndRatesImbalance) {
  EpStatsRecorder r0(0, 2, 1, 4), r1(1, 2, 1, 4);
  r0.BeginStep();
  r1.BeginStep();
  // Rank 0 holds experts 0-1, rank 1 experts 2-3. Expert 0 is hot.
  r0.RecordLayer(0, Trace({6, 0, 1, 1}, {10, 2, 0, 0}, {6, 2}, {6, 6}));
  r1.RecordLayer(0, Trace({4, 2, 1, 1}, {0, 0, 2, 2}, {6, 2}, {2, 2}));
  const EpStats g = AggregateEpStats(std::vector<EpRankStats>{r0.Snapshot(), r1.Snapshot()});
  EXPECT_EQ(g.world_size, 2);
  EXPECT_EQ(g.expert_tokens_total[0], (std::vector<int64_t>{10, 2, 2, 2}));
  EXPECT_EQ(g.rank_rows_total, (std::vector<int64_t>{12, 4}));
  EXPECT_DOUBLE_EQ(g.expert_imbalance_total, 10.0 / 4.0);
  EXPECT_DOUBLE_EQ(g.expert_imbalance_last_step, 10.0 / 4.0);
  EXPECT_EQ(g.expert_imbalance_per_layer_total, (std::vector<double>{2.5}));
  EXPECT_DOUBLE_EQ(g.rank_imbalance_total, 12.0 / 8.0);
}

}  // namespace
}  // namespace moeserve::parallel
