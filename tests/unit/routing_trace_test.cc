// Routing traces (SequenceStep::routing, runtime/model/routing_trace.h) and the load recorder
// (runtime/engine/load_recorder.h).
//
// Oracles: logits with traces on are bitwise those with traces off; the rows counted from the
// traces equal the model's own expert-load counters (counted on the device by MoeAlign, a
// separate path); a decisive drift profile routes position p where its definition says; an
// expert-parallel group of 2 traces bitwise what world size 1 traces; the recorder's sums are
// recomputed here from constructed rank snapshots.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "parallel/moe/skew_profile.h"
#include "runtime/engine/load_recorder.h"
#include "runtime/model/model_loader.h"
#include "runtime/model/random_model.h"
#include "tests/golden/ep_harness.h"

namespace moeserve::runtime {
namespace {

using ep_test::SmallConfig;

std::vector<int32_t> Prompt(int64_t len, int salt) {
  std::vector<int32_t> p;
  for (int64_t t = 0; t < len; ++t)
    p.push_back(static_cast<int32_t>((salt * 131 + t * 17 + 5) % 300));
  return p;
}

struct ModelRun {
  std::vector<std::vector<float>> logits;  // per sequence, every step's rows
  std::vector<RoutingTrace> traces;        // per sequence
  std::vector<std::vector<int64_t>> routed_total;
};

// One prefill of all sequences, then `decode` greedy steps; traces for sequences in `traced`.
ModelRun RunModel(MixtralModel& model, kernels::Backend& backend,
                  const std::vector<std::vector<int32_t>>& prompts, const std::vector<bool>& traced,
                  int decode, std::shared_ptr<const parallel::SkewProfile> skew = nullptr) {
  auto pool = KvBlockPool::Create(backend, model.KvShape(8, 64));
  EXPECT_TRUE(pool.ok());
  const size_t n = prompts.size();
  std::vector<SequenceKv> kv(n);
  ModelRun run;
  run.logits.resize(n);
  run.traces.resize(n);
  std::vector<int32_t> next(n);
  for (int step = 0; step <= decode; ++step) {
    std::vector<SequenceStep> batch;
    for (size_t i = 0; i < n; ++i) {
      SequenceStep s;
      s.new_tokens = step == 0 ? prompts[i] : std::vector<int32_t>{next[i]};
      s.kv = &kv[i];
      s.all_logits = true;
      s.skew = skew;
      if (traced[i]) s.routing = &run.traces[i];
      batch.push_back(std::move(s));
    }
    StepOutput out;
    const absl::Status st = model.Forward(absl::MakeSpan(batch), *pool, &out);
    EXPECT_TRUE(st.ok()) << st;
    if (!st.ok()) return run;
    for (size_t i = 0; i < n; ++i) {
      run.logits[i].insert(run.logits[i].end(), out.row(out.row_offsets[i]),
                           out.row(out.row_offsets[i + 1]));
      const float* last = out.last_row(static_cast<int64_t>(i));
      next[i] = static_cast<int32_t>(std::max_element(last, last + out.vocab) - last);
    }
  }
  for (SequenceKv& k : kv) pool->Release(k);
  run.routed_total = model.ep_stats().routed_total;
  return run;
}

bool Bitwise(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

class RoutingTraceTest : public ::testing::Test {
 protected:
  std::unique_ptr<LoadedModel> Fresh() {
    auto loaded = LoadRandomModel(SmallConfig(), 11, backend_.get());
    EXPECT_TRUE(loaded.ok()) << loaded.status();
    return loaded.ok() ? *std::move(loaded) : nullptr;
  }
  std::unique_ptr<kernels::Backend> backend_ = kernels::MakeCpuBackend(1);
};

TEST_F(RoutingTraceTest, TracesLeaveLogitsBitwiseAndCountWhatTheDeviceCounted) {
  const std::vector<std::vector<int32_t>> prompts = {Prompt(20, 1), Prompt(7, 2)};
  const int decode = 3;
  auto off_model = Fresh(), on_model = Fresh(), half_model = Fresh();
  const ModelRun off = RunModel(*off_model->model, *backend_, prompts, {false, false}, decode);
  const ModelRun on = RunModel(*on_model->model, *backend_, prompts, {true, true}, decode);
  const ModelRun half = RunModel(*half_model->model, *backend_, prompts, {true, false}, decode);
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_TRUE(Bitwise(off.logits[i], on.logits[i])) << i;
    EXPECT_TRUE(Bitwise(off.logits[i], half.logits[i])) << i;
  }
  EXPECT_EQ(half.traces[1].num_positions(), 0);
  const ModelConfig c = SmallConfig();
  const int64_t L = c.num_hidden_layers, k = c.num_experts_per_tok;
  std::vector<std::vector<int64_t>> counted(L, std::vector<int64_t>(c.num_local_experts, 0));
  for (size_t i = 0; i < prompts.size(); ++i) {
    const RoutingTrace& t = on.traces[i];
    ASSERT_EQ(t.num_layers, L);
    ASSERT_EQ(t.top_k, k);
    ASSERT_EQ(t.num_positions(), static_cast<int64_t>(prompts[i].size()) + decode);
    EXPECT_TRUE(std::equal(prompts[i].begin(), prompts[i].end(), t.tokens.begin()));
    if (i == 0) {
      EXPECT_EQ(half.traces[0].experts, t.experts);  // whether a neighbour is traced or not
    }
    for (int64_t p = 0; p < t.num_positions(); ++p) {
      for (int64_t l = 0; l < L; ++l) {
        const int32_t* e = t.experts.data() + (p * L + l) * k;
        const float* w = t.weights.data() + (p * L + l) * k;
        double sum = 0;
        for (int64_t j = 0; j < k; ++j) {
          ASSERT_GE(e[j], 0);
          ASSERT_LT(e[j], c.num_local_experts);
          ++counted[l][e[j]];
          sum += w[j];
          if (j > 0) {
            EXPECT_GE(w[j - 1], w[j]);  // best first
          }
        }
        EXPECT_NEAR(sum, 1.0, 1e-5);
      }
    }
  }
  EXPECT_EQ(counted, on.routed_total);
}

TEST_F(RoutingTraceTest, DecisiveDriftRoutesEachPositionByItsDefinition) {
  // drift:2:4:1000: position p gets +1000 on experts (w*2 + i) mod 8, i < 2, w = p / 4.
  auto model = Fresh();
  auto profile = parallel::ParseSkewProfile("drift:2:4:1000");
  ASSERT_TRUE(profile.ok());
  const ModelRun run = RunModel(*model->model, *backend_, {Prompt(13, 3)}, {true}, 4,
                                std::make_shared<const parallel::SkewProfile>(*profile));
  const RoutingTrace& t = run.traces[0];
  ASSERT_EQ(t.num_positions(), 13 + 4);
  for (int64_t p = 0; p < t.num_positions(); ++p) {
    const int32_t w = static_cast<int32_t>(p / 4);
    const std::vector<int32_t> want = {(w * 2) % 8, (w * 2 + 1) % 8};
    for (int64_t l = 0; l < t.num_layers; ++l) {
      std::vector<int32_t> got(t.experts.begin() + (p * t.num_layers + l) * 2,
                               t.experts.begin() + (p * t.num_layers + l) * 2 + 2);
      std::sort(got.begin(), got.end());
      EXPECT_EQ(got, want) << "position " << p << " layer " << l;
    }
  }
}

TEST_F(RoutingTraceTest, ExpertParallelTracesAreWorldSizeOnes) {
  const ModelConfig config = SmallConfig();
  std::vector<ep_test::Script> scripts;
  for (int i = 0; i < 3; ++i) scripts.push_back({Prompt(5 + 4 * i, i), 4, 0});
  auto make = [&](kernels::Backend* backend, const ModelLoadOptions& options) {
    return LoadRandomModel(config, 11, backend, options);
  };
  ep_test::GroupOptions one;
  one.trace_routing = true;
  auto oracle = ep_test::RunGroup(make, scripts, one);
  ASSERT_TRUE(oracle.ok()) << oracle.status();
  auto placement = parallel::ExpertPlacement::Contiguous(config.num_hidden_layers, 8, 2);
  ASSERT_TRUE(placement.ok());
  ep_test::GroupOptions two = one;
  two.world = 2;
  two.placement = &*placement;
  two.assign = [](size_t i) { return static_cast<int>(i % 2); };
  auto group = ep_test::RunGroup(make, scripts, two);
  ASSERT_TRUE(group.ok()) << group.status();
  for (size_t i = 0; i < scripts.size(); ++i) {
    const RoutingTrace &a = oracle->sequences[i].routing, &b = group->sequences[i].routing;
    EXPECT_EQ(a.num_positions(), static_cast<int64_t>(scripts[i].prompt.size()) + 3) << i;
    EXPECT_EQ(a.tokens, b.tokens) << i;
    EXPECT_EQ(a.experts, b.experts) << i;
    EXPECT_EQ(0, std::memcmp(a.weights.data(), b.weights.data(), a.weights.size() * 4)) << i;
    EXPECT_EQ(a.weights.size(), b.weights.size());
  }
}

parallel::EpRankStats RankStep(int rank, int64_t step, std::vector<std::vector<int64_t>> routed,
                               std::vector<std::vector<int64_t>> computed) {
  parallel::EpRankStats s;
  s.rank = rank;
  s.world_size = 2;
  s.steps = step;
  s.routed_last_step = std::move(routed);
  s.computed_last_step = std::move(computed);
  return s;
}

TEST(LoadRecorderTest, MergesRanksPerStepAndKeepsABoundedRing) {
  LoadRecorder rec(/*layers=*/1, /*experts=*/2, /*world=*/2, /*max_steps=*/2);
  rec.Record(RankStep(0, 1, {{5, 5}}, {{5, 0}}));  // not recording: ignored
  EXPECT_TRUE(rec.Dump().steps.empty());
  rec.Start();
  for (int64_t step = 1; step <= 3; ++step) {
    // rank 0 routes (step, 1), rank 1 routes (2, step); rank r holds expert r.
    rec.Record(RankStep(0, step, {{step, 1}}, {{step + 2, 0}}));
    rec.Record(RankStep(1, step, {{2, step}}, {{0, 1 + step}}));
  }
  RecorderDump d = rec.Dump();
  EXPECT_TRUE(d.recording);
  EXPECT_EQ(d.steps_dropped, 1);
  ASSERT_EQ(d.steps.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    const int64_t step = static_cast<int64_t>(i) + 2;
    EXPECT_EQ(d.steps[i].step, step);
    EXPECT_EQ(d.steps[i].expert_tokens, (std::vector<std::vector<int64_t>>{{step + 2, 1 + step}}));
    EXPECT_EQ(d.steps[i].rank_rows, (std::vector<std::vector<int64_t>>{{step + 2, 1 + step}}));
  }
  rec.Stop();
  rec.Record(RankStep(0, 4, {{1, 1}}, {{1, 0}}));
  EXPECT_EQ(rec.Dump().steps.size(), 2u);
  EXPECT_FALSE(rec.Dump().recording);
  rec.Start();
  EXPECT_TRUE(rec.Dump().steps.empty());
  EXPECT_EQ(rec.Dump().steps_dropped, 0);
}

}  // namespace
}  // namespace moeserve::runtime
