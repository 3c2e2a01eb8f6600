// A rank process other than global rank 0 (--ep-launch processes): no front ends. Its engine
// holds the rank's experts and joins every step of the group (with an empty batch: requests reach
// rank 0's scheduler only) until rank 0 stops the group, or the group fails.
//
// Signals: SIGTERM / SIGINT / SIGHUP (blocked by the caller, listed in `signals`) do not end the
// rank on their own, because a terminal's Ctrl-C or `srun`'s SIGTERM reaches every rank at once
// and rank 0 must first drain its requests through them; the rank logs it and keeps serving
// until rank 0 ends the group. A second signal ends it at once (exit 1; its closed connections
// fail the group: rank 0 then fails what is in flight with 503 / UNAVAILABLE).
#pragma once

#include <signal.h>

#include <memory>

#include "runtime/engine/engine.h"
#include "server/cli/ep_process_group.h"

namespace moeserve::server {

// Returns the process's exit code: 0 when rank 0 ended the group and every child this process
// spawned exited 0; 1 with a message naming the rank and the cause otherwise.
int ServeAsRankProcess(std::unique_ptr<runtime::Engine> engine, EpProcessGroup& group,
                       const sigset_t& signals);

}  // namespace moeserve::server
