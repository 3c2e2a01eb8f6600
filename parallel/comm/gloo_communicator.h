// A Communicator between PROCESSES (CPU ranks), on Gloo (Debian's libgloo-dev, TCP transport).
//
// Every rank is its own process; each creates its communicator with the same world size, its own
// rank and the same rendezvous: either a directory shared by the ranks (Gloo's FileStore, one
// node) or a TCP key-value store at "host:port" (tcp_kv_store.h; the --dist-init-addr of SGLang /
// vLLM), which the caller runs in rank 0's process (TcpKvServer) and which spans nodes.
//
// How each collective maps onto Gloo:
//  - AllToAll: gloo::alltoall (a scratch copy of the input when in place).
//  - AllToAllV: first a [world] int64 alltoall of the byte counts, checked against recv_counts
//    (Gloo silently accepts a shorter message than the receiver expects), then
//    gloo::alltoallv on byte elements. Gloo takes per-peer LENGTHS only and packs the
//    segments back to back; when the caller's offsets are not that packing, the segments are
//    staged through a packed scratch buffer (send) / unpacked after (recv).
//  - AllReduce: NOT gloo::allreduce, whose ring reduces each chunk starting at a different rank
//    (the order of a double sum would depend on the element's position and the world size).
//    Instead: gloo::allgather of every rank's [count] values, then each rank reduces the
//    [world, count] result locally in rank order 0, 1, ..., world-1: bitwise the same on every
//    rank and equal to a sequential rank-ordered sum. Costs world * count elements per rank, fine
//    for the control data (counts, statistics) this is meant for.
//  - Barrier: gloo::barrier.
// Every collective uses a fresh tag (a counter that advances identically on every rank because
// every rank makes the same calls in the same order).
//
// Errors are values: Gloo throws (gloo::IoException, gloo::EnforceNotMet, ...); every exception
// becomes a Status naming the collective and this rank; a Gloo timeout is DeadlineExceeded.
// Gloo's TCP errors name a peer's address, not its rank, and its timeouts name no peer, so the
// message carries Gloo's text as it is. After any failure the communicator aborts itself
// (contract: the group is then unusable): later calls fail at once with the first error, and its
// TCP connections are closed so that peers blocked on it get an error instead of waiting for the
// whole timeout. Inconsistent AllToAllV counts are InvalidArgument on the ranks that expect other
// counts; different collectives on different ranks are a Gloo size error or a timeout on some
// rank. Either reaches the other ranks through that rank's abort (as an error of the same or of
// their next collective), not as the same status on every rank as in-process.
//
// Process state: CreateGlooCommunicator sets SIGPIPE to SIG_IGN when it is at its default (Gloo
// writes to sockets without MSG_NOSIGNAL; a dead peer would otherwise kill this process).
//
// Threading: as Communicator (collectives from the rank's thread; Abort from any thread), with
// one limit: Abort from another thread does not wake a collective already blocked in this
// process (Gloo's closeConnections closes the sockets without signalling the waiter, and the
// call that would, tcp::Pair::signalExceptionExternal, is protected and its header does not
// compile against Debian's package); that collective ends at its timeout or when a peer's
// connection fails. Later calls fail at once, and the peers see the closed connections.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "parallel/comm/communicator.h"

namespace moeserve::parallel {

struct GlooOptions {
  int rank = 0;
  int world_size = 1;
  // One-node rendezvous: a directory every rank can write (Gloo FileStore). Use a fresh directory
  // (or a fresh `store_prefix`) per group: keys left by an earlier group would be read as this
  // group's addresses.
  std::string file_store_dir;
  // Multi-node rendezvous "host:port" (--dist-init-addr): a TcpKvServer some process runs there.
  // Exactly one of file_store_dir and init_addr is set.
  std::string init_addr;
  // Namespace of this group's keys in the store (several groups may share one store).
  std::string store_prefix = "moeserve";
  // Address this rank's TCP transport listens on; other ranks must reach it. Empty: with init_addr
  // this host's address on its connection to the store (the interface that routes there), else
  // 127.0.0.1.
  std::string hostname;
  // Limit for the rendezvous and for each collective (DeadlineExceeded past it).
  absl::Duration timeout = absl::Seconds(60);
  // TCP rendezvous only: runs while it waits for the other ranks (every 10 ms poll); a non-OK
  // status ends the rendezvous with that status (e.g. a rank this process spawned has exited, so
  // waiting for it is pointless).
  std::function<absl::Status()> rendezvous_check;
};

// Whether this build has Gloo (MOESERVE_GLOO=AUTO found libgloo-dev, or ON).
bool GlooAvailable();

// Rendezvous with the other world_size - 1 ranks (blocks until all have arrived, up to
// options.timeout) and returns this rank's communicator. InvalidArgument for bad rank / size /
// missing rendezvous; Unimplemented when built without Gloo; DeadlineExceeded when the store is
// unreachable or the peers do not all arrive in time.
absl::StatusOr<std::unique_ptr<Communicator>> CreateGlooCommunicator(const GlooOptions& options);

}  // namespace moeserve::parallel
