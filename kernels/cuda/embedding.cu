#include "kernels/cuda/embedding.cuh"

#include <algorithm>

#include "kernels/cuda/dtype.cuh"

namespace moeserve::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kChunk = 8;
constexpr int64_t kMaxBlocks = int64_t{1} << 20;  // grid-stride beyond this many tokens

// Tab: table storage type, Out: output storage type. kVec: hidden % kChunk == 0 and both
// pointers 16-byte aligned.
template <typename Tab, typename Out, bool kVec>
__global__ void __launch_bounds__(kThreads) EmbeddingKernel(EmbeddingParams p) {
  const int64_t hidden = p.hidden;
  const int64_t num_chunks = (hidden + kChunk - 1) / kChunk;
  for (int64_t t = blockIdx.x; t < p.num_tokens; t += gridDim.x) {
    const int32_t id = p.ids[t];
    const bool valid = id >= 0 && id < p.vocab;  // never read out of bounds
    const Tab* row = static_cast<const Tab*>(p.table) + (valid ? int64_t{id} * hidden : 0);
    Out* out = static_cast<Out*>(p.out) + t * hidden;
#pragma unroll 1
    for (int64_t c = threadIdx.x; c < num_chunks; c += kThreads) {
      float v[kChunk] = {};
      if (valid) LoadChunk<kChunk, kVec>(row, c, hidden, v);
      StoreChunk<kChunk, kVec>(out, c, hidden, v);
    }
  }
}

template <typename Tab, typename Out>
cudaError_t Launch(const EmbeddingParams& p, cudaStream_t stream) {
  const bool vec = p.hidden % kChunk == 0 && Aligned16({p.table, p.out});
  const unsigned blocks = static_cast<unsigned>(std::min(p.num_tokens, kMaxBlocks));
  if (vec) {
    EmbeddingKernel<Tab, Out, true><<<blocks, kThreads, 0, stream>>>(p);
  } else {
    EmbeddingKernel<Tab, Out, false><<<blocks, kThreads, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t Embedding(const EmbeddingParams& p, cudaStream_t stream) {
  if (p.num_tokens == 0) return cudaSuccess;
  return DispatchFloatDType(p.table_dtype, [&](auto table) {
    return DispatchActDType(p.out_dtype, [&](auto out) {
      return Launch<typename decltype(table)::type, typename decltype(out)::type>(p, stream);
    });
  });
}

}  // namespace moeserve::kernels::cuda
