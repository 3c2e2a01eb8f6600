#include "server/cli/rank_process.h"

#include <ctime>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "spdlog/spdlog.h"

namespace moeserve::server {

int ServeAsRankProcess(std::unique_ptr<runtime::Engine> engine, EpProcessGroup& group,
                       const sigset_t& signals) {
  const int rank = group.topology().rank;
  spdlog::info("rank {} of {}: serving its experts (requests arrive at rank 0)", rank,
               group.topology().world_size);
  int signals_seen = 0;
  bool forced = false;
  while (!engine->WaitUntilStopped(absl::ZeroDuration())) {
    const timespec wait = absl::ToTimespec(absl::Milliseconds(50));
    const int sig = sigtimedwait(&signals, nullptr, &wait);
    if (sig <= 0) continue;
    if (++signals_seen == 1) {
      spdlog::warn(
          "rank {}: signal {}: waiting for rank 0 to end the group (a second signal ends "
          "this rank now)",
          rank, sig);
      continue;
    }
    spdlog::error("rank {}: second signal {}: leaving the group now", rank, sig);
    group.Abort(absl::UnavailableError(absl::StrCat("rank ", rank, " was stopped by a signal")));
    forced = true;
    break;
  }
  const absl::Status failure = engine->GroupFailure();
  group.ExpectExits();
  engine.reset();  // joins the worker; the communicator goes with the model
  const std::vector<std::string> children = group.Reap(absl::Seconds(10));
  if (forced) {
    std::cerr << "error: rank " << rank << ": stopped by a second signal\n";
    return 1;
  }
  if (!failure.ok()) {
    std::cerr << "error: rank " << rank << ": expert-parallel group failed: " << failure.message()
              << "\n";
    return 1;
  }
  if (!children.empty()) {
    std::cerr << "error: rank " << rank << ": " << absl::StrJoin(children, "; ") << "\n";
    return 1;
  }
  spdlog::info("rank {}: the group stopped", rank);
  return 0;
}

}  // namespace moeserve::server
