// CUDA elementwise ops on activations, twin of kernels/cpu/elementwise.cc (same params from
// kernels/ops/elementwise.h; pointers are device pointers).
#pragma once

#include <cuda_runtime.h>

#include "kernels/ops/elementwise.h"

namespace moeserve::kernels::cuda {

// y[i] = y[i] + x[i] as one fp32 add rounded to act_dtype (bit-identical to the CPU). Flat over
// n, 8 elements per thread step, 16-byte accesses when both pointers are 16-byte aligned (scalar
// tail). act_dtype: fp32 or bf16.
// REQUIRES: Validate(p).ok(). Returns the launch error (cudaErrorInvalidValue for another dtype).
cudaError_t AddInPlace(const AddInPlaceParams& p, cudaStream_t stream);

}  // namespace moeserve::kernels::cuda
