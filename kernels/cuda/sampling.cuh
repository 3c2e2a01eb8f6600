// CUDA sampling, twin of kernels/cpu/sampling.cc (same SampleParams; pointers are device
// pointers). The agreement rule with the CPU reference is in kernels/ops/sampling.h.
#pragma once

#include <cuda_runtime.h>

#include "kernels/ops/sampling.h"

namespace moeserve::kernels::cuda {

// One CTA of 512 threads per row, batch invariant (a row reads and writes only its own logits,
// history entries, outputs and workspace rows; every reduction has a fixed tree). REQUIRES:
// Validate(p).ok(); each row's parameters valid as runtime::SamplingParams::Validate demands
// (finite temperature >= 0, top_p in (0, 1], min_p in [0, 1]: the device cannot report bad ones);
// p.workspace of >= kernels::SampleWorkspaceBytes(p.rows, p.vocab) device bytes, else
// cudaErrorInvalidValue and nothing is launched. Returns the launch error; 0 rows launch nothing.
cudaError_t Sample(const SampleParams& p, cudaStream_t stream);

}  // namespace moeserve::kernels::cuda
