// CUDA random fill, twin of kernels/cpu/random_fill.cc (same RandomFillParams, bitwise-equal
// values; see kernels/cpu/random_fill.h for the hash).
#pragma once

#include <cuda_runtime.h>

#include "kernels/cpu/random_fill.h"

namespace moeserve::kernels::cuda {

// Grid-stride loop, one element per thread per iteration; memory-bound (~ the write bandwidth).
// REQUIRES: Validate(p).ok(). Returns the launch error.
cudaError_t RandomFill(const RandomFillParams& p, cudaStream_t stream);

}  // namespace moeserve::kernels::cuda
