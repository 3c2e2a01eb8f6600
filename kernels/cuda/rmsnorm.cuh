// CUDA RMSNorm with the optional fused residual add, twin of kernels/cpu/rmsnorm.cc (same
// RmsNormParams; pointers are device pointers). See kernels/ops/rmsnorm.h for the math.
#pragma once

#include <cuda_runtime.h>

#include "kernels/ops/rmsnorm.h"

namespace moeserve::kernels::cuda {

// One block of 256 threads per row. The sum of squares is fp32 with a fixed reduction tree per
// row: thread t sums, in ascending element order, the 8-element chunks t, t + 256, t + 512, ...
// (no FMA); the 8 warps combine by xor-butterfly; the 8 warp sums are added in warp order.
// The tree depends on hidden only (never on rows, the dtypes or pointer alignment), so a row's
// result is the same in any batch. It is not the CPU's sequential sum: results agree with the
// CPU reference to fp32 rounding of the sum of squares, not bit for bit.
// act_dtype: fp32 or bf16; weight_dtype: fp32, bf16 or fp16.
// REQUIRES: Validate(p).ok(). Returns the launch error (cudaErrorInvalidValue for a dtype
// outside those).
cudaError_t RmsNorm(const RmsNormParams& p, cudaStream_t stream);

}  // namespace moeserve::kernels::cuda
