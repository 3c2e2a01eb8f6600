// Where a process sits in a multi-process expert-parallel group, from flags and environment:
// every rank of the group is found exactly once (nodes x spawned ranks, and launcher
// environments), and every inconsistent combination is an InvalidArgument naming the flag.
#include "runtime/engine/ep_topology.h"

#include <map>
#include <set>
#include <string>

#include "gtest/gtest.h"

namespace moeserve::runtime {
namespace {

EnvLookup Env(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const char* name) -> const char* {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  };
}

// 2 nodes x 2 ranks: each node's process is its first rank and spawns the second; every rank
// 0..3 appears exactly once over the node processes and the spawned ones.
TEST(EpTopology, NodesTimesSpawnedRanksCoverTheWorldOnce) {
  std::multiset<int> seen;
  for (int node = 0; node < 2; ++node) {
    EpLaunchFlags f{
        .ep_size = 4, .nnodes = 2, .node_rank = node, .dist_init_addr = "10.0.0.1:29500"};
    absl::StatusOr<EpTopology> t = ResolveEpTopology(f, Env({}));
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->world_size, 4);
    EXPECT_EQ(t->ranks_per_node, 2);
    EXPECT_EQ(t->hosts_store(), node == 0);
    seen.insert(t->rank);
    for (int r : t->spawn_ranks) {
      seen.insert(r);
      // The spawned process finds its rank from the spawner's environment.
      absl::StatusOr<EpTopology> child =
          ResolveEpTopology(f, Env({{kSpawnedRankEnv, std::to_string(r)}}));
      ASSERT_TRUE(child.ok()) << child.status();
      EXPECT_EQ(child->rank, r);
      EXPECT_TRUE(child->spawn_ranks.empty());
      EXPECT_EQ(child->init_addr, "10.0.0.1:29500");
    }
  }
  EXPECT_EQ(seen, (std::multiset<int>{0, 1, 2, 3}));
}

TEST(EpTopology, OneNodeSpawnsTheOthersAndPicksItsOwnPort) {
  absl::StatusOr<EpTopology> t = ResolveEpTopology({.ep_size = 4}, Env({}));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->rank, 0);
  EXPECT_EQ(t->spawn_ranks, (std::vector<int>{1, 2, 3}));
  EXPECT_TRUE(t->init_addr.empty());
}

TEST(EpTopology, LauncherEnvironmentsGiveOneProcessPerRank) {
  for (const auto& [rank_var, size_var] : std::vector<std::pair<std::string, std::string>>{
           {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"},
           {"PMI_RANK", "PMI_SIZE"},
           {"SLURM_PROCID", "SLURM_NTASKS"}}) {
    SCOPED_TRACE(rank_var);
    absl::StatusOr<EpTopology> t = ResolveEpTopology({.ep_size = 4, .dist_init_addr = "h:1234"},
                                                     Env({{rank_var, "3"}, {size_var, "4"}}));
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->rank, 3);
    EXPECT_TRUE(t->spawn_ranks.empty());
    // MASTER_ADDR / MASTER_PORT stand in for --dist-init-addr.
    t = ResolveEpTopology({.ep_size = 4}, Env({{rank_var, "0"},
                                               {size_var, "4"},
                                               {"MASTER_ADDR", "node0"},
                                               {"MASTER_PORT", "29500"}}));
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->init_addr, "node0:29500");
    EXPECT_TRUE(t->hosts_store());
  }
  // A single task of an allocation spawns its ranks itself.
  absl::StatusOr<EpTopology> t =
      ResolveEpTopology({.ep_size = 2}, Env({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}}));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->spawn_ranks, (std::vector<int>{1}));
}

void ExpectInvalid(const EpLaunchFlags& f, std::map<std::string, std::string> env,
                   const std::string& mention) {
  absl::StatusOr<EpTopology> t = ResolveEpTopology(f, Env(std::move(env)));
  ASSERT_FALSE(t.ok()) << mention;
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find(mention), std::string::npos) << t.status();
}

TEST(EpTopology, InconsistentFlagsAreClearErrors) {
  ExpectInvalid({.ep_size = 4, .nnodes = 2, .node_rank = 2, .dist_init_addr = "h:1"}, {},
                "--node-rank 2 is outside [0, --nnodes 2)");
  ExpectInvalid({.ep_size = 4, .nnodes = 2, .node_rank = -1, .dist_init_addr = "h:1"}, {},
                "--node-rank -1");
  ExpectInvalid({.ep_size = 3, .nnodes = 2, .dist_init_addr = "h:1"}, {},
                "--ep-size 3 is not a multiple of --nnodes 2");
  ExpectInvalid({.ep_size = 4, .nnodes = 2}, {}, "needs --dist-init-addr");
  ExpectInvalid({.ep_size = 2, .dist_init_addr = "nohost"}, {}, "--dist-init-addr");
  ExpectInvalid({.ep_size = 2, .dist_init_addr = "h:99999"}, {}, "--dist-init-addr");
  ExpectInvalid({.ep_size = 2, .dist_init_addr = "h:1"},
                {{"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", "4"}},
                "OpenMPI started 4 processes (OMPI_COMM_WORLD_SIZE=4) but --ep-size is 2");
  ExpectInvalid({.ep_size = 4}, {{"PMI_RANK", "1"}, {"PMI_SIZE", "4"}}, "give --dist-init-addr");
  ExpectInvalid({.ep_size = 4, .dist_init_addr = "h:1"}, {{"SLURM_PROCID", "x"}},
                "SLURM_PROCID=\"x\"");
  ExpectInvalid({.ep_size = 2, .dist_init_addr = "h:1"}, {{kSpawnedRankEnv, "2"}},
                "outside [0, --ep-size 2)");
}

}  // namespace
}  // namespace moeserve::runtime
