#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/cuda/rmsnorm.cuh"

namespace moeserve::kernels::cuda {
namespace {

__device__ inline float LoadWeight(const void* w, DType dtype, int64_t i) {
  switch (dtype) {
    case DType::kBF16:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(w)[i]);
    case DType::kF16:
      return __half2float(static_cast<const __half*>(w)[i]);
    default:
      return static_cast<const float*>(w)[i];
  }
}

// Block-wide sum of one float per thread (blockDim.x a multiple of 32, at most 1024).
__device__ float BlockSum(float v) {
  __shared__ float warp_sums[32];
  for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  const int num_warps = blockDim.x / 32;
  v = lane < num_warps ? warp_sums[lane] : 0.0f;
  if (warp == 0) {
    for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
    if (lane == 0) warp_sums[0] = v;
  }
  __syncthreads();
  return warp_sums[0];
}

__global__ void RmsNormKernel(RmsNormParams p) {
  const float* x = p.x + blockIdx.x * p.hidden;
  float* out = p.out + blockIdx.x * p.hidden;
  float sum_sq = 0.0f;
  for (int64_t h = threadIdx.x; h < p.hidden; h += blockDim.x) sum_sq += x[h] * x[h];
  const float inv_rms = rsqrtf(BlockSum(sum_sq) / static_cast<float>(p.hidden) + p.eps);
  for (int64_t h = threadIdx.x; h < p.hidden; h += blockDim.x) {
    out[h] = (x[h] * inv_rms) * LoadWeight(p.weight, p.weight_dtype, h);
  }
}

}  // namespace

cudaError_t RmsNorm(const RmsNormParams& p, cudaStream_t stream) {
  if (p.rows == 0) return cudaSuccess;
  const int threads = p.hidden >= 1024 ? 1024 : static_cast<int>((p.hidden + 31) / 32 * 32);
  RmsNormKernel<<<static_cast<unsigned>(p.rows), threads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace moeserve::kernels::cuda
