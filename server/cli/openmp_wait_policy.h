// Makes idle OpenMP threads sleep instead of spin, for every moeserve command.
//
// libgomp spins for up to GOMP_SPINCOUNT (300000 by default) iterations at each barrier and
// between parallel regions before it sleeps on a futex. A step of the CPU backend runs dozens of
// short parallel regions, so with spinning, threads that wait burn whole time slices; when the
// machine has other runnable work (another process on one of our cores, a second engine), the
// spinner keeps a core that the thread doing the work needed: decode steps took 2x to 25x longer
// (docs/cpu-kernels.md has the numbers). Passive waiting costs a futex wake per region instead.
//
// libgomp reads OMP_WAIT_POLICY / GOMP_SPINCOUNT once, when it is loaded, before main() runs, so
// setting them in main() is too late. ReexecWithPassiveOpenMpWait sets OMP_WAIT_POLICY=PASSIVE
// and re-executes the same binary with the same arguments, once (the variable is then set). An
// explicit OMP_WAIT_POLICY or GOMP_SPINCOUNT from the user wins and nothing happens.
#pragma once

namespace moeserve::server {

// Call first in main(). Returns when nothing needs doing, or when exec fails (no /proc): the
// process then runs with libgomp's defaults.
void ReexecWithPassiveOpenMpWait(char** argv);

}  // namespace moeserve::server
