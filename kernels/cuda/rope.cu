#include "kernels/cuda/rope.cuh"

#include <algorithm>
#include <cmath>

#include "kernels/cuda/dtype.cuh"

namespace moeserve::kernels::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kChunk = 8;                         // rotation pairs per thread step
constexpr int kMaxHalf = kRopeMaxHeadDim / 2;     // 512 floats = 2 KiB of kernel parameters
constexpr int64_t kMaxBlocks = int64_t{1} << 20;  // grid-stride beyond this many tokens

struct RopeArgs {
  RopeParams p;
  float inv_freq[kMaxHalf];  // [head_dim / 2], computed on the host as the CPU does
};

// Rotates chunk c (pairs c*8 .. c*8+7) of one head in place. v: the head's [head_dim] row.
template <typename T, bool kVec>
__device__ void RotateChunk(T* v, int64_t half, int64_t c, const float* cos_v, const float* sin_v) {
  float a[kChunk], b[kChunk];
  LoadChunk<kChunk, kVec>(v, c, half, a);
  LoadChunk<kChunk, kVec>(v + half, c, half, b);
  float x0[kChunk], x1[kChunk];
#pragma unroll
  for (int i = 0; i < kChunk; ++i) {
    const int64_t idx = c * kChunk + i;
    const float cs = idx < half ? cos_v[idx] : 0.0f;
    const float sn = idx < half ? sin_v[idx] : 0.0f;
    x0[i] = __fsub_rn(__fmul_rn(a[i], cs), __fmul_rn(b[i], sn));
    x1[i] = __fadd_rn(__fmul_rn(b[i], cs), __fmul_rn(a[i], sn));
  }
  StoreChunk<kChunk, kVec>(v, c, half, x0);
  StoreChunk<kChunk, kVec>(v + half, c, half, x1);
}

// kVec: half % 8 == 0 and q, k 16-byte aligned. Dynamic shared memory: 2 * half floats.
template <typename T, bool kVec>
__global__ void __launch_bounds__(kThreads) RopeKernel(RopeArgs args) {
  extern __shared__ float cos_sin[];  // [half] cosines, then [half] sines
  const RopeParams& p = args.p;
  const int64_t half = p.head_dim / 2;
  const int64_t chunks = (half + kChunk - 1) / kChunk;
  float* cos_v = cos_sin;
  float* sin_v = cos_sin + half;
  for (int64_t t = blockIdx.x; t < p.num_tokens; t += gridDim.x) {
    const float pos = static_cast<float>(p.positions[t]);
    for (int64_t i = threadIdx.x; i < half; i += kThreads) {
      const float angle = __fmul_rn(pos, args.inv_freq[i]);
      double s, c;
      sincos(static_cast<double>(angle), &s, &c);
      cos_v[i] = static_cast<float>(c);
      sin_v[i] = static_cast<float>(s);
    }
    __syncthreads();
    const int64_t q_items = p.num_q_heads * chunks;
    const int64_t items = (p.num_q_heads + p.num_kv_heads) * chunks;
    for (int64_t item = threadIdx.x; item < items; item += kThreads) {
      T* v;
      int64_t c;
      if (item < q_items) {
        v = static_cast<T*>(p.q) + (t * p.num_q_heads + item / chunks) * p.head_dim;
        c = item % chunks;
      } else {
        const int64_t k_item = item - q_items;
        v = static_cast<T*>(p.k) + (t * p.num_kv_heads + k_item / chunks) * p.head_dim;
        c = k_item % chunks;
      }
      RotateChunk<T, kVec>(v, half, c, cos_v, sin_v);
    }
    __syncthreads();  // cos_sin is rewritten for the next token
  }
}

}  // namespace

cudaError_t Rope(const RopeParams& p, cudaStream_t stream) {
  if (p.num_tokens == 0) return cudaSuccess;
  if (p.head_dim > kRopeMaxHeadDim) return cudaErrorInvalidValue;
  RopeArgs args;
  args.p = p;
  const int64_t half = p.head_dim / 2;
  // Exactly the CPU reference's inv_freq (kernels/cpu/rope.cc), on the host, with host libm.
  for (int64_t i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(p.head_dim);
    args.inv_freq[i] = 1.0f / std::pow(p.theta, exponent);
  }
  for (int64_t i = half; i < kMaxHalf; ++i) args.inv_freq[i] = 0.0f;
  const unsigned blocks = static_cast<unsigned>(std::min(p.num_tokens, kMaxBlocks));
  const size_t smem = 2 * static_cast<size_t>(half) * sizeof(float);
  const bool vec = half % kChunk == 0 && Aligned16({p.q, p.k});
  return DispatchActDType(p.act_dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (vec) {
      RopeKernel<T, true><<<blocks, kThreads, smem, stream>>>(args);
    } else {
      RopeKernel<T, false><<<blocks, kThreads, smem, stream>>>(args);
    }
    return cudaGetLastError();
  });
}

}  // namespace moeserve::kernels::cuda
