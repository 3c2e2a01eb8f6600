// The expert-parallel MoE layer against the local one (world size 1, RunMoeLayer) as the
// oracle: for every token the output must be bitwise identical, at world sizes 1, 2, 3, 4 and 8,
// with ranks that have no tokens, with replicated experts and with routing forced to be skewed.
// Each rank is given only the expert weights its placement assigns it.
#include <cstring>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/dtype.h"
#include "parallel/comm/in_process_communicator.h"
#include "parallel/moe/ep_dispatch_plan.h"
#include "parallel/moe/ep_moe_layer.h"
#include "parallel/moe/moe_layer.h"
#include "tests/unit/moe_layer_fixture.h"

namespace moeserve::parallel {
namespace {

using test::Layer;
using test::MakeLayer;
using test::Uniform;

// The layer's weights as rank `rank` sees them: experts it does not hold are empty views.
MoeLayerWeights RankWeights(const Layer& layer, const ExpertPlacement& placement, int rank) {
  MoeLayerWeights w = layer.weights;
  for (int64_t e = 0; e < layer.shape.num_experts; ++e) {
    if (!placement.Holds(rank, 0, e)) w.experts[e] = {};
  }
  return w;
}

struct RankResult {
  std::vector<float> out;
  EpLayerTrace trace;
};

struct Case {
  std::string name;
  int world = 1;
  std::string placement_json;   // empty: contiguous
  std::vector<int64_t> tokens;  // per rank
  std::vector<float> bias;      // empty: none
  int64_t experts = 8;
  kernels::DType dtype = kernels::DType::kF32;
};

class EpMoeLayerTest : public ::testing::TestWithParam<Case> {};

TEST_P(EpMoeLayerTest, BitwiseEqualToWorldSizeOne) {
  const Case& c = GetParam();
  auto layer = MakeLayer(c.experts, c.dtype, 42);
  const int64_t hidden = layer->shape.hidden;
  absl::StatusOr<ExpertPlacement> placement =
      c.placement_json.empty() ? ExpertPlacement::Contiguous(1, c.experts, c.world)
                               : ExpertPlacement::FromJson(c.placement_json, 1, c.experts, c.world);
  ASSERT_TRUE(placement.ok()) << placement.status();

  // Inputs: every rank's tokens, and the oracle over all of them at once.
  std::vector<std::vector<float>> x(c.world);
  std::vector<float> all_x;
  uint64_t seed = 7;
  for (int r = 0; r < c.world; ++r) {
    for (int64_t i = 0; i < c.tokens[r] * hidden; ++i) x[r].push_back(Uniform(seed, 2.0f));
    all_x.insert(all_x.end(), x[r].begin(), x[r].end());
  }
  const int64_t total = static_cast<int64_t>(all_x.size()) / hidden;
  const float* bias = c.bias.empty() ? nullptr : c.bias.data();
  auto backend = kernels::MakeCpuBackend(1);
  std::vector<float> expected(all_x.size());
  auto tables = BuildExpertTables(*backend, layer->weights);
  ASSERT_TRUE(tables.ok()) << tables.status();
  MoeWorkspace workspace;
  std::vector<int64_t> oracle_counts(c.experts, 0);  // device counters (host memory on CPU)
  ASSERT_TRUE(RunMoeLayer(*backend, layer->shape, layer->weights, workspace, all_x.data(), total,
                          expected.data(), bias, oracle_counts.data())
                  .ok());

  InProcessGroupOptions options;
  options.timeout = absl::Seconds(60);
  InProcessGroup group(c.world, options);
  std::vector<RankResult> results(c.world);
  absl::Status st = group.Run([&](int rank, Communicator& comm) -> absl::Status {
    auto rank_backend = kernels::MakeCpuBackend(1);
    MoeLayerWeights w = RankWeights(*layer, *placement, rank);
    absl::StatusOr<kernels::DeviceBuffer> rank_tables = BuildExpertTables(*rank_backend, w);
    if (!rank_tables.ok()) return rank_tables.status();
    const ExpertParallelContext ep{&comm, &*placement};
    RankResult& r = results[rank];
    r.out.assign(x[rank].size(), -1.0f);
    // Two layer calls in a row, as a model would make: the second must not see the first's
    // state (and zero-token ranks must join both).
    for (int call = 0; call < 2; ++call) {
      if (auto s = RunExpertParallelMoeLayer(*rank_backend, layer->shape, w, 0, ep, x[rank].data(),
                                             c.tokens[rank], r.out.data(), bias, &r.trace);
          !s.ok()) {
        return s;
      }
    }
    return absl::OkStatus();
  });
  ASSERT_TRUE(st.ok()) << st;

  int64_t offset = 0;
  std::vector<int64_t> routed(c.experts, 0), computed(c.experts, 0);
  for (int r = 0; r < c.world; ++r) {
    const std::vector<float> want(expected.begin() + offset * hidden,
                                  expected.begin() + (offset + c.tokens[r]) * hidden);
    // A rank with no tokens has empty (null) buffers, and memcmp on null is undefined even for 0
    // bytes (UBSan's nonnull-attribute check).
    ASSERT_EQ(results[r].out.size(), want.size());
    if (!want.empty()) {
      EXPECT_EQ(0, std::memcmp(results[r].out.data(), want.data(), want.size() * sizeof(float)))
          << "rank " << r << " output differs from world size 1";
    }
    offset += c.tokens[r];
    const EpLayerTrace& t = results[r].trace;
    for (int64_t e = 0; e < c.experts; ++e) {
      routed[e] += t.routed_per_expert[e];
      computed[e] += t.computed_per_expert[e];
      if (!placement->Holds(r, 0, e)) {
        EXPECT_EQ(t.computed_per_expert[e], 0);
      }
    }
    EXPECT_EQ(std::accumulate(t.rows_sent_to.begin(), t.rows_sent_to.end(), int64_t{0}),
              c.tokens[r] * 2);
    for (int d = 0; d < c.world; ++d) {
      EXPECT_EQ(t.rows_sent_to[d], results[d].trace.rows_received_from[r]) << r << "->" << d;
    }
    EXPECT_EQ(t.row_bytes, hidden * 4);
  }
  EXPECT_EQ(routed, oracle_counts);
  EXPECT_EQ(computed, oracle_counts);  // dropless: every row computed once
  // A replicated expert's rows are split: a source with at least R rows for it reaches all R
  // replicas (round robin).
  for (int64_t e = 0; e < c.experts; ++e) {
    const std::vector<int>& replicas = placement->replicas(0, e);
    bool some_source_has_enough = false;
    for (int r = 0; r < c.world; ++r) {
      some_source_has_enough |=
          results[r].trace.routed_per_expert[e] >= static_cast<int64_t>(replicas.size());
    }
    if (replicas.size() < 2 || !some_source_has_enough) continue;
    for (int holder : replicas) {
      EXPECT_GT(results[holder].trace.computed_per_expert[e], 0)
          << "expert " << e << " replica on rank " << holder << " got no rows";
    }
  }
  if (!c.bias.empty()) {  // the skew really concentrated the load
    int64_t favoured = 0;
    for (int64_t e = 0; e < c.experts; ++e) favoured += c.bias[e] > 0 ? routed[e] : 0;
    EXPECT_EQ(favoured, total * 2);
  }
}

std::vector<Case> Cases() {
  std::vector<Case> cases;
  const std::vector<int64_t> tokens = {5, 0, 17, 1, 0, 9, 3, 12};
  for (int w : {1, 2, 4, 8}) {
    Case c;
    c.name = "contiguous_world" + std::to_string(w);
    c.world = w;
    c.tokens.assign(tokens.begin(), tokens.begin() + w);
    if (w == 1) c.tokens = {23};
    cases.push_back(c);
    c.name += "_bf16";
    c.dtype = kernels::DType::kBF16;
    cases.push_back(c);
  }
  Case all_idle_but_one{"one_rank_has_all_tokens", 4, "", {0, 0, 31, 0}};
  cases.push_back(all_idle_but_one);
  Case nobody{"no_tokens_anywhere", 4, "", {0, 0, 0, 0}};
  cases.push_back(nobody);
  // 8 experts on 3 ranks: indivisible, made to work with replicas.
  cases.push_back({"replicas_world3",
                   3,
                   R"({"experts": [[0, 2], [0], [0], [1], [1], [1], [2], [2, 1]]})",
                   {11, 0, 20}});
  // Expert 0 on every rank, the rest contiguous.
  cases.push_back({"hot_expert_everywhere_world4",
                   4,
                   R"({"experts": [[0, 1, 2, 3], [0], [1], [1], [2], [2], [3], [3]]})",
                   {13, 7, 0, 21}});
  // 6 experts (the fp32_odd fixture's count) on 4 and 8 ranks.
  cases.push_back({"six_experts_world4",
                   4,
                   R"({"experts": [[0], [0, 3], [1], [1], [2], [3, 2]]})",
                   {9, 4, 0, 15},
                   {},
                   6});
  cases.push_back({"six_experts_world8",
                   8,
                   R"({"experts": [[0, 6], [1, 7], [2], [3], [4], [5]]})",
                   {9, 4, 0, 15, 2, 0, 6, 1},
                   {},
                   6});
  // Skewed routing: experts 2 and 5 get (almost) every token.
  Case skew{"skewed_world4", 4, "", {10, 3, 0, 25}};
  skew.bias = {0, 0, 30, 0, 0, 30, 0, 0};
  cases.push_back(skew);
  Case skew_replica{"skewed_replicated_world8",
                    8,
                    R"({"experts": [[0], [1], [2, 3, 4], [3], [4], [5, 6, 7], [6], [7]]})",
                    {10, 3, 0, 25, 4, 4, 0, 9}};
  skew_replica.bias = {0, 0, 30, 0, 0, 30, 0, 0};
  cases.push_back(skew_replica);
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Cases, EpMoeLayerTest, ::testing::ValuesIn(Cases()),
                         [](const auto& param_info) { return param_info.param.name; });

TEST(EpDispatchPlanTest, SendOrderIsDestinationExpertToken) {
  auto placement = ExpertPlacement::FromJson(R"({"experts": [[1], [0], [1], [0, 1]]})", 1, 4, 2);
  ASSERT_TRUE(placement.ok());
  // 4 tokens, top-2: (0: 0,3) (1: 1,3) (2: 2,3) (3: 0,1)
  const std::vector<int32_t> ids = {0, 3, 1, 3, 2, 3, 0, 1};
  const EpSendPlan plan = BuildEpSendPlan(ids, 4, 2, *placement, 0, /*rank=*/1);
  // Expert 3 is on ranks 0 and 1; rank 1 starts its round robin at replica 1 % 2 = rank 1:
  // its three expert-3 rows go to ranks 1, 0, 1.
  EXPECT_EQ(plan.counts, (std::vector<int64_t>{0, 2, 0, 1, 2, 0, 1, 2}));
  EXPECT_EQ(plan.rank_offsets, (std::vector<int64_t>{0, 3, 8}));
  // Rank 0 segment: expert 1 (tokens 1, 3), expert 3 (token 1); rank 1: expert 0 (0, 3),
  // expert 2 (2), expert 3 (0, 2).
  EXPECT_EQ(plan.send_token, (std::vector<int32_t>{1, 3, 1, 0, 3, 2, 0, 2}));
  for (size_t i = 0; i < ids.size(); ++i) {
    EXPECT_EQ(plan.send_token[plan.combine_rows[i]], static_cast<int32_t>(i / 2));
  }
  // The receiver (rank 1) regroups (source, expert) arrival order into expert order.
  const std::vector<int64_t> counts = {2, 0, 1, 1,   // from rank 0: e0 x2, e2, e3
                                       2, 0, 1, 2};  // from rank 1: e0 x2, e2, e3 x2
  auto recv = BuildEpRecvPlan(counts, 2, 4, *placement, 0, 1);
  ASSERT_TRUE(recv.ok()) << recv.status();
  EXPECT_EQ(recv->expert_offsets, (std::vector<int32_t>{0, 4, 4, 6, 9}));
  EXPECT_EQ(recv->grouped_from_recv, (std::vector<int32_t>{0, 1, 4, 5, 2, 6, 3, 7, 8}));
  for (int32_t g = 0; g < 9; ++g) EXPECT_EQ(recv->recv_from_grouped[recv->grouped_from_recv[g]], g);
  // Rows for an expert rank 1 does not hold are a placement disagreement.
  const std::vector<int64_t> wrong = {0, 1, 0, 0, 0, 0, 0, 0};
  EXPECT_EQ(BuildEpRecvPlan(wrong, 2, 4, *placement, 0, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(EpMoeLayerErrorsTest, ARankMissingItsExpertWeightsFailsAndReleasesPeers) {
  auto layer = MakeLayer(8, kernels::DType::kF32, 3);
  auto placement = ExpertPlacement::Contiguous(1, 8, 4);
  ASSERT_TRUE(placement.ok());
  InProcessGroupOptions options;
  options.timeout = absl::Seconds(60);
  InProcessGroup group(4, options);
  std::vector<absl::Status> seen(4);
  group
      .Run([&](int rank, Communicator& comm) -> absl::Status {
        auto backend = kernels::MakeCpuBackend(1);
        MoeLayerWeights w = RankWeights(*layer, *placement, rank);
        if (rank == 2) w.experts[4] = {};  // lost one of its own experts
        absl::StatusOr<kernels::DeviceBuffer> tables = BuildExpertTables(*backend, w);
        if (!tables.ok()) return tables.status();
        std::vector<float> x(24 * 16, 0.5f), out(x.size());
        for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 7) - 3.0f;
        const ExpertParallelContext ep{&comm, &*placement};
        for (int call = 0; call < 3 && seen[rank].ok(); ++call) {
          seen[rank] = RunExpertParallelMoeLayer(*backend, layer->shape, w, 0, ep, x.data(), 16,
                                                 out.data(), nullptr, nullptr);
        }
        return seen[rank];
      })
      .IgnoreError();
  EXPECT_EQ(seen[2].code(), absl::StatusCode::kInternal) << seen[2];
  for (int r : {0, 1, 3}) EXPECT_FALSE(seen[r].ok()) << "rank " << r;
}

}  // namespace
}  // namespace moeserve::parallel
