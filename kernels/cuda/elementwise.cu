#include "kernels/cuda/elementwise.cuh"

#include <algorithm>

#include "kernels/cuda/dtype.cuh"

namespace moeserve::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kChunk = 8;
constexpr int64_t kMaxBlocks = int64_t{1} << 16;  // grid-stride: 2^16 x 256 x 8 per pass

// kVec: x and y 16-byte aligned (full chunks vectorised, the last partial one scalar).
template <typename T, bool kVec>
__global__ void __launch_bounds__(kThreads) AddInPlaceKernel(AddInPlaceParams p) {
  T* y = static_cast<T*>(p.y);
  const T* x = static_cast<const T*>(p.x);
  const int64_t chunks = (p.n + kChunk - 1) / kChunk;
  const int64_t stride = int64_t{gridDim.x} * kThreads;
  for (int64_t c = int64_t{blockIdx.x} * kThreads + threadIdx.x; c < chunks; c += stride) {
    float a[kChunk], b[kChunk];
    const bool full = (c + 1) * kChunk <= p.n;
    if (kVec && full) {
      LoadChunk<kChunk, true>(y, c, p.n, a);
      LoadChunk<kChunk, true>(x, c, p.n, b);
    } else {
      LoadChunk<kChunk, false>(y, c, p.n, a);
      LoadChunk<kChunk, false>(x, c, p.n, b);
    }
#pragma unroll
    for (int i = 0; i < kChunk; ++i) a[i] = __fadd_rn(a[i], b[i]);
    if (kVec && full) {
      StoreChunk<kChunk, true>(y, c, p.n, a);
    } else {
      StoreChunk<kChunk, false>(y, c, p.n, a);
    }
  }
}

}  // namespace

cudaError_t AddInPlace(const AddInPlaceParams& p, cudaStream_t stream) {
  if (p.n == 0) return cudaSuccess;
  const int64_t chunks = (p.n + kChunk - 1) / kChunk;
  const unsigned blocks =
      static_cast<unsigned>(std::min((chunks + kThreads - 1) / kThreads, kMaxBlocks));
  const bool vec = Aligned16({p.y, p.x});
  return DispatchActDType(p.act_dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (vec) {
      AddInPlaceKernel<T, true><<<blocks, kThreads, 0, stream>>>(p);
    } else {
      AddInPlaceKernel<T, false><<<blocks, kThreads, 0, stream>>>(p);
    }
    return cudaGetLastError();
  });
}

}  // namespace moeserve::kernels::cuda
