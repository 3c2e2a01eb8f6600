// TEMPORARY (cuda branch, CPU-side work): greedy-only stand-in for the CPU sampler that
// /work/wt-cuda-sampling writes; its files replace these three on merge.
#pragma once
#include "kernels/ops/sampling.h"
namespace moeserve::kernels::cpu {
void Sample(const SampleParams& p);  // REQUIRES: Validate(p).ok()
}  // namespace moeserve::kernels::cpu
