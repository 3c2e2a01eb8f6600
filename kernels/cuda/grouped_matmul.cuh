// CUDA grouped expert GEMM (MoE), twin of the CPU GroupedMatmul (same GroupedMatmulParams; x, y,
// w[e], w_up[e], the pointer arrays w / w_up and expert_offsets are device memory). Sized on the
// device: the grid depends on max_rows, num_experts and n only. See grouped_matmul.cu.
#pragma once

#include <cuda_runtime.h>

#include "kernels/ops/moe.h"

namespace moeserve::kernels::cuda {

// y[r, :] = x[r, :] @ w[e]^T, or silu(x[r, :] @ w[e]^T) * (x[r, :] @ w_up[e]^T) when w_up is set,
// for every row r of expert e (rows expert_offsets[e] .. expert_offsets[e+1]-1), fp32
// accumulation in a fixed k order. bf16 x and bf16 w with k % 8 == 0 use tensor cores (WMMA);
// every other float dtype pair uses an fp32 FMA kernel. Returns cudaErrorInvalidValue for a
// non-float dtype, num_experts <= 0 or n > 4194240; cudaSuccess without launching when max_rows
// or n is 0; else the launch error. Never synchronises; capturable in a CUDA graph.
// REQUIRES: expert_offsets non-decreasing, offsets[0] == 0, offsets[num_experts] <= max_rows;
// w[e] (and w_up[e]) non-null for every expert with rows (an expert with a null pointer is
// skipped: its rows of y are left unwritten).
cudaError_t GroupedMatmul(const GroupedMatmulParams& p, cudaStream_t stream);

}  // namespace moeserve::kernels::cuda
