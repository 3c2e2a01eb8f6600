// GatherEpRankStats: every rank receives every rank's statistics exactly as that rank had them
// (the oracle: the values each rank was given, built here), including a rank whose tables are
// still empty (encodings of different lengths) and non-integral seconds.
#include "parallel/moe/ep_stats_gather.h"

#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "parallel/comm/in_process_communicator.h"

namespace moeserve::parallel {
namespace {

EpRankStats Made(int rank, int world) {
  EpRankStats s;
  s.rank = rank;
  s.world_size = world;
  s.window_steps = 64;
  s.steps = 10 + rank;
  s.layer_calls = 20 + rank;
  if (rank == world - 1) return s;  // has not stepped: empty tables
  const int64_t base = 1000 * (rank + 1);
  for (int l = 0; l < 2; ++l) {
    std::vector<int64_t> row = {base + l, base + l + 1, base + l + 2};
    s.routed_last_step.push_back(row);
    s.routed_total.push_back({row[0] * 3, row[1] * 3, row[2] * 3});
    s.computed_last_step.push_back({row[2], row[0], row[1]});
    s.computed_total.push_back({-1, 0, row[0] << 33});  // large values survive
    s.routed_window.push_back(row);
    s.computed_window.push_back({7, 8, 9});
  }
  for (int r = 0; r < world; ++r) {
    s.rows_sent_to_last_step.push_back(base + r);
    s.rows_sent_to_total.push_back(2 * base + r);
    s.bytes_sent_to.push_back(3 * base + r);
    s.bytes_sent_to_last_step.push_back(4 * base + r);
  }
  s.tokens_sent = base + 11;
  s.tokens_received = base + 12;
  s.local_rows = base + 13;
  s.dispatch_bytes_sent = base + 14;
  s.dispatch_bytes_received = base + 15;
  s.combine_bytes_sent = base + 16;
  s.combine_bytes_received = base + 17;
  s.all_to_all_seconds = 0.1 * (rank + 1) + 1e-9;
  return s;
}

void ExpectSame(const EpRankStats& a, const EpRankStats& b) {
  EXPECT_EQ(a.rank, b.rank);
  EXPECT_EQ(a.world_size, b.world_size);
  EXPECT_EQ(a.window_steps, b.window_steps);
  EXPECT_EQ(a.steps, b.steps);
  EXPECT_EQ(a.layer_calls, b.layer_calls);
  EXPECT_EQ(a.routed_last_step, b.routed_last_step);
  EXPECT_EQ(a.routed_total, b.routed_total);
  EXPECT_EQ(a.computed_last_step, b.computed_last_step);
  EXPECT_EQ(a.computed_total, b.computed_total);
  EXPECT_EQ(a.routed_window, b.routed_window);
  EXPECT_EQ(a.computed_window, b.computed_window);
  EXPECT_EQ(a.rows_sent_to_last_step, b.rows_sent_to_last_step);
  EXPECT_EQ(a.rows_sent_to_total, b.rows_sent_to_total);
  EXPECT_EQ(a.tokens_sent, b.tokens_sent);
  EXPECT_EQ(a.tokens_received, b.tokens_received);
  EXPECT_EQ(a.local_rows, b.local_rows);
  EXPECT_EQ(a.dispatch_bytes_sent, b.dispatch_bytes_sent);
  EXPECT_EQ(a.dispatch_bytes_received, b.dispatch_bytes_received);
  EXPECT_EQ(a.combine_bytes_sent, b.combine_bytes_sent);
  EXPECT_EQ(a.combine_bytes_received, b.combine_bytes_received);
  EXPECT_EQ(a.bytes_sent_to, b.bytes_sent_to);
  EXPECT_EQ(a.bytes_sent_to_last_step, b.bytes_sent_to_last_step);
  EXPECT_EQ(a.all_to_all_seconds, b.all_to_all_seconds);  // bitwise: x + 0.0 sums
}

TEST(EpStatsGather, EveryRankGetsEveryRanksStatsExactly) {
  for (int world : {1, 3}) {
    InProcessGroup group(world);
    std::vector<std::vector<EpRankStats>> got(static_cast<size_t>(world));
    std::vector<absl::Status> status(static_cast<size_t>(world));
    std::vector<std::thread> threads;
    for (int r = 0; r < world; ++r) {
      threads.emplace_back([&, r] {
        absl::StatusOr<std::vector<EpRankStats>> all =
            GatherEpRankStats(*group.comm(r), Made(r, world));
        status[static_cast<size_t>(r)] = all.status();
        if (all.ok()) got[static_cast<size_t>(r)] = *std::move(all);
      });
    }
    for (std::thread& t : threads) t.join();
    for (int r = 0; r < world; ++r) {
      ASSERT_TRUE(status[static_cast<size_t>(r)].ok()) << status[static_cast<size_t>(r)];
      ASSERT_EQ(got[static_cast<size_t>(r)].size(), static_cast<size_t>(world));
      for (int p = 0; p < world; ++p) {
        SCOPED_TRACE(testing::Message() << "world " << world << " rank " << r << " entry " << p);
        ExpectSame(got[static_cast<size_t>(r)][static_cast<size_t>(p)], Made(p, world));
      }
    }
  }
}

}  // namespace
}  // namespace moeserve::parallel
