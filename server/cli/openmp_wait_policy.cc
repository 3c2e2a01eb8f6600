#include "server/cli/openmp_wait_policy.h"

#include <unistd.h>

#include <cstdlib>

namespace moeserve::server {

void ReexecWithPassiveOpenMpWait(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr || std::getenv("GOMP_SPINCOUNT") != nullptr) {
    return;
  }
  if (setenv("OMP_WAIT_POLICY", "PASSIVE", /*overwrite=*/1) != 0) return;
  // /proc/self/exe: this very binary, whatever argv[0] or PATH say. Nothing has run yet (no
  // threads, no files), so replacing the process image loses nothing.
  execv("/proc/self/exe", argv);
}

}  // namespace moeserve::server
