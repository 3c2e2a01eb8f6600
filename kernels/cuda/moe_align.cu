#include "kernels/cuda/moe_align.cuh"

#include <cstdint>

namespace moeserve::kernels::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFullMask = 0xffffffffu;

// Dynamic shared memory: cursor [E] int32, then warp_hist [kWarps][E] int32.
__global__ void __launch_bounds__(kThreads) MoeAlignKernel(MoeAlignParams p) {
  extern __shared__ int32_t smem[];
  const int num_experts = static_cast<int>(p.num_experts);
  const int rows = static_cast<int>(p.num_tokens * p.top_k);
  const int top_k = static_cast<int>(p.top_k);
  int32_t* cursor = smem;
  int32_t* warp_hist = smem + num_experts;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;

  // 1. Count rows per expert.
  for (int e = tid; e < num_experts; e += kThreads) cursor[e] = 0;
  __syncthreads();
  for (int i = tid; i < rows; i += kThreads) {
    const int32_t e = p.expert_ids[i];
    if (e >= 0 && e < num_experts) atomicAdd(&cursor[e], 1);
  }
  __syncthreads();

  // 2. Exclusive scan (num_experts <= 512: one thread is fast enough and obviously ordered).
  if (tid == 0) {
    int32_t run = 0;
    for (int e = 0; e < num_experts; ++e) {
      const int32_t count = cursor[e];
      p.expert_offsets[e] = run;
      cursor[e] = run;
      run += count;
      if (p.expert_counts != nullptr) p.expert_counts[e] += count;
    }
    p.expert_offsets[num_experts] = run;
  }
  __syncthreads();

  // 3. Stable scatter, tile by tile in row order.
  const unsigned lanes_below = (1u << lane) - 1u;
  for (int base = 0; base < rows; base += kThreads) {
    const int i = base + tid;
    const int32_t id = i < rows ? p.expert_ids[i] : -1;
    const bool valid = id >= 0 && id < num_experts;
    const int32_t key = valid ? id : -1;  // every invalid row in one group, ignored below
    for (int x = tid; x < kWarps * num_experts; x += kThreads) warp_hist[x] = 0;
    __syncthreads();
    const unsigned peers = __match_any_sync(kFullMask, key);
    const int rank_in_warp = __popc(peers & lanes_below);
    if (valid && rank_in_warp == 0) warp_hist[warp * num_experts + key] = __popc(peers);
    __syncthreads();
    if (valid) {
      int32_t row = cursor[key] + rank_in_warp;
      for (int w = 0; w < warp; ++w) row += warp_hist[w * num_experts + key];
      p.permuted_token[row] = i / top_k;
      p.combine_rows[i] = row;
    } else if (i < rows) {
      p.combine_rows[i] = -1;
    }
    __syncthreads();  // every thread has read the cursors of this tile
    for (int e = tid; e < num_experts; e += kThreads) {
      int32_t tile_count = 0;
      for (int w = 0; w < kWarps; ++w) tile_count += warp_hist[w * num_experts + e];
      cursor[e] += tile_count;
    }
    __syncthreads();  // cursors advanced before the next tile reads them or resets warp_hist
  }
}

}  // namespace

cudaError_t MoeAlign(const MoeAlignParams& p, cudaStream_t stream) {
  if (p.num_experts <= 0 || p.num_experts > kMoeAlignMaxExperts) return cudaErrorInvalidValue;
  if (p.num_tokens < 0 || p.top_k <= 0 ||
      p.num_tokens * p.top_k > INT32_MAX - kThreads) {  // int tile indices never overflow
    return cudaErrorInvalidValue;
  }
  if (p.num_tokens == 0) {
    // No rows, but consumers (GroupedMatmul) still read the offsets: all zero.
    return cudaMemsetAsync(p.expert_offsets, 0, (p.num_experts + 1) * sizeof(int32_t), stream);
  }
  const size_t smem = static_cast<size_t>(1 + kWarps) * p.num_experts * sizeof(int32_t);
  MoeAlignKernel<<<1, kThreads, smem, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace moeserve::kernels::cuda
