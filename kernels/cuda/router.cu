#include "kernels/cuda/router.cuh"

#include <algorithm>
#include <cstdint>

namespace moeserve::kernels::cuda {
namespace {

constexpr int kWarpsPerBlock = 4;
constexpr int kThreads = 32 * kWarpsPerBlock;
constexpr int64_t kMaxBlocks = int64_t{1} << 16;  // grid-stride beyond 2^18 tokens
constexpr unsigned kFullMask = 0xffffffffu;

// The strict total order of candidates: larger logit first, then lower expert id.
__device__ __forceinline__ bool Before(float a_v, int a_id, float b_v, int b_id) {
  return a_v > b_v || (a_v == b_v && a_id < b_id);
}

__global__ void __launch_bounds__(kThreads) RouterTopKKernel(RouterTopKParams p) {
  const int lane = threadIdx.x % 32;
  const int num_experts = static_cast<int>(p.num_experts);
  const int top_k = static_cast<int>(p.top_k);
  const int64_t warp_stride = int64_t{gridDim.x} * kWarpsPerBlock;
  for (int64_t t = int64_t{blockIdx.x} * kWarpsPerBlock + threadIdx.x / 32; t < p.num_tokens;
       t += warp_stride) {
    const float* logits = p.logits + t * p.num_experts;
    // Lane j < top_k ends up holding choice j.
    float my_v = 0.0f;
    int my_id = -1;
    float prev_v = 0.0f, max_v = 0.0f;
    int prev_id = -1;
    for (int j = 0; j < top_k; ++j) {
      // This lane's best candidate among experts lane, lane + 32, ... after the previous choice.
      float best_v = 0.0f;
      int best_id = -1;
      for (int e = lane; e < num_experts; e += 32) {
        float v = logits[e] + (p.logit_bias != nullptr ? p.logit_bias[e] : 0.0f);
        if (p.token_bias != nullptr) v = __fadd_rn(v, p.token_bias[t * p.num_experts + e]);
        if (j > 0 && !Before(prev_v, prev_id, v, e)) continue;  // already chosen
        if (best_id < 0 || Before(v, e, best_v, best_id)) {
          best_v = v;
          best_id = e;
        }
      }
      // Warp arg-max under the total order: every lane ends with the same winner.
#pragma unroll
      for (int off = 16; off > 0; off /= 2) {
        const float o_v = __shfl_xor_sync(kFullMask, best_v, off);
        const int o_id = __shfl_xor_sync(kFullMask, best_id, off);
        if (o_id >= 0 && (best_id < 0 || Before(o_v, o_id, best_v, best_id))) {
          best_v = o_v;
          best_id = o_id;
        }
      }
      if (j == 0) max_v = best_v;
      prev_v = best_v;
      prev_id = best_id;
      if (lane == j) {
        my_v = best_v;
        my_id = best_id;
      }
    }
    // Softmax over the chosen logits (choice 0 holds the max), denominator in selection order.
    const float expv =
        lane < top_k ? static_cast<float>(exp(static_cast<double>(__fsub_rn(my_v, max_v)))) : 0.0f;
    float denom = 0.0f;
    int rank = 0;  // output position: number of chosen ids below mine (ids are distinct)
    for (int j = 0; j < top_k; ++j) {
      denom = __fadd_rn(denom, __shfl_sync(kFullMask, expv, j));
      rank += __shfl_sync(kFullMask, my_id, j) < my_id ? 1 : 0;
    }
    if (lane < top_k) {
      p.expert_ids[t * p.top_k + rank] = my_id;
      p.weights[t * p.top_k + rank] = __fdiv_rn(expv, denom);
    }
  }
}

}  // namespace

cudaError_t RouterTopK(const RouterTopKParams& p, cudaStream_t stream) {
  if (p.num_tokens == 0) return cudaSuccess;
  if (p.top_k > kRouterMaxTopK || p.num_experts > INT32_MAX) return cudaErrorInvalidValue;
  const int64_t blocks = std::min((p.num_tokens + kWarpsPerBlock - 1) / kWarpsPerBlock, kMaxBlocks);
  RouterTopKKernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace moeserve::kernels::cuda
