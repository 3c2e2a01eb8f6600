#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/cuda/dtype.cuh"
#include "kernels/cuda/matmul.cuh"

namespace moeserve::kernels::cuda {
namespace {

constexpr int kTile = 16;

// Block (16, 16): thread (tx, ty) owns y[blockIdx.y*16 + ty, blockIdx.x*16 + tx].
__global__ void MatmulTiledKernel(const void* x, DType x_dtype, const void* w, DType w_dtype,
                                  void* y, DType y_dtype, int64_t m_rows, int64_t n, int64_t k) {
  __shared__ float x_tile[kTile][kTile + 1];  // [row in tile, k in tile]
  __shared__ float w_tile[kTile][kTile + 1];  // [col in tile, k in tile]
  const int tx = static_cast<int>(threadIdx.x);
  const int ty = static_cast<int>(threadIdx.y);
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int64_t col0 = static_cast<int64_t>(blockIdx.x) * kTile;
  float acc = 0.0f;
  for (int64_t k0 = 0; k0 < k; k0 += kTile) {
    const int64_t kk = k0 + tx;
    const int64_t xr = row0 + ty;
    const int64_t wr = col0 + ty;
    x_tile[ty][tx] = (xr < m_rows && kk < k) ? LoadF32(x, x_dtype, xr * k + kk) : 0.0f;
    w_tile[ty][tx] = (wr < n && kk < k) ? LoadF32(w, w_dtype, wr * k + kk) : 0.0f;
    __syncthreads();
    // Ascending k; the zero padding past k adds exact zeros and changes no bits.
    for (int i = 0; i < kTile; ++i) acc = fmaf(x_tile[ty][i], w_tile[tx][i], acc);
    __syncthreads();
  }
  const int64_t row = row0 + ty;
  const int64_t col = col0 + tx;
  if (row < m_rows && col < n) StoreF32(y, y_dtype, row * n + col, acc);
}

}  // namespace

cudaError_t MatmulSimple(const MatmulParams& p, cudaStream_t stream) {
  if (p.m_rows == 0) return cudaSuccess;
  const dim3 block(kTile, kTile);
  const dim3 grid(static_cast<unsigned>((p.n + kTile - 1) / kTile),
                  static_cast<unsigned>((p.m_rows + kTile - 1) / kTile));
  MatmulTiledKernel<<<grid, block, 0, stream>>>(p.x, p.x_dtype, p.w, p.w_dtype, p.y, p.y_dtype,
                                                p.m_rows, p.n, p.k);
  return cudaGetLastError();
}

}  // namespace moeserve::kernels::cuda
