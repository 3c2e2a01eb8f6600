#include "server/cli/rank_process.h"

#include <cstdlib>
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
    // Leave at once: the engine's worker may be blocked in a collective, which only its peers
    // or the timeout would end; exiting closes this rank's sockets, which fails the group's
    // collectives everywhere (rank 0 then answers 503 / UNAVAILABLE and exits 1).
    const std::string line =
        absl::StrCat("error: rank ", rank, ": stopped by a second signal (", sig, ")\n");
    std::cerr << line << std::flush;
    std::_Exit(1);
  }
  const absl::Status failure = engine->GroupFailure();
  group.ExpectExits();
  engine.reset();  // joins the worker; the communicator goes with the model
  const std::vector<std::string> children = group.Reap(absl::Seconds(10));
  // One write per line: every rank shares the terminal, and lines must not interleave.
  std::string error;
  if (!failure.ok()) {
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
