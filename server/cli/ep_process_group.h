// This process's part of an expert-parallel group whose ranks are PROCESSES (--ep-launch
// processes): the rendezvous store (global rank 0 only), the rank processes it spawned (a node's
// first process spawns the node's other ranks), and its Gloo communicator.
//
// Children are this binary (/proc/self/exe) with this process's own arguments
// (/proc/self/cmdline) and environment, plus MOESERVE_EP_SPAWNED_RANK and
// MOESERVE_DIST_INIT_ADDR (ep_topology.h); they share stdout / stderr and the process group (a
// terminal's Ctrl-C reaches every rank). A watcher thread reaps them and records how each ended
// ("rank 2 (pid 4242) was killed by signal 9 (Killed)"): the cause rank 0 names when the group
// fails, and, during the rendezvous, the reason to stop waiting for a rank that will never come.
// The watcher does not abort the communicator: Gloo's closeConnections from another thread does
// not wake a collective blocked in this process (it would wait for --comm-timeout); the dead
// rank's closed sockets fail the collectives of its peers instead, and each peer that fails
// closes its own, so the failure reaches every rank within a step.
//
// Threading: Start / TakeComm / ExpectExits / Reap from the main thread; Ended from any thread;
// the watcher shares only `children_` / `ended_` (under mu_).
#pragma once

#include <sys/types.h>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "parallel/comm/communicator.h"
#include "parallel/comm/tcp_kv_store.h"
#include "runtime/engine/ep_topology.h"

namespace moeserve::server {

class EpProcessGroup {
 public:
  // Starts the store (rank 0), spawns topology.spawn_ranks, and rendezvouses (up to `timeout`).
  // On failure the spawned children are killed and reaped, and the error says which rank ended
  // early when one did.
  static absl::StatusOr<std::unique_ptr<EpProcessGroup>> Start(const runtime::EpTopology& topology,
                                                               absl::Duration timeout);
  ~EpProcessGroup();  // kills and reaps children still running (after Reap: none)

  const runtime::EpTopology& topology() const { return topology_; }
  // The communicator, once.
  std::unique_ptr<parallel::Communicator> TakeComm();
  // The group is being stopped on purpose: children that end from now on are not logged as
  // errors.
  void ExpectExits();
  // Waits up to `timeout` for every child to exit, then SIGKILLs the rest. Returns how each child
  // that did not exit 0 ended (empty: all exited 0, or there were none).
  std::vector<std::string> Reap(absl::Duration timeout);
  // How the children that have ended so far ended (in the order they ended), 0 exits included.
  std::vector<std::string> Ended() const;

 private:
  struct Child {
    int rank = -1;
    pid_t pid = -1;
    bool running = true;
    int exit_code = 0;  // 128 + signal when killed
    std::string how;
  };
  explicit EpProcessGroup(runtime::EpTopology topology) : topology_(std::move(topology)) {}
  absl::Status Spawn(const std::string& init_addr);
  void Watch();
  void KillRemaining();

  runtime::EpTopology topology_;
  std::unique_ptr<parallel::TcpKvServer> store_;
  std::unique_ptr<parallel::Communicator> owned_comm_;
  std::thread watcher_;
  mutable absl::Mutex mu_;
  std::vector<Child> children_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> ended_ ABSL_GUARDED_BY(mu_);
  bool expecting_exits_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_watching_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace moeserve::server
