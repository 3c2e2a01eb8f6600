// Where this process sits in an expert-parallel group whose ranks are PROCESSES (--ep-launch
// processes): its global rank, the world size, which ranks it starts itself, and where the ranks
// meet (the TCP rendezvous). Pure: flags and environment in, layout out (ep_topology_test.cc).
//
// Three ways a process learns its rank, checked in this order:
//  1. Spawned by a node's first process: MOESERVE_EP_SPAWNED_RANK (internal; set by the spawner,
//     together with MOESERVE_DIST_INIT_ADDR).
//  2. A launcher's environment, one process per rank: OpenMPI (OMPI_COMM_WORLD_RANK/SIZE), MPICH
//     / Intel MPI / PMI (PMI_RANK/PMI_SIZE), Slurm srun (SLURM_PROCID/SLURM_NTASKS). A size of 1
//     is ignored (a single task of an allocation: this process spawns as in 3.). The rendezvous
//     is --dist-init-addr, else MASTER_ADDR:MASTER_PORT.
//  3. --nnodes / --node-rank (SGLang / vLLM convention): every node runs one process, which
//     spawns the node's other ranks; ranks are numbered node by node (node k holds ranks
//     k*L .. k*L+L-1, L = ep_size / nnodes). One node needs no --dist-init-addr (rank 0 picks a
//     free loopback port); several do.
// Global rank 0 runs the rendezvous store and the HTTP / gRPC front ends.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace moeserve::runtime {

struct EpLaunchFlags {
  int ep_size = 1;
  int nnodes = 1;
  int node_rank = 0;
  std::string dist_init_addr;  // "host:port" or empty
};

struct EpTopology {
  int world_size = 1;
  int rank = 0;                  // this process's global rank
  int ranks_per_node = 1;        // processes per node
  std::vector<int> spawn_ranks;  // global ranks this process starts as its child processes
  // The rendezvous "host:port"; empty: this process is rank 0 of a one-node group and picks a
  // free port on 127.0.0.1 (and passes it to the ranks it spawns).
  std::string init_addr;
  std::string source;  // how the rank was found, for the start-up log ("--nnodes", "Slurm", ...)

  bool hosts_store() const { return rank == 0; }
};

// Returns the value of an environment variable or null (getenv in production, a map in tests).
using EnvLookup = std::function<const char*(const char*)>;

constexpr char kSpawnedRankEnv[] = "MOESERVE_EP_SPAWNED_RANK";
constexpr char kDistInitAddrEnv[] = "MOESERVE_DIST_INIT_ADDR";

// InvalidArgument with the flag to fix: --node-rank outside [0, --nnodes), --ep-size not a
// multiple of --nnodes, several nodes without --dist-init-addr, a launcher's world size that is
// not --ep-size, a malformed host:port.
absl::StatusOr<EpTopology> ResolveEpTopology(const EpLaunchFlags& flags, const EnvLookup& env);

}  // namespace moeserve::runtime
