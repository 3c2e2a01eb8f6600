#include "runtime/engine/ep_topology.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "parallel/comm/tcp_kv_store.h"

namespace moeserve::runtime {
namespace {

// An integer environment variable: nullopt-like -1 when unset; an error when set but not an int.
absl::StatusOr<int> IntEnv(const EnvLookup& env, const char* name) {
  const char* v = env(name);
  if (v == nullptr) return -1;
  int out = 0;
  if (!absl::SimpleAtoi(v, &out) || out < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("environment ", name, "=\"", v, "\" is not a non-negative integer"));
  }
  return out;
}

absl::Status CheckAddr(const std::string& addr) {
  if (addr.empty()) return absl::OkStatus();
  std::string host;
  int port = 0;
  absl::Status st = parallel::ParseHostPort(addr, &host, &port);
  if (!st.ok()) return absl::InvalidArgumentError(absl::StrCat("--dist-init-addr: ", st.message()));
  return absl::OkStatus();
}

struct LauncherEnv {
  const char* rank;
  const char* size;
  const char* name;
};
constexpr LauncherEnv kLaunchers[] = {
    {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OpenMPI"},
    {"PMI_RANK", "PMI_SIZE", "PMI"},
    {"SLURM_PROCID", "SLURM_NTASKS", "Slurm"},
};

}  // namespace

absl::StatusOr<EpTopology> ResolveEpTopology(const EpLaunchFlags& flags, const EnvLookup& env) {
  if (flags.ep_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("--ep-size must be >= 1, got ", flags.ep_size));
  }
  if (flags.nnodes < 1) {
    return absl::InvalidArgumentError(absl::StrCat("--nnodes must be >= 1, got ", flags.nnodes));
  }
  if (flags.node_rank < 0 || flags.node_rank >= flags.nnodes) {
    return absl::InvalidArgumentError(absl::StrCat("--node-rank ", flags.node_rank,
                                                   " is outside [0, --nnodes ", flags.nnodes,
                                                   "); number the nodes 0 .. nnodes-1"));
  }
  if (absl::Status st = CheckAddr(flags.dist_init_addr); !st.ok()) return st;
  EpTopology t;
  t.world_size = flags.ep_size;
  t.init_addr = flags.dist_init_addr;

  // 1. A rank this binary spawned.
  absl::StatusOr<int> spawned = IntEnv(env, kSpawnedRankEnv);
  if (!spawned.ok()) return spawned.status();
  if (*spawned >= 0) {
    if (*spawned >= t.world_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          kSpawnedRankEnv, "=", *spawned, " is outside [0, --ep-size ", t.world_size, ")"));
    }
    if (t.init_addr.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("a spawned rank needs the rendezvous address (", kDistInitAddrEnv, ")"));
    }
    t.rank = *spawned;
    t.ranks_per_node = t.world_size / flags.nnodes;
    t.source = "spawned";
    return t;
  }

  // 2. One process per rank from a launcher's environment.
  for (const LauncherEnv& l : kLaunchers) {
    absl::StatusOr<int> rank = IntEnv(env, l.rank);
    absl::StatusOr<int> size = IntEnv(env, l.size);
    if (!rank.ok()) return rank.status();
    if (!size.ok()) return size.status();
    if (*rank < 0 || *size <= 1) continue;  // absent, or one task: spawn as below
    if (*size != flags.ep_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          l.name, " started ", *size, " processes (", l.size, "=", *size, ") but --ep-size is ",
          flags.ep_size, ": with one process per rank they must match"));
    }
    if (*rank >= *size) {
      return absl::InvalidArgumentError(
          absl::StrCat(l.rank, "=", *rank, " is outside [0, ", l.size, "=", *size, ")"));
    }
    if (flags.nnodes > 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--nnodes with ", l.name,
                       ": the launcher already starts every rank; drop --nnodes / "
                       "--node-rank"));
    }
    if (t.init_addr.empty()) {
      const char* host = env("MASTER_ADDR");
      const char* port = env("MASTER_PORT");
      if (host != nullptr && port != nullptr) t.init_addr = absl::StrCat(host, ":", port);
      if (absl::Status st = CheckAddr(t.init_addr); !st.ok()) return st;
    }
    if (t.init_addr.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(l.name, " rank ", *rank, " of ", *size,
                       ": give --dist-init-addr host:port (rank 0's host and a free port), or set "
                       "MASTER_ADDR and MASTER_PORT"));
    }
    t.rank = *rank;
    t.ranks_per_node = 1;
    t.source = l.name;
    return t;
  }

  // 3. This process is its node's first rank and spawns the node's others.
  if (flags.ep_size % flags.nnodes != 0) {
    return absl::InvalidArgumentError(absl::StrCat("--ep-size ", flags.ep_size,
                                                   " is not a multiple of --nnodes ", flags.nnodes,
                                                   ": every node runs ep_size / nnodes ranks"));
  }
  if (flags.nnodes > 1 && t.init_addr.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--nnodes ", flags.nnodes,
                     " needs --dist-init-addr host:port (node 0's address and a free port)"));
  }
  t.ranks_per_node = flags.ep_size / flags.nnodes;
  t.rank = flags.node_rank * t.ranks_per_node;
  for (int r = t.rank + 1; r < t.rank + t.ranks_per_node; ++r) t.spawn_ranks.push_back(r);
  t.source = absl::StrCat("node ", flags.node_rank, " of ", flags.nnodes);
  return t;
}

}  // namespace moeserve::runtime
