// Grouped expert GEMM for MoE, sized on the device (vLLM fused_moe style).
//
// Algorithm. Rows are sorted by expert (MoeAlign); expert e owns rows offsets[e] ..
// offsets[e+1]-1. The grid is fixed by host values: x = ceil(max_rows / BM) + num_experts
// m-tiles, y = ceil(n / 64) n-tiles. Expert e owns m-tiles TS(e) .. TS(e+1)-1 with
// TS(e) = offsets[e] / BM + e, which is always enough for its ceil(count / BM) tiles, so a tile
// never straddles two experts; a CTA finds its expert by counting the e with TS(e) <= blockIdx.x
// (one __syncthreads_count per 128 experts) and exits when its tile is past the expert's rows
// (at most ~1 spare tile per expert). The CTA computes y[rows, n-tile] = x[rows, :] @
// w[e][n-tile, :]^T, reading each weight element of its n-tile exactly once.
//
// Tensor-core path (bf16 x, bf16 w, k % 8 == 0): BN = 64, BK = 32, BM in {16, 32, 64} chosen on
// the host from max_rows / num_experts (decode: 16, so a 1-16-row expert does not load a 64-row
// x tile or do 4x the MMAs). 4 warps, warp w owns columns [16w, 16w+16) and BM/16 WMMA
// 16x16x16 bf16 fragments with fp32 accumulators; a cp.async (16-byte, zero-filling)
// pipeline of 3-7 stages (as many as fit in 48 KB) streams x and w tiles through shared memory. The
// SwiGLU form keeps gate and up accumulators for the same rows/columns and writes silu(g) * u
// rounded once. Fixed k order, identical for every BM: each output element is one accumulator
// fragment element updated by mma_sync over k16 steps in ascending k (BK chunks in order, two k16
// steps per chunk); BM only changes how many 16-row fragments a warp holds, never the fragment
// shape, the k steps or the order, and the MMA for an element does not depend on the other rows'
// values. Rows past the expert's range and k past k are zero-filled (the padding depends on k
// only). So a row's bits do not depend on how many rows share its tile or on the BM choice.
//
// FMA path (any other dtype pair: fp32/fp16 weights, fp32 activations): BM = 32, BN = 64,
// BK = 32, 128 threads each owning 4x4 outputs (x2 for SwiGLU), operands converted to fp32 in
// shared memory, acc = fma(x[k], w[k], acc) in ascending k, one accumulator per element.
//
// Expected efficiency (H200). Decode (few rows per expert) is bound by weight reads: every
// CTA streams a 64 x k weight slab once with 16-byte cp.async; with ~450+ working CTAs per
// Mixtral w1/w3 call the target is >= 60-70% of HBM bandwidth (~3 TB/s); not measured yet.
// Prefill (many rows per expert) with BM = 64 x BN = 64 tiles and WMMA from shared memory
// without ldmatrix swizzling reaches perhaps 30-50% of bf16 tensor-core peak; a CUTLASS /
// cuBLASLt grouped GEMM or wgmma (sm_90a) kernel would do 2-3x better. The FMA path is for tests
// and fp32/fp16 weights: a few TFLOPS.
// Known limits: n <= 4194240 (65535 n-tiles); the tensor-core path needs k % 8 == 0 (else FMA);
// a w[e] not 16-byte aligned is read with plain 2-byte loads (slow but correct).
#include <mma.h>

#include <cstdint>

#include "kernels/cuda/dtype.cuh"
#include "kernels/cuda/grouped_matmul.cuh"

namespace moeserve::kernels::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kBN = 64;  // output columns per CTA
constexpr int kBK = 32;  // k per pipeline stage

// Finds the m-tile's expert and row range: expert e owns tiles TS(e) .. TS(e+1)-1,
// TS(e) = offsets[e] / bm + e. Returns false (uniformly) when the tile has no rows.
// Must be called by every thread of the CTA (it contains barriers).
__device__ bool FindExpertTile(const GroupedMatmulParams& p, int bm, int& expert, int& row_begin,
                               int& row_end) {
  const int m_tile = static_cast<int>(blockIdx.x);
  const int num_experts = static_cast<int>(p.num_experts);
  int count = 0;
  for (int base = 0; base < num_experts; base += kThreads) {
    const int e = base + static_cast<int>(threadIdx.x);
    count += __syncthreads_count(e < num_experts && p.expert_offsets[e] / bm + e <= m_tile);
  }
  expert = count - 1;
  const int begin = p.expert_offsets[expert], end = p.expert_offsets[expert + 1];
  row_begin = begin + (m_tile - (begin / bm + expert)) * bm;
  row_end = min(row_begin + bm, end);
  return row_begin < end && p.w[expert] != nullptr &&
         (p.w_up == nullptr || p.w_up[expert] != nullptr);
}

__device__ __forceinline__ float Silu(float g) { return g / (1.0f + expf(-g)); }

// ---- Tensor-core path (bf16 x, bf16 w) -----------------------------------------------------

constexpr int kBKPad = kBK + 8;     // smem row pitch in bf16 (80 bytes: 16-byte aligned, fewer
                                    // bank conflicts; a multiple of 8 as WMMA requires)
constexpr int kEpiPitch = kBN + 4;  // fp32 epilogue row pitch (multiple of 4 as WMMA requires)

// 16-byte global -> shared copy; src_valid == false zero-fills the destination without reading.
__device__ __forceinline__ void CpAsync16(void* smem_dst, const void* gmem_src, bool src_valid) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  const int src_bytes = src_valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem_src),
               "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void CpAsyncCommit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int kPending>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

// Copies 8 bf16 (one 16-byte chunk) of a row; cp.async when the source is 16-byte aligned, else
// plain loads (a weight pointer that is not 16-byte aligned).
__device__ __forceinline__ void CopyChunk(__nv_bfloat16* dst, const __nv_bfloat16* src, bool valid,
                                          bool aligned, const void* any_valid_ptr) {
  if (aligned) {
    CpAsync16(dst, valid ? static_cast<const void*>(src) : any_valid_ptr, valid);
  } else {
#pragma unroll
    for (int e = 0; e < 8; ++e) dst[e] = valid ? src[e] : __float2bfloat16_rn(0.0f);
  }
}

template <int kBM, bool kSwiGlu>
struct WmmaSmem {
  static constexpr int kWeightMats = kSwiGlu ? 2 : 1;
  static constexpr int kStageElems = (kBM + kWeightMats * kBN) * kBKPad;  // bf16 per stage
  // As many pipeline stages as fit in 48 KB of static shared memory (3..7): small-BM (decode)
  // tiles are few and weight-bound, so they keep more weight bytes in flight per CTA.
  static constexpr int kMaxStages = 48 * 1024 / (kStageElems * 2);
  static constexpr int kStages = kMaxStages > 7 ? 7 : kMaxStages;
  static_assert(kStages >= 3, "pipeline needs at least 3 stages");
  static constexpr int kPipeBytes = kStages * kStageElems * 2;
  static constexpr int kEpiBytes = kWeightMats * kBM * kEpiPitch * 4;
  static constexpr int kBytes = kPipeBytes > kEpiBytes ? kPipeBytes : kEpiBytes;
};

template <int kBM, bool kSwiGlu>
__global__ void __launch_bounds__(kThreads) GroupedMatmulWmmaKernel(const GroupedMatmulParams p) {
  using namespace nvcuda;
  using Smem = WmmaSmem<kBM, kSwiGlu>;
  constexpr int kMFrags = kBM / 16;
  constexpr int kStages = Smem::kStages;
  __shared__ __align__(128) unsigned char smem[Smem::kBytes];

  int expert, row_begin, row_end;
  if (!FindExpertTile(p, kBM, expert, row_begin, row_end)) return;
  const int rows = row_end - row_begin;
  const int64_t n = p.n, k = p.k;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * kBN;
  const auto* x = static_cast<const __nv_bfloat16*>(p.x);
  const auto* w = static_cast<const __nv_bfloat16*>(p.w[expert]);
  const auto* w_up = kSwiGlu ? static_cast<const __nv_bfloat16*>(p.w_up[expert]) : nullptr;
  const bool w_aligned =
      (reinterpret_cast<uintptr_t>(w) | (kSwiGlu ? reinterpret_cast<uintptr_t>(w_up) : 0)) % 16 ==
      0;
  const int tid = threadIdx.x, warp = tid / 32;

  auto* pipe = reinterpret_cast<__nv_bfloat16*>(smem);
  // Stage s: x tile [kBM][kBKPad], then w tile [kBN][kBKPad], then (SwiGLU) w_up tile.
  auto x_tile = [&](int s) { return pipe + s * Smem::kStageElems; };
  auto w_tile = [&](int s, int mat) {
    return pipe + s * Smem::kStageElems + (kBM + mat * kBN) * kBKPad;
  };

  const int num_k_tiles = static_cast<int>((k + kBK - 1) / kBK);
  auto load_stage = [&](int s, int kt) {
    const int64_t k0 = static_cast<int64_t>(kt) * kBK;
    // x: kBM rows x 4 chunks of 8 (k % 8 == 0, so a chunk is wholly inside or outside k).
    for (int c = tid; c < kBM * 4; c += kThreads) {
      const int r = c / 4, kc = (c % 4) * 8;
      const bool valid = r < rows && k0 + kc < k;
      CopyChunk(x_tile(s) + r * kBKPad + kc, x + (row_begin + r) * k + k0 + kc, valid, true, x);
    }
#pragma unroll
    for (int mat = 0; mat < Smem::kWeightMats; ++mat) {
      const __nv_bfloat16* src = mat == 0 ? w : w_up;
      for (int c = tid; c < kBN * 4; c += kThreads) {
        const int r = c / 4, kc = (c % 4) * 8;
        const bool valid = n0 + r < n && k0 + kc < k;
        CopyChunk(w_tile(s, mat) + r * kBKPad + kc, src + (n0 + r) * k + k0 + kc, valid, w_aligned,
                  x);
      }
    }
  };

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[kMFrags], acc_up[kSwiGlu ? kMFrags : 1];
#pragma unroll
  for (int i = 0; i < kMFrags; ++i) wmma::fill_fragment(acc[i], 0.0f);
#pragma unroll
  for (int i = 0; i < (kSwiGlu ? kMFrags : 1); ++i) wmma::fill_fragment(acc_up[i], 0.0f);

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < num_k_tiles) load_stage(s, s);
    CpAsyncCommit();  // always commit, so group counting stays uniform
  }
  for (int kt = 0; kt < num_k_tiles; ++kt) {
    CpAsyncWait<kStages - 2>();  // tile kt has landed (for this thread's copies)
    __syncthreads();             // ... for everyone's; and stage (kt-1) % kStages is free again
    const int next = kt + kStages - 1;
    if (next < num_k_tiles) load_stage(next % kStages, next);
    CpAsyncCommit();

    const int s = kt % kStages;
#pragma unroll
    for (int kk = 0; kk < kBK; kk += 16) {
      wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> b, b_up;
      // B(k, col) = w[col][k]: column-major with leading dimension kBKPad.
      wmma::load_matrix_sync(b, w_tile(s, 0) + warp * 16 * kBKPad + kk, kBKPad);
      if constexpr (kSwiGlu) {
        wmma::load_matrix_sync(b_up, w_tile(s, 1) + warp * 16 * kBKPad + kk, kBKPad);
      }
#pragma unroll
      for (int i = 0; i < kMFrags; ++i) {
        if (i * 16 < rows) {  // fragments wholly past the tile's rows hold zeros only: skip
          wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
          wmma::load_matrix_sync(a, x_tile(s) + i * 16 * kBKPad + kk, kBKPad);
          wmma::mma_sync(acc[i], a, b, acc[i]);
          if constexpr (kSwiGlu) wmma::mma_sync(acc_up[i], a, b_up, acc_up[i]);
        }
      }
    }
  }
  CpAsyncWait<0>();
  __syncthreads();  // pipeline buffers become the epilogue area

  auto* epi = reinterpret_cast<float*>(smem);  // [kWeightMats][kBM][kEpiPitch]
#pragma unroll
  for (int i = 0; i < kMFrags; ++i) {
    wmma::store_matrix_sync(epi + i * 16 * kEpiPitch + warp * 16, acc[i], kEpiPitch,
                            wmma::mem_row_major);
    if constexpr (kSwiGlu) {
      wmma::store_matrix_sync(epi + (kBM + i * 16) * kEpiPitch + warp * 16, acc_up[i], kEpiPitch,
                              wmma::mem_row_major);
    }
  }
  __syncthreads();
  auto* y = static_cast<__nv_bfloat16*>(p.y);
  for (int i = tid; i < rows * kBN; i += kThreads) {
    const int r = i / kBN, c = i % kBN;
    if (n0 + c >= n) continue;
    float v = epi[r * kEpiPitch + c];
    if constexpr (kSwiGlu) v = Silu(v) * epi[(kBM + r) * kEpiPitch + c];
    y[(row_begin + r) * n + n0 + c] = FromF32<__nv_bfloat16>(v);
  }
}

// ---- FMA path (any float dtypes) -----------------------------------------------------------

constexpr int kFmaBM = 32;

template <typename TA, typename TW>
__global__ void __launch_bounds__(kThreads) GroupedMatmulFmaKernel(const GroupedMatmulParams p) {
  __shared__ float x_s[kFmaBM][kBK + 1];
  __shared__ float w_s[kBN][kBK + 1];
  __shared__ float w_up_s[kBN][kBK + 1];

  int expert, row_begin, row_end;
  if (!FindExpertTile(p, kFmaBM, expert, row_begin, row_end)) return;
  const int rows = row_end - row_begin;
  const int64_t n = p.n, k = p.k;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * kBN;
  const TA* x = static_cast<const TA*>(p.x);
  const TW* w = static_cast<const TW*>(p.w[expert]);
  const TW* w_up = p.w_up != nullptr ? static_cast<const TW*>(p.w_up[expert]) : nullptr;
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;  // rows ty + 8i, cols tx + 16j

  float acc[4][4], acc_up[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = acc_up[i][j] = 0.0f;
  }

  for (int64_t k0 = 0; k0 < k; k0 += kBK) {
    const int k_len = static_cast<int>(k - k0 < kBK ? k - k0 : kBK);
    for (int i = tid; i < kFmaBM * kBK; i += kThreads) {
      const int r = i / kBK, kk = i % kBK;
      x_s[r][kk] = r < rows && kk < k_len ? ToF32(x[(row_begin + r) * k + k0 + kk]) : 0.0f;
    }
    for (int i = tid; i < kBN * kBK; i += kThreads) {
      const int c = i / kBK, kk = i % kBK;
      const bool valid = n0 + c < n && kk < k_len;
      w_s[c][kk] = valid ? ToF32(w[(n0 + c) * k + k0 + kk]) : 0.0f;
      if (w_up != nullptr) w_up_s[c][kk] = valid ? ToF32(w_up[(n0 + c) * k + k0 + kk]) : 0.0f;
    }
    __syncthreads();
    for (int kk = 0; kk < k_len; ++kk) {  // ascending k: the fixed order of every element
      float a[4], b[4], b_up[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = x_s[ty + 8 * i][kk];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        b[j] = w_s[tx + 16 * j][kk];
        b_up[j] = w_up_s[tx + 16 * j][kk];
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
          if (w_up != nullptr) acc_up[i][j] = fmaf(a[i], b_up[j], acc_up[i][j]);
        }
      }
    }
    __syncthreads();
  }

  TA* y = static_cast<TA*>(p.y);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int r = ty + 8 * i;
    if (r >= rows) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t col = n0 + tx + 16 * j;
      if (col >= n) continue;
      const float v = w_up != nullptr ? Silu(acc[i][j]) * acc_up[i][j] : acc[i][j];
      y[(row_begin + r) * n + col] = FromF32<TA>(v);
    }
  }
}

template <int kBM>
cudaError_t LaunchWmma(const GroupedMatmulParams& p, unsigned n_tiles, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((p.max_rows + kBM - 1) / kBM + p.num_experts), n_tiles);
  if (p.w_up != nullptr) {
    GroupedMatmulWmmaKernel<kBM, true><<<grid, kThreads, 0, stream>>>(p);
  } else {
    GroupedMatmulWmmaKernel<kBM, false><<<grid, kThreads, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t GroupedMatmul(const GroupedMatmulParams& p, cudaStream_t stream) {
  if (p.max_rows == 0 || p.n == 0) return cudaSuccess;
  if (p.num_experts <= 0 || p.max_rows < 0 || p.n < 0 || p.k < 0 || p.x == nullptr ||
      p.y == nullptr || p.w == nullptr || p.expert_offsets == nullptr) {
    return cudaErrorInvalidValue;
  }
  if (!IsFloat(p.act_dtype) || !IsFloat(p.w_dtype)) return cudaErrorInvalidValue;
  const int64_t n_tiles = (p.n + kBN - 1) / kBN;
  if (n_tiles > 65535 || p.max_rows + p.num_experts > 0x7fffffff) return cudaErrorInvalidValue;

  if (p.act_dtype == DType::kBF16 && p.w_dtype == DType::kBF16 && p.k % 8 == 0 &&
      reinterpret_cast<uintptr_t>(p.x) % 16 == 0) {
    // Tile height from the average rows per expert (a host bound): small tiles for decode so
    // a 1-16-row expert tile does not pay for 64 rows. The per-element k order is the same for
    // every choice (see the top comment), so this switch cannot change any result bit.
    const int64_t rows_per_expert = (p.max_rows + p.num_experts - 1) / p.num_experts;
    const unsigned nt = static_cast<unsigned>(n_tiles);
    if (rows_per_expert <= 16) return LaunchWmma<16>(p, nt, stream);
    if (rows_per_expert <= 32) return LaunchWmma<32>(p, nt, stream);
    return LaunchWmma<64>(p, nt, stream);
  }
  const dim3 grid(static_cast<unsigned>((p.max_rows + kFmaBM - 1) / kFmaBM + p.num_experts),
                  static_cast<unsigned>(n_tiles));
  return DispatchFloatDType(p.act_dtype, [&](auto act_tag) {
    using TA = typename decltype(act_tag)::type;
    return DispatchFloatDType(p.w_dtype, [&](auto w_tag) {
      using TW = typename decltype(w_tag)::type;
      GroupedMatmulFmaKernel<TA, TW><<<grid, kThreads, 0, stream>>>(p);
      return cudaGetLastError();
    });
  });
}

}  // namespace moeserve::kernels::cuda
