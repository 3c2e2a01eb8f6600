#include "kernels/cuda/random_fill.cuh"

#include <algorithm>

#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/dtype.cuh"

namespace moeserve::kernels::cuda {
namespace {

// Device copy of RandomFillUniform (kernels/cpu/random_fill.h): integer ops are exact, and the
// int -> float conversion of a 24-bit value and the power-of-two scale are exact too.
__device__ __forceinline__ float Uniform(uint64_t seed, uint64_t i) {
  uint64_t z = seed + (i + 1) * 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return static_cast<float>(static_cast<uint32_t>(z >> 40)) * 0x1.0p-24f;
}

template <typename T>
__global__ void RandomFillKernel(T* out, int64_t numel, uint64_t seed, float center, float half) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < numel;
       i += stride) {
    const float u = Uniform(seed, static_cast<uint64_t>(i));
    const float scaled = __fmul_rn(half, __fadd_rn(__fmul_rn(2.0f, u), -1.0f));
    out[i] = FromF32<T>(__fadd_rn(center, scaled));
  }
}

}  // namespace

cudaError_t RandomFill(const RandomFillParams& p, cudaStream_t stream) {
  if (p.numel == 0) return cudaSuccess;
  constexpr int kThreads = 256;
  const int64_t blocks = std::min<int64_t>((p.numel + kThreads - 1) / kThreads, 65536);
  const dim3 grid(static_cast<unsigned>(blocks));
  switch (p.dtype) {
    case DType::kF32:
      RandomFillKernel<float><<<grid, kThreads, 0, stream>>>(static_cast<float*>(p.out), p.numel,
                                                             p.seed, p.center, p.half_range);
      break;
    case DType::kBF16:
      RandomFillKernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(
          static_cast<__nv_bfloat16*>(p.out), p.numel, p.seed, p.center, p.half_range);
      break;
    case DType::kF16:
      RandomFillKernel<__half><<<grid, kThreads, 0, stream>>>(static_cast<__half*>(p.out), p.numel,
                                                              p.seed, p.center, p.half_range);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

absl::Status RandomFillSync(const RandomFillParams& p) {
  cudaStream_t stream = nullptr;
  MOESERVE_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const cudaError_t launch = RandomFill(p, stream);
  const cudaError_t sync = cudaStreamSynchronize(stream);
  cudaStreamDestroy(stream);
  MOESERVE_CUDA_RETURN_IF_ERROR(launch);
  MOESERVE_CUDA_RETURN_IF_ERROR(sync);
  return absl::OkStatus();
}

}  // namespace moeserve::kernels::cuda
