#include "kernels/cuda/kv_write.cuh"

#include <algorithm>

#include "kernels/cuda/dtype.cuh"

namespace moeserve::kernels::cuda {
namespace {

constexpr int kThreads = 128;  // Mixtral: 8 kv heads x 128 = 1024 elements = 128 chunks
constexpr int kChunk = 8;
constexpr int64_t kMaxBlocks = int64_t{1} << 20;  // grid-stride beyond this many tokens

// A: activation storage type, K: cache storage type. kVec: row % 8 == 0 and pointers aligned.
template <typename A, typename K, bool kVec>
__global__ void __launch_bounds__(kThreads) KvWriteKernel(KvWriteParams p) {
  const int64_t row = p.num_kv_heads * p.head_dim;  // elements per token
  const int64_t chunks = (row + kChunk - 1) / kChunk;
  for (int64_t t = blockIdx.x; t < p.num_tokens; t += gridDim.x) {
    const int64_t slot = p.slots[t];
    if (slot < 0 || slot >= p.num_slots) continue;  // uniform over the block
    const A* k = static_cast<const A*>(p.k) + t * row;
    const A* v = static_cast<const A*>(p.v) + t * row;
    K* k_cache = static_cast<K*>(p.k_cache) + slot * row;
    K* v_cache = static_cast<K*>(p.v_cache) + slot * row;
#pragma unroll 1
    for (int c = threadIdx.x; c < chunks; c += kThreads) {  // a token row is < 2^31 chunks
      float buf[kChunk];
      LoadChunk<kChunk, kVec>(k, c, row, buf);
      StoreChunk<kChunk, kVec>(k_cache, c, row, buf);
      LoadChunk<kChunk, kVec>(v, c, row, buf);
      StoreChunk<kChunk, kVec>(v_cache, c, row, buf);
    }
  }
}

template <typename A, typename K>
cudaError_t Launch(const KvWriteParams& p, cudaStream_t stream) {
  const int64_t row = p.num_kv_heads * p.head_dim;
  const bool vec = row % kChunk == 0 && Aligned16({p.k, p.v, p.k_cache, p.v_cache});
  const unsigned blocks = static_cast<unsigned>(std::min(p.num_tokens, kMaxBlocks));
  if (vec) {
    KvWriteKernel<A, K, true><<<blocks, kThreads, 0, stream>>>(p);
  } else {
    KvWriteKernel<A, K, false><<<blocks, kThreads, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t KvWrite(const KvWriteParams& p, cudaStream_t stream) {
  if (p.num_tokens == 0) return cudaSuccess;
  return DispatchActDType(p.act_dtype, [&](auto act) {
    return DispatchFloatDType(p.kv_dtype, [&](auto kv) {
      return Launch<typename decltype(act)::type, typename decltype(kv)::type>(p, stream);
    });
  });
}

}  // namespace moeserve::kernels::cuda
