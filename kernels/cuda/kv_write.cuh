// CUDA KV-cache write, twin of KvWrite in kernels/cpu/attention.cc (same KvWriteParams; pointers
// are device pointers): k_cache[slots[t], :, :] = k[t, :, :] converted to kv_dtype, same for v.
#pragma once

#include <cuda_runtime.h>

#include "kernels/ops/attention.h"

namespace moeserve::kernels::cuda {

// One block per token (grid-stride), 8 elements per thread step over the token's
// [num_kv_heads * head_dim] row of k and of v, 16-byte accesses when the row length is a
// multiple of 8 and all four pointers are 16-byte aligned. A slot < 0 is skipped (padding), and
// so is a slot >= num_slots (never written out of bounds; ValidateIndices rejects it on the
// host). act_dtype: fp32 or bf16; kv_dtype: fp32, bf16 or fp16.
// REQUIRES: Validate(p).ok(). Returns the launch error (cudaErrorInvalidValue for other dtypes).
cudaError_t KvWrite(const KvWriteParams& p, cudaStream_t stream);

}  // namespace moeserve::kernels::cuda
