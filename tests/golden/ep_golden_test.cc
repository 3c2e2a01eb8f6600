// Proof of equivalence for expert parallelism on the Hugging Face golden fixtures: world sizes
// 1, 2, 3, 4, 6 and 8 (contiguous placements, replicated experts, per-layer placements and
// skewed routing) give logits and greedy tokens bitwise identical to the plain world-size-1
// model, which itself reproduces HF transformers' greedy continuation (checked here too).
//
// Each rank is a thread with its own model (only its experts loaded), KV pool and subset of the
// prompts; with 3 prompts and up to 8 ranks most ranks have no sequences and join every
// exchange with zero tokens. Prompts start at different steps, so prefill and decode mix.
// Per backend (ep_harness.h): every CUDA case is an expected skip until a device communicator
// exists.
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/golden/ep_harness.h"

namespace moeserve::runtime {
namespace {

using ep_test::GroupOptions;
using ep_test::GroupRun;
using ep_test::Script;

struct Fixture {
  std::string dir;
  ModelConfig config;
  std::vector<Script> scripts;
  std::vector<std::vector<int32_t>> reference_greedy;  // HF (upcast for bf16)
};

Fixture LoadFixture(const std::string& name) {
  Fixture f;
  f.dir = backend_test::TestDataDir() + "/golden/" + name;
  std::ifstream in(f.dir + "/golden.json");
  std::stringstream ss;
  ss << in.rdbuf();
  const nlohmann::json meta = nlohmann::json::parse(ss.str());
  const bool bf16 = meta["dtype"] == "bfloat16";
  int64_t start = 0;
  for (const auto& p : meta["prompts"]) {
    const auto greedy = p[bf16 ? "upcast_greedy" : "greedy"].get<std::vector<int32_t>>();
    f.scripts.push_back(
        {p["input_ids"].get<std::vector<int32_t>>(), static_cast<int64_t>(greedy.size()), start});
    f.reference_greedy.push_back(greedy);
    start += 3;  // staggered arrivals
  }
  f.config = *LoadModelConfig(f.dir);
  return f;
}

ep_test::ModelFactory FromDir(const std::string& dir) {
  return [dir](kernels::Backend* backend, const ModelLoadOptions& options) {
    return LoadModelDir(dir, backend, options);
  };
}

struct EpCase {
  std::string fixture;
  int world = 1;
  std::string placement_json;  // empty: contiguous --ep-size split
  bool skew = false;
  std::string label;
};

// Expert 1 gets +3 on its router logit in every layer: it is in (nearly) every token's top 2.
parallel::RouterSkew Skew(bool on) {
  return on ? parallel::RouterSkew{{1}, 3.0f} : parallel::RouterSkew{};
}

// The world-size-1 oracle of a fixture, computed once per (fixture, skew).
const GroupRun& Oracle(const Fixture& f, bool skew) {
  static std::map<std::pair<std::string, bool>, GroupRun> cache;
  auto key = std::make_pair(f.dir, skew);
  auto it = cache.find(key);
  if (it == cache.end()) {
    GroupOptions o;
    o.skew = Skew(skew);
    absl::StatusOr<GroupRun> run = ep_test::RunGroup(FromDir(f.dir), f.scripts, o);
    EXPECT_TRUE(run.ok()) << run.status();
    it = cache.emplace(key, run.ok() ? *std::move(run) : GroupRun{}).first;
  }
  return it->second;
}

bool BitwiseEqual(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// (case, backend)
class EpGoldenTest : public ::testing::TestWithParam<std::tuple<EpCase, std::string>> {};

TEST_P(EpGoldenTest, BitwiseIdenticalToWorldSizeOne) {
  const EpCase& c = std::get<0>(GetParam());
  const Fixture f = LoadFixture(c.fixture);
  MOESERVE_SKIP_EP_ON_CUDA(std::get<1>(GetParam()), f.dir);
  const GroupRun& oracle = Oracle(f, c.skew);
  ASSERT_EQ(oracle.sequences.size(), f.scripts.size());
  if (!c.skew) {  // the oracle itself against HF transformers
    for (size_t i = 0; i < f.scripts.size(); ++i) {
      ASSERT_EQ(oracle.sequences[i].tokens, f.reference_greedy[i]) << "prompt " << i;
    }
  }

  const int64_t layers = f.config.num_hidden_layers, experts = f.config.num_local_experts;
  absl::StatusOr<parallel::ExpertPlacement> placement =
      c.placement_json.empty()
          ? parallel::ExpertPlacement::Contiguous(layers, experts, c.world)
          : parallel::ExpertPlacement::FromJson(c.placement_json, layers, experts, c.world);
  ASSERT_TRUE(placement.ok()) << placement.status();
  GroupOptions o;
  o.world = c.world;
  o.placement = &*placement;
  o.assign = ep_test::Spread(c.world);
  o.skew = Skew(c.skew);
  absl::StatusOr<GroupRun> run = ep_test::RunGroup(FromDir(f.dir), f.scripts, o);
  ASSERT_TRUE(run.ok()) << run.status();

  for (size_t i = 0; i < f.scripts.size(); ++i) {
    const auto& got = run->sequences[i];
    const auto& want = oracle.sequences[i];
    EXPECT_EQ(got.rank, ep_test::Spread(c.world)(i));
    EXPECT_TRUE(BitwiseEqual(got.prompt_logits, want.prompt_logits)) << "prompt " << i;
    ASSERT_EQ(got.step_logits.size(), want.step_logits.size());
    for (size_t s = 0; s < got.step_logits.size(); ++s) {
      EXPECT_TRUE(BitwiseEqual(got.step_logits[s], want.step_logits[s]))
          << "prompt " << i << " decode step " << s;
    }
    EXPECT_EQ(got.tokens, want.tokens) << "prompt " << i;
  }

  // Statistics: every row routed is computed exactly once (dropless), and the group's expert
  // load equals the oracle's.
  std::vector<parallel::EpRankStats> stats = run->stats;
  const parallel::EpStats group = parallel::AggregateEpStats(stats);
  EXPECT_EQ(group.expert_tokens_total, oracle.stats[0].routed_total);
  int64_t routed = 0, computed = 0;
  for (const auto& r : stats) {
    for (int64_t l = 0; l < layers; ++l) {
      for (int64_t e = 0; e < experts; ++e) {
        routed += r.routed_total[l][e];
        computed += r.computed_total[l][e];
        if (!placement->Holds(r.rank, l, e)) {
          EXPECT_EQ(r.computed_total[l][e], 0);
        }
      }
    }
  }
  EXPECT_EQ(routed, computed);
  if (c.skew) {
    EXPECT_GT(group.expert_imbalance_total, 2.0);
  }

  // Each rank read exactly the expert tensors its placement gives it.
  for (int r = 0; r < c.world; ++r) {
    EXPECT_EQ(ep_test::ExpertTensorsIn(run->loaded[r]), ep_test::ExpertTensorNames(*placement, r))
        << "rank " << r;
  }
}

std::vector<EpCase> Cases() {
  std::vector<EpCase> cases;
  for (const char* fixture : {"fp32_window", "bf16", "bf16_window"}) {
    for (int w : {1, 2, 4, 8}) cases.push_back({fixture, w, "", false, "contiguous"});
    // 8 experts on 3 ranks: indivisible, made to work by replicating experts 0 and 7.
    cases.push_back({fixture, 3, R"({"experts": [[0, 2], [0], [0], [1], [1], [1], [2], [2, 1]]})",
                     false, "replicas"});
    // The skewed expert 1 replicated on every rank of 4.
    cases.push_back({fixture, 4,
                     R"({"experts": [[0], [0, 1, 2, 3], [1], [1], [2], [2], [3], [3]]})", true,
                     "skew_replicated"});
    cases.push_back({fixture, 8, "", true, "skew"});
  }
  // 6 experts, 3 layers, tied embeddings: 4 and 8 ranks only with explicit placements.
  for (int w : {1, 2, 3}) cases.push_back({"fp32_odd", w, "", false, "contiguous"});
  cases.push_back({"fp32_odd", 4,
                   R"({"experts": [[0], [0, 3], [1], [1], [2], [3, 2]],
                       "layers": {"1": [[3], [2], [1], [0], [0, 1], [2, 3]]}})",
                   false, "replicas_per_layer"});
  cases.push_back(
      {"fp32_odd", 8, R"({"experts": [[0, 6], [1, 7], [2], [3], [4], [5]]})", false, "replicas"});
  cases.push_back({"fp32_odd", 6, "", true, "skew"});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, EpGoldenTest,
                         ::testing::Combine(::testing::ValuesIn(Cases()),
                                            ::testing::ValuesIn(backend_test::BackendNames())),
                         [](const auto& param_info) {
                           const EpCase& c = std::get<0>(param_info.param);
                           return c.fixture + "_world" + std::to_string(c.world) + "_" + c.label +
                                  "_" + std::get<1>(param_info.param);
                         });

}  // namespace
}  // namespace moeserve::runtime
