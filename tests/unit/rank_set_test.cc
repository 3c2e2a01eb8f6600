// LoadRankSet's start-up validation of the expert-parallel flags.
#include "runtime/engine/rank_set.h"

#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moeserve::runtime {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

// --placement with --ep-size 1 used to be ignored silently (the user thinks experts are placed as
// the file says). It is an error at start-up, before any weights are read, whether or not the
// file exists.
TEST(RankSetTest, PlacementWithOneRankIsAnError) {
  const std::string path = ::testing::TempDir() + "/moeserve_rank_set_placement.json";
  std::ofstream(path)
      << R"({"world_size": 1, "experts": [[0], [0], [0], [0], [0], [0], [0], [0]]})";
  for (const std::string& file : {path, path + ".missing"}) {
    RankSetOptions options;
    options.ep_size = 1;
    options.placement_file = file;
    options.threads = 1;
    absl::StatusOr<RankSet> set = LoadRankSet(options);
    ASSERT_FALSE(set.ok()) << file;
    EXPECT_EQ(set.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(set.status().message()),
                AllOf(HasSubstr("--placement"), HasSubstr(file), HasSubstr("--ep-size")));
  }
}

TEST(RankSetTest, MissingPlacementFileIsAnError) {
  RankSetOptions options;
  options.ep_size = 2;
  options.placement_file = ::testing::TempDir() + "/moeserve_no_such_placement.json";
  options.threads = 2;
  absl::StatusOr<RankSet> set = LoadRankSet(options);
  ASSERT_FALSE(set.ok());
  EXPECT_EQ(set.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(set.status().message()), HasSubstr(options.placement_file));
}

TEST(RankSetTest, OneRankWithoutPlacementLoads) {
  RankSetOptions options;
  options.threads = 1;
  absl::StatusOr<RankSet> set = LoadRankSet(options);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->ranks.size(), 1u);
}

}  // namespace
}  // namespace moeserve::runtime
