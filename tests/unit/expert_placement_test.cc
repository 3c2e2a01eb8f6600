// ExpertPlacement: the --ep-size split, JSON files with replicas and per-layer overrides, the
// validation messages a user sees, and the replica choice.
#include "parallel/placement/expert_placement.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moeserve::parallel {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ExpertPlacementTest, ContiguousSplitsExpertsEvenly) {
  for (int ep : {1, 2, 4, 8}) {
    auto p = ExpertPlacement::Contiguous(3, 8, ep);
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_EQ(p->world_size(), ep);
    EXPECT_EQ(p->num_layers(), 3);
    EXPECT_EQ(p->num_experts(), 8);
    const int per_rank = 8 / ep;
    for (int64_t l = 0; l < 3; ++l) {
      for (int64_t e = 0; e < 8; ++e) {
        EXPECT_THAT(p->replicas(l, e), ElementsAre(static_cast<int>(e / per_rank)));
      }
    }
    for (int r = 0; r < ep; ++r) {
      std::vector<int64_t> expected;
      for (int e = r * per_rank; e < (r + 1) * per_rank; ++e) expected.push_back(e);
      EXPECT_EQ(p->LocalExperts(r, 1), expected);
      EXPECT_EQ(p->ExpertsOf(r).size(), static_cast<size_t>(3 * per_rank));
    }
  }
}

TEST(ExpertPlacementTest, MoreRanksThanExpertsReplicatesEachExpert) {
  auto p = ExpertPlacement::Contiguous(2, 4, 8);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_THAT(p->replicas(0, 0), ElementsAre(0, 1));
  EXPECT_THAT(p->replicas(1, 3), ElementsAre(6, 7));
  EXPECT_THAT(p->LocalExperts(5, 0), ElementsAre(2));
}

TEST(ExpertPlacementTest, IndivisibleEpSizeSplitsUnevenly) {
  // 8 experts over 3 ranks: 3, 3, 2, contiguous, in every layer.
  auto p = ExpertPlacement::Contiguous(32, 8, 3);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->IsUnevenSplit());
  EXPECT_THAT(p->LocalExperts(0, 0), ElementsAre(0, 1, 2));
  EXPECT_THAT(p->LocalExperts(1, 5), ElementsAre(3, 4, 5));
  EXPECT_THAT(p->LocalExperts(2, 31), ElementsAre(6, 7));
  // Every expert count from 1 to 8 ranks: each expert on exactly one rank, sizes differ by <= 1.
  for (int n = 1; n <= 8; ++n) {
    auto q = ExpertPlacement::Contiguous(2, 8, n);
    ASSERT_TRUE(q.ok()) << n;
    size_t lo = 8, hi = 0;
    for (int r = 0; r < n; ++r) {
      lo = std::min(lo, q->LocalExperts(r, 0).size());
      hi = std::max(hi, q->LocalExperts(r, 0).size());
    }
    EXPECT_LE(hi - lo, 1u) << n;
    EXPECT_EQ(q->IsUnevenSplit(), 8 % n != 0) << n;
    for (int64_t e = 0; e < 8; ++e) EXPECT_EQ(q->replicas(1, e).size(), 1u) << n;
  }
}

TEST(ExpertPlacementTest, MoreRanksThanExpertsNotAMultipleIsAClearError) {
  auto p = ExpertPlacement::Contiguous(32, 8, 12);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(p.status().message()),
              HasSubstr("--ep-size 12 is more than num_local_experts=8"));
  EXPECT_THAT(std::string(p.status().message()), HasSubstr("placement file"));
  EXPECT_FALSE(ExpertPlacement::Contiguous(32, 8, 0).ok());
}

TEST(ExpertPlacementTest, JsonWithReplicasMakesAnIndivisibleSizeWork) {
  // 8 experts on 3 ranks: experts 0 and 7 are replicated so every rank computes a fair share.
  const std::string json = R"({
    "world_size": 3,
    "experts": [[0, 2], [0], [0], [1], [1], [1], [2], [2, 1]],
    "layers": {"1": [[2], [2], [2], [1], [1], [0], [0], [0]]}
  })";
  auto p = ExpertPlacement::FromJson(json, 2, 8, 3);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_THAT(p->replicas(0, 0), ElementsAre(0, 2));
  EXPECT_THAT(p->replicas(0, 7), ElementsAre(1, 2));  // sorted
  EXPECT_THAT(p->LocalExperts(2, 0), ElementsAre(0, 6, 7));
  EXPECT_THAT(p->LocalExperts(2, 1), ElementsAre(0, 1, 2));  // the override
  EXPECT_TRUE(p->Holds(1, 0, 7));
  EXPECT_FALSE(p->Holds(0, 0, 7));
  // Round trip through the canonical form.
  auto again = ExpertPlacement::FromJson(p->ToJson(), 2, 8, 3);
  ASSERT_TRUE(again.ok()) << again.status() << "\n" << p->ToJson();
  for (int64_t l = 0; l < 2; ++l) {
    for (int64_t e = 0; e < 8; ++e) EXPECT_EQ(again->replicas(l, e), p->replicas(l, e));
  }
}

TEST(ExpertPlacementTest, JsonFileIsReadAndNamedInErrors) {
  const std::string path = testing::TempDir() + "/moeserve_placement.json";
  {
    std::ofstream out(path);
    out << R"({"experts": [[0], [1], [0]]})";
  }
  auto p = ExpertPlacement::FromJsonFile(path, 4, 3, 2);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_THAT(p->LocalExperts(0, 3), ElementsAre(0, 2));
  auto bad = ExpertPlacement::FromJsonFile(path, 4, 4, 2);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr(path));
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("4 rank lists"));
  EXPECT_EQ(ExpertPlacement::FromJsonFile(path + ".missing", 4, 3, 2).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(ExpertPlacementTest, ValidationMessages) {
  const std::map<std::string, std::string> cases = {
      {R"({"experts": [[0], [2]]})", "names rank 2, outside [0, 2)"},
      {R"({"experts": [[0], []]})", "layer 0 expert 1 is held by no rank"},
      {R"({"experts": [[0, 0], [1]]})", "lists rank 0 twice"},
      {R"({"world_size": 4, "experts": [[0], [1]]})", "does not match --ep-size 2"},
      {R"({"layers": {"0": [[0], [1]]}})", "layer 1 has no placement"},
      {R"({"experts": [[0], [1]], "layers": {"7": [[0], [1]]}})", "is not a layer in [0, 2)"},
      {R"({"experts": [[0], ["one"]]})", "is not an integer"},
      {R"({"expert": [[0], [1]]})", "unknown key \"expert\""},
      {R"({"experts": [[0], [1]],)", "not valid JSON"},
      // A number that overflows a double used to throw out of FromJson and abort the process.
      {R"({"world_size": 1e999, "experts": [[0], [1]]})", "not valid JSON"},
      {R"({"experts": [[0], [1e999]]})", "not valid JSON"},
      // Integers that do not fit an int are not silently truncated to a valid rank.
      {R"({"experts": [[0], [4294967297]]})", "rank 4294967297"},
      {R"({"world_size": 18446744073709551618, "experts": [[0], [1]]})", "does not match"},
      {R"({"world_size": 4294967298, "experts": [[0], [1]]})", "does not match --ep-size 2"},
  };
  for (const auto& [json, message] : cases) {
    auto p = ExpertPlacement::FromJson(json, 2, 2, 2, "p.json");
    ASSERT_FALSE(p.ok()) << json;
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << json;
    EXPECT_THAT(std::string(p.status().message()), HasSubstr(message)) << json;
    EXPECT_THAT(std::string(p.status().message()), HasSubstr("p.json")) << json;
  }
}

TEST(ExpertPlacementTest, ReplicaChoiceSplitsRowsEvenlyAndDeterministically) {
  auto p = ExpertPlacement::FromJson(R"({"experts": [[0, 1, 3], [2]]})", 1, 2, 4);
  ASSERT_TRUE(p.ok()) << p.status();
  for (int source = 0; source < 4; ++source) {
    std::map<int, int> rows_per_replica;
    for (int64_t ordinal = 0; ordinal < 30; ++ordinal) {
      const int r = p->ReplicaFor(0, 0, source, ordinal);
      EXPECT_EQ(r, p->ReplicaFor(0, 0, source, ordinal));  // a pure function
      ++rows_per_replica[r];
    }
    EXPECT_EQ(rows_per_replica, (std::map<int, int>{{0, 10}, {1, 10}, {3, 10}}));
    // Different sources start on different replicas.
    EXPECT_EQ(p->ReplicaFor(0, 0, source, 0), p->replicas(0, 0)[source % 3]);
    EXPECT_EQ(p->ReplicaFor(0, 1, source, 5), 2);  // single holder
  }
}

TEST(ExpertPlacementTest, SummaryCountsReplicas) {
  auto p = ExpertPlacement::FromJson(R"({"experts": [[0, 1], [1], [0]]})", 2, 3, 2);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->Summary(),
            "ep_size=2, 3 experts x 2 layers, 4..4 (layer, expert) pairs per rank, 2 replicated");
}

}  // namespace
}  // namespace moeserve::parallel
