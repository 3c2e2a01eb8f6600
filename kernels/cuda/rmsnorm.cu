#include "kernels/cuda/rmsnorm.cuh"

#include <algorithm>

#include "kernels/cuda/dtype.cuh"

namespace moeserve::kernels::cuda {
namespace {

constexpr int kThreads = 256;  // fixed: the reduction tree depends on it, never on rows
constexpr int kWarps = kThreads / 32;
constexpr int kChunk = 8;  // elements per thread step (16-byte bf16 load, 2 x 16-byte fp32)
constexpr int64_t kMaxBlocks = int64_t{1} << 20;  // grid-stride beyond this many rows

// Sum of one float per thread of the block, identical bits in every thread.
// Fixed order: xor-butterfly within each warp (a + b == b + a bit for bit, so every lane ends
// with the same value), then warp sums added in ascending warp order.
__device__ float BlockSum(float v, float (&warp_sums)[kWarps]) {
#pragma unroll
  for (int off = 16; off > 0; off /= 2) v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, off));
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = v;
  __syncthreads();
  float total = warp_sums[0];
#pragma unroll
  for (int w = 1; w < kWarps; ++w) total = __fadd_rn(total, warp_sums[w]);
  __syncthreads();  // warp_sums is rewritten by the next row
  return total;
}

// T: activation storage type, W: weight storage type. kVec: hidden % kChunk == 0 and x, out,
// residual and weight 16-byte aligned (16-byte loads); otherwise scalar loads. Both paths
// compute the same values in the same order.
template <typename T, typename W, bool kVec>
__global__ void __launch_bounds__(kThreads) RmsNormKernel(RmsNormParams p) {
  __shared__ float warp_sums[kWarps];
  const int64_t hidden = p.hidden;
  const int64_t num_chunks = (hidden + kChunk - 1) / kChunk;
  const W* weight = static_cast<const W*>(p.weight);
  for (int64_t row = blockIdx.x; row < p.rows; row += gridDim.x) {
    const int64_t base = row * hidden;
    const T* x = static_cast<const T*>(p.x) + base;
    T* out = static_cast<T*>(p.out) + base;
    T* residual = p.residual != nullptr ? static_cast<T*>(p.residual) + base : nullptr;
    // The normalised input: x, or s = residual + x rounded to T and stored back to residual.
    const T* in = residual != nullptr ? residual : x;

    float sum_sq = 0.0f;
    for (int64_t c = threadIdx.x; c < num_chunks; c += kThreads) {
      float v[kChunk];
      LoadChunk<kChunk, kVec>(x, c, hidden, v);
      if (residual != nullptr) {
        float r[kChunk];
        LoadChunk<kChunk, kVec>(residual, c, hidden, r);
#pragma unroll
        for (int i = 0; i < kChunk; ++i) v[i] = ToF32(FromF32<T>(__fadd_rn(r[i], v[i])));
        StoreChunk<kChunk, kVec>(residual, c, hidden, v);
      }
#pragma unroll
      for (int i = 0; i < kChunk; ++i) {
        if (kVec || c * kChunk + i < hidden) sum_sq = __fadd_rn(sum_sq, __fmul_rn(v[i], v[i]));
      }
    }
    const float total = BlockSum(sum_sq, warp_sums);
    const float inv_rms =
        __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(__fdiv_rn(total, static_cast<float>(hidden)), p.eps)));

    // Second pass re-reads the input (this thread wrote its own residual chunks above). out may
    // alias x: each element is read before this thread writes it.
    for (int64_t c = threadIdx.x; c < num_chunks; c += kThreads) {
      float v[kChunk], w[kChunk];
      LoadChunk<kChunk, kVec>(in, c, hidden, v);
      LoadChunk<kChunk, kVec>(weight, c, hidden, w);
#pragma unroll
      for (int i = 0; i < kChunk; ++i) v[i] = __fmul_rn(__fmul_rn(v[i], inv_rms), w[i]);
      StoreChunk<kChunk, kVec>(out, c, hidden, v);
    }
  }
}

template <typename T, typename W>
cudaError_t Launch(const RmsNormParams& p, cudaStream_t stream) {
  const bool vec = p.hidden % kChunk == 0 && Aligned16({p.x, p.out, p.residual, p.weight});
  const unsigned blocks = static_cast<unsigned>(std::min(p.rows, kMaxBlocks));
  if (vec) {
    RmsNormKernel<T, W, true><<<blocks, kThreads, 0, stream>>>(p);
  } else {
    RmsNormKernel<T, W, false><<<blocks, kThreads, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t RmsNorm(const RmsNormParams& p, cudaStream_t stream) {
  if (p.rows == 0) return cudaSuccess;
  return DispatchActDType(p.act_dtype, [&](auto act) {
    return DispatchFloatDType(p.weight_dtype, [&](auto weight) {
      return Launch<typename decltype(act)::type, typename decltype(weight)::type>(p, stream);
    });
  });
}

}  // namespace moeserve::kernels::cuda
