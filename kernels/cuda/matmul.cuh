// Plain CUDA matmul, the fallback behind the CUDA backend's Matmul (kernels/cuda/cuda_backend.cc):
// used when cuBLASLt cannot take the call (mixed x/w dtypes, e.g. fp32 weights of a small test
// model with bf16 activations; pointers not 16-byte aligned; no batch-invariant cuBLASLt
// algorithm) or when MOESERVE_MATMUL=simple forces it.
#pragma once

#include <cuda_runtime.h>

#include "kernels/ops/matmul.h"

namespace moeserve::kernels::cuda {

// y [m_rows, n] = x [m_rows, k] @ w [n, k]^T, any float dtypes for x, w, y. One thread per output
// element, 16x16 output tiles staged through shared memory; every output sums its k products in
// ascending k order with fmaf, so a row's bits depend neither on m_rows nor on the other rows
// (batch invariant). Slow: no tensor cores, about 1/20 of cuBLASLt on large shapes.
// REQUIRES: Validate(p).ok(). Returns the launch error; m_rows == 0 launches nothing.
cudaError_t MatmulSimple(const MatmulParams& p, cudaStream_t stream);

}  // namespace moeserve::kernels::cuda
