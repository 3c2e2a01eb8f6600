#include "kernels/cuda/moe_permute.cuh"

#include <algorithm>

#include "kernels/cuda/dtype.cuh"

namespace moeserve::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kChunk = 8;
constexpr int64_t kMaxBlocks = int64_t{1} << 20;      // grid-stride beyond this many rows
constexpr int64_t kMaxFlatBlocks = int64_t{1} << 16;  // flat kernels: 2^16 x 256 x 8 per pass

// ---- GatherRows ----------------------------------------------------------------------------

// U: the copy unit (uint4, uint32_t or uint16_t); units: U per row.
template <typename U>
__global__ void __launch_bounds__(kThreads) GatherRowsKernel(GatherRowsParams p, int64_t units) {
  const U* src = static_cast<const U*>(p.src);
  U* dst = static_cast<U*>(p.dst);
  for (int64_t i = blockIdx.x; i < p.num_rows; i += gridDim.x) {
    const int32_t r = p.rows[i];
    const bool valid = r >= 0 && r < p.num_src_rows;
    const U* from = src + (valid ? int64_t{r} * units : 0);
    U* to = dst + i * units;
    for (int64_t u = threadIdx.x; u < units; u += kThreads) to[u] = valid ? from[u] : U{};
  }
}

// ---- SwiGlu --------------------------------------------------------------------------------

__device__ __forceinline__ float Silu(float g) {
  const float e = static_cast<float>(exp(static_cast<double>(-g)));
  return __fdiv_rn(g, __fadd_rn(1.0f, e));
}

// kVec: gate, up and out 16-byte aligned (full chunks vectorised, the last partial one scalar).
template <typename T, bool kVec>
__global__ void __launch_bounds__(kThreads) SwiGluKernel(SwiGluParams p) {
  const T* gate = static_cast<const T*>(p.gate);
  const T* up = static_cast<const T*>(p.up);
  T* out = static_cast<T*>(p.out);
  const int64_t chunks = (p.n + kChunk - 1) / kChunk;
  const int64_t stride = int64_t{gridDim.x} * kThreads;
  for (int64_t c = int64_t{blockIdx.x} * kThreads + threadIdx.x; c < chunks; c += stride) {
    float g[kChunk], u[kChunk];
    const bool full = (c + 1) * kChunk <= p.n;
    if (kVec && full) {
      LoadChunk<kChunk, true>(gate, c, p.n, g);
      LoadChunk<kChunk, true>(up, c, p.n, u);
    } else {
      LoadChunk<kChunk, false>(gate, c, p.n, g);
      LoadChunk<kChunk, false>(up, c, p.n, u);
    }
#pragma unroll
    for (int i = 0; i < kChunk; ++i) g[i] = __fmul_rn(Silu(g[i]), u[i]);
    if (kVec && full) {
      StoreChunk<kChunk, true>(out, c, p.n, g);
    } else {
      StoreChunk<kChunk, false>(out, c, p.n, g);
    }
  }
}

// ---- MoeCombine ----------------------------------------------------------------------------

// kVec: hidden % 8 == 0 and expert_out, out 16-byte aligned.
template <typename T, bool kVec>
__global__ void __launch_bounds__(kThreads) MoeCombineKernel(MoeCombineParams p) {
  const int64_t hidden = p.hidden;
  const int64_t chunks = (hidden + kChunk - 1) / kChunk;
  const T* expert_out = static_cast<const T*>(p.expert_out);
  for (int64_t t = blockIdx.x; t < p.num_tokens; t += gridDim.x) {
    T* out = static_cast<T*>(p.out) + t * hidden;
#pragma unroll 1
    for (int64_t c = threadIdx.x; c < chunks; c += kThreads) {
      float acc[kChunk];
#pragma unroll
      for (int i = 0; i < kChunk; ++i) acc[i] = 0.0f;
      for (int64_t j = 0; j < p.top_k; ++j) {  // ascending j: ascending expert id
        const int32_t r = p.src_rows[t * p.top_k + j];
        if (r < 0 || r >= p.num_expert_rows) continue;
        const float w = p.weights[t * p.top_k + j];
        float x[kChunk];
        LoadChunk<kChunk, kVec>(expert_out + int64_t{r} * hidden, c, hidden, x);
#pragma unroll
        for (int i = 0; i < kChunk; ++i) acc[i] = __fadd_rn(acc[i], __fmul_rn(w, x[i]));
      }
      StoreChunk<kChunk, kVec>(out, c, hidden, acc);
    }
  }
}

}  // namespace

cudaError_t GatherRows(const GatherRowsParams& p, cudaStream_t stream) {
  if (p.num_rows == 0) return cudaSuccess;
  const int64_t row_bytes = p.hidden * static_cast<int64_t>(DTypeSize(p.act_dtype));
  const unsigned blocks = static_cast<unsigned>(std::min(p.num_rows, kMaxBlocks));
  const auto aligned = [&](uintptr_t a) {
    return row_bytes % a == 0 && reinterpret_cast<uintptr_t>(p.src) % a == 0 &&
           reinterpret_cast<uintptr_t>(p.dst) % a == 0;
  };
  if (aligned(16)) {
    GatherRowsKernel<uint4><<<blocks, kThreads, 0, stream>>>(p, row_bytes / 16);
  } else if (aligned(4)) {
    GatherRowsKernel<uint32_t><<<blocks, kThreads, 0, stream>>>(p, row_bytes / 4);
  } else if (aligned(2)) {
    GatherRowsKernel<uint16_t><<<blocks, kThreads, 0, stream>>>(p, row_bytes / 2);
  } else {
    return cudaErrorInvalidValue;  // no 1-byte activation dtype exists
  }
  return cudaGetLastError();
}

cudaError_t SwiGlu(const SwiGluParams& p, cudaStream_t stream) {
  if (p.n == 0) return cudaSuccess;
  const int64_t chunks = (p.n + kChunk - 1) / kChunk;
  const unsigned blocks =
      static_cast<unsigned>(std::min((chunks + kThreads - 1) / kThreads, kMaxFlatBlocks));
  const bool vec = Aligned16({p.gate, p.up, p.out});
  return DispatchActDType(p.act_dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (vec) {
      SwiGluKernel<T, true><<<blocks, kThreads, 0, stream>>>(p);
    } else {
      SwiGluKernel<T, false><<<blocks, kThreads, 0, stream>>>(p);
    }
    return cudaGetLastError();
  });
}

cudaError_t MoeCombine(const MoeCombineParams& p, cudaStream_t stream) {
  if (p.num_tokens == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>(std::min(p.num_tokens, kMaxBlocks));
  const bool vec = p.hidden % kChunk == 0 && Aligned16({p.expert_out, p.out});
  return DispatchActDType(p.act_dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (vec) {
      MoeCombineKernel<T, true><<<blocks, kThreads, 0, stream>>>(p);
    } else {
      MoeCombineKernel<T, false><<<blocks, kThreads, 0, stream>>>(p);
    }
    return cudaGetLastError();
  });
}

}  // namespace moeserve::kernels::cuda
