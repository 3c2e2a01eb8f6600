// CUDA top-k router, twin of kernels/cpu/router.cc (same RouterTopKParams; pointers are device
// pointers). See kernels/ops/router.h for the contract.
#pragma once

#include <cuda_runtime.h>

#include "kernels/ops/router.h"

namespace moeserve::kernels::cuda {

// Largest top_k supported: lane j of a warp holds choice j.
inline constexpr int64_t kRouterMaxTopK = 32;

// One warp per token (grid-stride). Choice j is the first expert, in the order (biased logit
// descending, expert id ascending), after choice j-1: the CPU's repeated strict-'>' max, ties to
// the lower id. Softmax over the chosen k in fp32 as the CPU does: max-subtracted, exp (in
// double, rounded to fp32: the CPU's glibc expf is within 0.502 ulp, so a rare 1-ulp difference
// is possible), denominator summed in selection order, one IEEE division per weight. Outputs
// sorted by ascending expert id. Any num_experts. NaN logits: the choice is unspecified.
// REQUIRES: Validate(p).ok(). Returns the launch error (cudaErrorInvalidValue for
// top_k > kRouterMaxTopK).
cudaError_t RouterTopK(const RouterTopKParams& p, cudaStream_t stream);

}  // namespace moeserve::kernels::cuda
