// Collective communication between the ranks of an expert-parallel group.
//
// Shaped after NCCL so that an NCCL implementation slots in without changing callers:
//  - AllToAllV moves bytes between buffers in the rank's backend memory (device memory with
//    CUDA, host memory on CPU), given as raw pointers plus per-peer byte counts and offsets. An
//    NCCL implementation is ncclGroupStart(); for each peer p: ncclSend(send + send_offsets[p],
//    send_counts[p]) and ncclRecv(recv + recv_offsets[p], recv_counts[p]); ncclGroupEnd(), on the
//    stream the communicator was created with (the rank's compute stream). Zero-byte peers are
//    legal and simply skipped.
//  - AllToAll, AllReduce and Barrier move small control data (token counts, statistics) between
//    HOST buffers: the dispatch needs the counts on the host to size the all-to-all-v. NCCL
//    stages them through a small device buffer and synchronises the stream before returning.
//
// Contract for every implementation (and every caller):
//  - Every rank of the group calls every collective, in the same order, with consistent sizes:
//    recv_counts[p] on rank r equals send_counts[r] on rank p. A rank with nothing to send still
//    calls, with zero counts (that is what keeps expert-parallel ranks in lockstep).
//  - Errors are values: a mismatch (different collectives, inconsistent counts) is reported as a
//    Status on every rank, never an abort. After a failed collective the group is unusable.
//  - A rank that fails in a way that keeps it from reaching the next collective calls Abort, so
//    that its peers get an error instead of waiting forever (NCCL: ncclCommAbort).
//  - In-place is allowed for AllToAll and AllReduce (send == recv); AllToAllV buffers must not
//    overlap.
//
// Threading: a Communicator belongs to its rank's worker thread; its collectives are not
// reentrant. Abort may be called from any thread.
#pragma once

#include <cstdint>

#include "absl/status/status.h"

namespace moeserve::parallel {

enum class ReduceOp { kSum, kMax };

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;

  // send: host [world_size, count]; row p goes to rank p. recv: host [world_size, count]; row p
  // is what rank p sent to this rank.
  virtual absl::Status AllToAll(const int64_t* send, int64_t* recv, int64_t count) = 0;

  // Bytes [send_offsets[p], send_offsets[p] + send_counts[p]) of `send` go to rank p; the
  // recv_counts[p] bytes from rank p land at recv + recv_offsets[p]. Counts and offsets are host
  // arrays [world_size]; send/recv are in the rank's backend memory and may be null when every
  // count is zero.
  virtual absl::Status AllToAllV(const void* send, const int64_t* send_counts,
                                 const int64_t* send_offsets, void* recv,
                                 const int64_t* recv_counts, const int64_t* recv_offsets) = 0;

  // recv[i] = op over ranks (in rank order, so sums of doubles are deterministic) of send[i].
  // Host buffers [count].
  virtual absl::Status AllReduce(const int64_t* send, int64_t* recv, int64_t count,
                                 ReduceOp op) = 0;
  virtual absl::Status AllReduce(const double* send, double* recv, int64_t count, ReduceOp op) = 0;

  // Returns once every rank has called Barrier.
  virtual absl::Status Barrier() = 0;

  // Ends the group: collectives pending on any rank, and every later one, return `reason`.
  // REQUIRES: !reason.ok().
  virtual void Abort(const absl::Status& reason) = 0;
};

}  // namespace moeserve::parallel
