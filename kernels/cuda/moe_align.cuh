// CUDA MoeAlign, twin of MoeAlign in kernels/cpu/moe.cc (same MoeAlignParams; pointers are
// device pointers): a stable counting sort of the num_tokens * top_k (token, choice) pairs by
// expert. Rows of expert e are expert_offsets[e] .. expert_offsets[e+1]-1 in ascending (t, j)
// order, exactly parallel/moe/dispatch_plan.cc's BuildDispatchPlan.
#pragma once

#include <cuda_runtime.h>

#include "kernels/ops/moe.h"

namespace moeserve::kernels::cuda {

// Largest num_experts supported (per-warp histograms live in 48 KiB of shared memory).
inline constexpr int64_t kMoeAlignMaxExperts = 512;

// One block of 512 threads, whatever the size (a fixed grid, so it is capturable in a graph and
// its result cannot depend on scheduling):
//   1. count rows per expert (shared-memory integer atomics: the counts, not their order, matter);
//   2. exclusive scan of the counts by one thread -> expert_offsets, expert_counts += counts;
//   3. scatter, one tile of 512 rows at a time in row order: a row's position is its expert's
//      cursor + the rows of the same expert in earlier warps of the tile + the earlier lanes of
//      its warp with the same expert (__match_any_sync): fully deterministic.
// Linear in num_tokens * top_k with ~4 block barriers per 512 rows: ~tens of microseconds at 64K
// rows (slow for huge prefills, fine for decode). An expert id outside [0, num_experts) is not
// counted and its combine_rows entry is -1 (never out-of-bounds writes; the CPU would crash).
// num_tokens == 0: expert_offsets is zeroed with cudaMemsetAsync (no kernel).
// REQUIRES: Validate(p).ok(), num_tokens * top_k <= INT32_MAX - 512. Returns the launch error;
// cudaErrorInvalidValue for num_experts > kMoeAlignMaxExperts or too many rows.
cudaError_t MoeAlign(const MoeAlignParams& p, cudaStream_t stream);

}  // namespace moeserve::kernels::cuda
