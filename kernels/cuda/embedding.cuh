// CUDA token embedding lookup, twin of kernels/cpu/embedding.cc (same EmbeddingParams; pointers
// are device pointers): out[t, :] = table[ids[t], :] converted to out_dtype (one rounding).
#pragma once

#include <cuda_runtime.h>

#include "kernels/ops/embedding.h"

namespace moeserve::kernels::cuda {

// One block of 256 threads per token (grid-stride), 8 elements per thread step, 16-byte loads
// when hidden % 8 == 0 and table/out are 16-byte aligned. An id outside [0, vocab) writes a zero
// row. table_dtype: fp32, bf16 or fp16; out_dtype: fp32 or bf16.
// REQUIRES: Validate(p).ok(). Returns the launch error (cudaErrorInvalidValue for other dtypes).
cudaError_t Embedding(const EmbeddingParams& p, cudaStream_t stream);

}  // namespace moeserve::kernels::cuda
