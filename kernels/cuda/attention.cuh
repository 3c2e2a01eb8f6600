// CUDA paged attention, twin of kernels/cpu/attention.cc (same PagedAttentionParams; every
// pointer, the index arrays included, is a device pointer). One launcher serves chunked prefill,
// decode and mixed batches; see attention.cu for the algorithm and its limits.
#pragma once

#include <cuda_runtime.h>

#include "kernels/ops/attention.h"

namespace moeserve::kernels::cuda {

// Causal GQA attention with optional sliding window, fp32 online softmax.
// Supports head_dim <= 256 (fast paths 64 and 128), kv_dtype and act_dtype fp32/bf16/fp16.
// Returns cudaErrorInvalidValue for what it cannot do (head_dim > 256, a non-float dtype,
// num_q_heads not a multiple of num_kv_heads, more than 65535 sequences or kv heads), cudaSuccess
// without launching for an empty call, else the launch error. Never synchronises; capturable.
// REQUIRES: Validate(p).ok() and the index arrays satisfy ValidateIndices on their host copies.
cudaError_t PagedAttention(const PagedAttentionParams& p, cudaStream_t stream);

}  // namespace moeserve::kernels::cuda
