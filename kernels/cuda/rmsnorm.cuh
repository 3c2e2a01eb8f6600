// CUDA RMSNorm, twin of kernels/cpu/rmsnorm.cc (same RmsNormParams; pointers are device pointers).
#pragma once

#include <cuda_runtime.h>

#include "kernels/ops/rmsnorm.h"

namespace moeserve::kernels::cuda {

// One block per row; fp32 accumulation. REQUIRES: Validate(p).ok(). Returns the launch error.
cudaError_t RmsNorm(const RmsNormParams& p, cudaStream_t stream);

}  // namespace moeserve::kernels::cuda
