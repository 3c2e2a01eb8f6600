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
  // One write per line: every rank shares the terminal, and lines must not interleave.
  std::string error;
  if (forced) {
    error = "stopped by a second signal";
  } else if (!failure.ok()) {
    error = absl::StrCat("expert-parallel group failed: ", failure.message());
  } else if (!children.empty()) {
    error = absl::StrJoin(children, "; ");
  }
  if (!error.empty()) {
    std::cerr << absl::StrCat("error: rank ", rank, ": ", error, "\n");
    return 1;
  }
  spdlog::info("rank {}: the group stopped", rank);
  return 0;
}

}  // namespace moeserve::server
