// CUDA rotary position embedding (HF rotate_half), in place on q and k; twin of
// kernels/cpu/rope.cc (same RopeParams; pointers are device pointers). See kernels/ops/rope.h.
#pragma once

#include <cuda_runtime.h>

#include "kernels/ops/rope.h"

namespace moeserve::kernels::cuda {

// Largest head_dim supported (the fp32 inverse frequencies travel in the kernel parameters).
inline constexpr int64_t kRopeMaxHeadDim = 1024;

// One block per token (grid-stride). Bit-for-bit the CPU's math except for sin/cos:
//  - inv_freq[i] = 1 / std::pow(theta, float(2i) / float(d)) is computed on the host by the
//    launcher with the same code (and the same libm) as the CPU reference, and passed by value;
//  - angle = float(pos) * inv_freq[i] in fp32;
//  - cos/sin are evaluated in double and rounded to fp32: correctly rounded in all but rare
//    double-rounding cases, where glibc's sinf/cosf (used by the CPU) are within 0.56 ulp, so
//    the two can differ by 1 ulp in rare cases (CUDA's sinf/cosf are only within 2 ulp);
//  - the rotation is a*c - b*s and b*c + a*s with separately rounded products (no FMA, as the
//    CPU build uses -ffp-contract=off), rounded once to act_dtype.
// act_dtype: fp32 or bf16. REQUIRES: Validate(p).ok(). Returns the launch error;
// cudaErrorInvalidValue for head_dim > kRopeMaxHeadDim or another act dtype.
cudaError_t Rope(const RopeParams& p, cudaStream_t stream);

}  // namespace moeserve::kernels::cuda
