// The in-process Communicator: one thread per rank in one process, sharing memory.
//
// InProcessGroup owns world_size communicators and the rendezvous they share. A collective is
// two barriers around a copy phase:
//   1. each rank publishes a description of its call (kind, pointers, counts) in its slot and
//      waits until every rank has published (barrier A);
//   2. each rank validates all slots (every rank reaches the same verdict, so a mismatch is an
//      error on every rank) and PULLS its own share directly from its peers' send buffers;
//   3. barrier B: no rank returns (and so reuses or frees its send buffer) before every peer has
//      finished reading from it.
// Results that depend on other ranks' send buffers (AllToAll, AllReduce) are computed into a
// scratch copy and written to recv after barrier B, which makes in-place calls safe.
//
// This is what every CPU test of expert parallelism runs on, at world sizes 1, 2, 4 and 8, and
// what a single-process CPU daemon uses. Waiting is on a condition variable, never spinning:
// tests run 8 ranks on 2 cores.
//
// Threading: comm(r) is used by rank r's thread only; Abort may be called from any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "parallel/comm/communicator.h"

namespace moeserve::parallel {

struct InProcessGroupOptions {
  // A rank that waits longer than this at a barrier aborts the group with DeadlineExceeded
  // (a peer crashed or stopped calling collectives). Tests set a finite value.
  absl::Duration timeout = absl::InfiniteDuration();
};

class InProcessGroup {
 public:
  // REQUIRES: world_size >= 1.
  explicit InProcessGroup(int world_size, InProcessGroupOptions options = {});
  ~InProcessGroup();
  InProcessGroup(const InProcessGroup&) = delete;
  InProcessGroup& operator=(const InProcessGroup&) = delete;

  int world_size() const { return world_size_; }
  // Rank r's communicator, owned by the group.
  Communicator* comm(int rank);

  // Ends the group (see Communicator::Abort). The first reason wins.
  void Abort(const absl::Status& reason);

  // Runs body(rank, comm) on world_size threads (rank 0 on the calling thread) and joins them.
  // A rank whose body fails aborts the group so that its peers return instead of hanging.
  // Returns the first failure in rank order, preferring a body's own error to the "aborted"
  // errors it caused in its peers.
  absl::Status Run(const std::function<absl::Status(int rank, Communicator& comm)>& body);

 private:
  class RankCommunicator;
  friend class RankCommunicator;

  enum class Kind { kAllToAll, kAllToAllV, kAllReduceInt64, kAllReduceDouble, kBarrier };

  // One rank's description of its current collective call.
  struct Call {
    Kind kind = Kind::kBarrier;
    const void* send = nullptr;
    int64_t count = 0;  // AllToAll: per peer; AllReduce: elements
    ReduceOp op = ReduceOp::kSum;
    const int64_t* send_counts = nullptr;  // AllToAllV [world_size]
    const int64_t* send_offsets = nullptr;
    const int64_t* recv_counts = nullptr;
    const int64_t* recv_offsets = nullptr;
  };

  // Publishes `call` as rank's, waits for every rank (barrier A) and returns a copy of all calls.
  absl::Status Publish(int rank, const Call& call, std::vector<Call>* all);
  // Checks that all ranks' calls agree (same collective, consistent counts).
  absl::Status Validate(int rank, const std::vector<Call>& all) const;
  // Barrier B.
  absl::Status Arrive();
  // REQUIRES: mu_ held.
  absl::Status ArriveLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AbortLocked(const absl::Status& reason) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int world_size_;
  const InProcessGroupOptions options_;
  std::vector<std::unique_ptr<RankCommunicator>> comms_;

  absl::Mutex mu_;
  std::vector<Call> calls_ ABSL_GUARDED_BY(mu_);  // [world_size]
  int arrived_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;  // barriers completed
  absl::Status aborted_ ABSL_GUARDED_BY(mu_);     // OK until Abort
};

}  // namespace moeserve::parallel
