// Every rank's EpRankStats on every rank, through the group's communicator: what lets rank 0 of
// a group whose ranks are PROCESSES report the traffic, rows computed and all-to-all time of
// every rank (/metrics, GetStats), as an engine with every rank in-process does from memory.
//
// A collective: every rank calls it, in the same order relative to its other collectives. Cost:
// two small all-reduces (the longest encoding, then a [world, longest] int64 sum in which each
// rank fills its own row) plus one [world] double all-reduce; ~(2 * layers * experts * 6 +
// 4 * world) int64 per rank. The daemon calls it every few dozen steps, not per step.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "parallel/comm/communicator.h"
#include "parallel/moe/ep_stats.h"

namespace moeserve::parallel {

// Returns [world]: entry r is rank r's `mine`, bitwise (all integers; the seconds as doubles).
absl::StatusOr<std::vector<EpRankStats>> GatherEpRankStats(Communicator& comm,
                                                           const EpRankStats& mine);

}  // namespace moeserve::parallel
