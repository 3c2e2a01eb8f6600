// CUDA MoE token movement and combine, twins of GatherRows, SwiGlu and MoeCombine in
// kernels/cpu/moe.cc (same param structs from kernels/ops/moe.h; pointers are device pointers).
#pragma once

#include <cuda_runtime.h>

#include "kernels/ops/moe.h"

namespace moeserve::kernels::cuda {

// dst[i, :] = src[rows[i], :], a byte copy of any act_dtype: one block per row (grid-stride),
// 16-byte copies when the row size and both pointers allow, else 4- or 2-byte copies. A row
// index outside [0, num_src_rows) writes a zero row (never reads out of bounds).
// REQUIRES: Validate(p).ok(). Returns the launch error.
cudaError_t GatherRows(const GatherRowsParams& p, cudaStream_t stream);

// out[i] = silu(gate[i]) * up[i] = (g / (1 + exp(-g))) * up, in fp32 with each step rounded
// as the CPU's (exp evaluated in double and rounded to fp32; glibc's expf is within 0.502 ulp,
// so a rare 1-ulp difference in exp is possible), rounded once to act_dtype. Flat over n,
// 8 elements per thread step, 16-byte accesses when the pointers are 16-byte aligned (scalar
// tail). out may alias gate or up. act_dtype: fp32 or bf16.
// REQUIRES: Validate(p).ok(). Returns the launch error (cudaErrorInvalidValue for another dtype).
cudaError_t SwiGlu(const SwiGluParams& p, cudaStream_t stream);

// out[t, :] = sum_{j < top_k} weights[t, j] * expert_out[src_rows[t, j], :], an fp32 sum in
// ascending j from 0.0f with separately rounded products (no FMA), rounded once to act_dtype:
// bit-identical to the CPU. One block per token (grid-stride), 8 elements per thread step,
// 16-byte loads when hidden % 8 == 0 and the pointers are aligned. A source row outside
// [0, num_expert_rows) contributes nothing. act_dtype: fp32 or bf16.
// REQUIRES: Validate(p).ok(), out not aliasing expert_out. Returns the launch error
// (cudaErrorInvalidValue for another dtype).
cudaError_t MoeCombine(const MoeCombineParams& p, cudaStream_t stream);

}  // namespace moeserve::kernels::cuda
