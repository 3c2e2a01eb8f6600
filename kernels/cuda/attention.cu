// Paged GQA attention (chunked prefill + decode in one kernel), fp32 FMA, fp32 online softmax.
//
// Algorithm. A CTA owns one (query tile, kv head, head chunk): up to kRows "rows", each a
// (query token, query head) pair of ONE sequence, packed token-major; the query heads are those of
// the CTA's kv head (GQA: the group shares every K/V load). For Mixtral (group 4, head_dim 128)
// a CTA holds 4 consecutive query tokens x 4 heads in prefill and 1 token x 4 heads in decode.
// Keys are cut into tiles of kKeyTile = 32 consecutive positions ALIGNED TO ABSOLUTE KEY
// POSITIONS (tile t = keys [32t, 32t+32)). Warp w of the kWarps = 4 warps processes the tiles t
// with t % 4 == w, in ascending order, each with its own online-softmax state (m, l, o) per row;
// at the end the four states are combined in warp order 0..3 (flash-decoding inside a CTA, so a
// single-sequence decode still puts 4 warps on its keys).
// Per key tile a warp: stages the K tile [32 keys, head_dim] (native kv dtype) in its own
// shared-memory buffer, lane j computes the scores of key j for all rows (q rows broadcast from
// shared memory as float4), does the online-softmax update per row (row max by warp shuffle),
// then stages the V tile in the same buffer and accumulates o[row][d] += p[row][j] * v[j][d]
// with lane owning dims d = lane + 32 i.
//
// Grid: x = (num_tokens / tokens_per_cta + num_seqs) * head_chunks, y = num_kv_heads, from host
// values only. Sequence s owns query tiles T(s) .. T(s+1)-1 with T(s) = query_start[s] /
// tokens_per_cta + s (enough tiles for its queries, never straddling two sequences); a CTA finds
// its sequence by counting the s with T(s) <= blockIdx (one __syncthreads_count per 128
// sequences). Unused tiles (at most ~1 per sequence) exit at once.
//
// Batch invariance: a row's result depends only on its own key range [first, pos]. Tile
// boundaries and the tile -> warp map depend on absolute key positions only; a tile with no
// visible key for a row is skipped for that row (an exact no-op), keys invisible to a row get
// p = 0 exactly, and the combine over warps is in fixed order (a warp that saw no key of the row
// contributes exp(-inf) * 0 = +0). So decode rows, prefill rows and rows of mixed batches give
// the same bits whatever else is in the batch, and the number of rows per CTA (which depends on
// head_dim) does not enter a row's arithmetic.
//
// Expected performance (H200, bf16 KV, head_dim 128, group 4): decode is memory-bound; with many
// sequences (>= ~64 x 8 kv heads CTAs) it should read the KV cache at a good fraction of HBM
// bandwidth (K/V staged with 16-byte loads, 4 loads in flight per lane; 168 registers, so
// 3 CTAs = 12 warps per SM). A single long sequence only gets num_kv_heads CTAs (8 x 4 warps),
// i.e. a few % of the bandwidth: there is no split-KV across CTAs yet. Prefill runs on fp32 FMA
// (no tensor cores): ~10-20x slower than FlashAttention-2/FlashInfer prefill, and each CTA
// re-reads its keys (from L2) for only 16 rows. A mixed batch launches about one spare CTA per
// sequence and kv head, which exits after one barrier.
// Upgrade path: FlashInfer's header-only paged prefill/decode kernels (same NHD layout), see
// docs/libraries.md.
// Known limits: head_dim <= 256; fp32 KV with head_dim > 128 needs ~140 KB of shared memory
// (opt-in, fine on sm_80/sm_90); no ALiBi, no soft-capping, no fp8 KV.
#include <cstdint>

#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/dtype.cuh"

namespace moeserve::kernels::cuda {
namespace {

constexpr int kWarps = 4;     // warps per CTA; part of every row's reduction order: keep fixed
constexpr int kKeyTile = 32;  // keys per tile (one per lane); part of the reduction order too
constexpr int kThreads = kWarps * 32;
constexpr unsigned kFull = 0xffffffffu;

// Rows (query token x query head pairs) per CTA for a kernel whose lanes own kDimsPerLane dims:
// fewer rows for head_dim > 128 keeps o[rows][dims] in registers.
template <int kDimsPerLane>
constexpr int kRowsPerCta = kDimsPerLane <= 4 ? 16 : 8;

__device__ __forceinline__ float WarpMax(float v) {
  for (int off = 16; off > 0; off /= 2) v = fmaxf(v, __shfl_xor_sync(kFull, v, off));
  return v;
}

__device__ __forceinline__ float WarpSum(float v) {
  for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(kFull, v, off);
  return v;
}

// Host-computed launch shape, shared by the kernel.
struct Layout {
  int group;            // query heads per kv head
  int heads_per_cta;    // query heads of the group in one CTA (<= rows per CTA)
  int head_chunks;      // ceil(group / heads_per_cta)
  int tokens_per_cta;   // rows per CTA / heads_per_cta
  int head_dim_padded;  // head_dim rounded up to a multiple of 4 (float4 q reads)
  int kv_stride;        // elements per key row in the shared K/V buffer (odd 32-bit word count)
  bool kv_vec16;        // K/V rows can be read with 16-byte loads
};

// Copies the 32 keys of one tile ([32, head_dim] of T, one row per lane's key) from the paged
// cache into this warp's buffer; rows whose base is < 0 (not visible to any row of the CTA,
// possibly in a released block) are zero-filled and never read from global memory.
template <typename T>
__device__ __forceinline__ void LoadKvTile(const T* __restrict__ cache, int64_t my_base,
                                           int head_dim, const Layout& lay, T* buf, int lane) {
  if (lay.kv_vec16) {
    constexpr int kVec = kVec16<T>;
    const int chunks_per_row = head_dim / kVec;
#pragma unroll 4
    for (int it = 0; it < chunks_per_row; ++it) {
      const int c = it * 32 + lane;
      const int row = c / chunks_per_row;
      const int col = (c - row * chunks_per_row) * kVec;
      const int64_t base = __shfl_sync(kFull, my_base, row);
      uint4 raw = make_uint4(0u, 0u, 0u, 0u);
      if (base >= 0) raw = __ldg(reinterpret_cast<const uint4*>(cache + base + col));
      const T* elems = reinterpret_cast<const T*>(&raw);
      T* dst = buf + row * lay.kv_stride + col;
#pragma unroll
      for (int e = 0; e < kVec; ++e) dst[e] = elems[e];
    }
  } else {
#pragma unroll 4
    for (int it = 0; it < head_dim; ++it) {
      const int c = it * 32 + lane;
      const int row = c / head_dim;
      const int col = c - row * head_dim;
      const int64_t base = __shfl_sync(kFull, my_base, row);
      buf[row * lay.kv_stride + col] = base >= 0 ? cache[base + col] : FromF32<T>(0.0f);
    }
  }
}

template <typename T, int kDimsPerLane>
__global__ void __launch_bounds__(kThreads)
    PagedAttentionKernel(const PagedAttentionParams p, const Layout lay) {
  constexpr int kRows = kRowsPerCta<kDimsPerLane>;
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ int row_pos[kRows];    // query position of each row
  __shared__ int row_first[kRows];  // first visible key of each row

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int head_dim = static_cast<int>(p.head_dim);
  const int dpad = lay.head_dim_padded;
  const int tile = static_cast<int>(blockIdx.x) / lay.head_chunks;
  const int chunk = static_cast<int>(blockIdx.x) % lay.head_chunks;
  const int kv_head = static_cast<int>(blockIdx.y);
  const int tpc = lay.tokens_per_cta;

  // Which sequence owns this query tile: the number of s with T(s) <= tile, minus one.
  const int num_seqs = static_cast<int>(p.num_seqs);
  int count = 0;
  for (int base = 0; base < num_seqs; base += kThreads) {
    const int s = base + tid;
    count += __syncthreads_count(s < num_seqs && p.query_start[s] / tpc + s <= tile);
  }
  const int seq = count - 1;
  const int q_begin = p.query_start[seq], q_end = p.query_start[seq + 1];
  const int tok0 = q_begin + (tile - (q_begin / tpc + seq)) * tpc;
  if (tok0 >= q_end) return;  // a spare tile of this sequence (uniform across the CTA)
  const int num_tok = min(tpc, q_end - tok0);
  const int head0 = chunk * lay.heads_per_cta;  // first head of the chunk within the group
  const int num_heads = min(lay.heads_per_cta, lay.group - head0);
  const int rows = num_tok * num_heads;  // rows r: token r / num_heads, head r % num_heads
  const int ctx = p.context_lens[seq];
  const int pos0 = ctx - (q_end - q_begin) + (tok0 - q_begin);  // position of the first token
  const int window = static_cast<int>(p.sliding_window);
  const int key_lo = window > 0 ? max(0, pos0 - window + 1) : 0;  // first key any row sees
  const int key_hi = pos0 + num_tok;                              // one past the last

  // Shared memory: q rows [kRows, dpad] fp32, then per warp a K/V buffer [32, kv_stride] of T,
  // reused after the key loop for the combine (o [kWarps, kRows, dpad], m and l [kWarps, kRows]).
  float* q_s = reinterpret_cast<float*>(smem);
  unsigned char* scratch = smem + sizeof(float) * kRows * dpad;
  T* kv_buf = reinterpret_cast<T*>(scratch) + warp * kKeyTile * lay.kv_stride;

  const int64_t q_row_elems = p.num_q_heads * p.head_dim;
  for (int i = tid; i < kRows * dpad; i += kThreads) {
    const int r = i / dpad, d = i % dpad;
    float v = 0.0f;
    if (r < rows && d < head_dim) {
      const int64_t t = tok0 + r / num_heads;
      const int64_t q_head = static_cast<int64_t>(kv_head) * lay.group + head0 + r % num_heads;
      v = LoadF32(p.q, p.act_dtype, t * q_row_elems + q_head * head_dim + d);
    }
    q_s[i] = v;
  }
  if (tid < kRows) {
    const int pos = pos0 + tid / max(num_heads, 1);
    row_pos[tid] = pos;
    row_first[tid] = window > 0 ? max(0, pos - window + 1) : 0;
  }
  // Zero this warp's buffer once: the pad columns [head_dim, dpad) are read by the score loop and
  // never written by tile loads.
  for (int i = lane; i < kKeyTile * lay.kv_stride; i += 32) kv_buf[i] = FromF32<T>(0.0f);
  __syncthreads();

  float o[kRows][kDimsPerLane];
  float m[kRows], l[kRows];  // m: running max (warp-uniform); l: this lane's part of the sum
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.0f;
#pragma unroll
    for (int i = 0; i < kDimsPerLane; ++i) o[r][i] = 0.0f;
  }

  const T* k_cache = static_cast<const T*>(p.k_cache);
  const T* v_cache = static_cast<const T*>(p.v_cache);
  const int32_t* table = p.block_tables + static_cast<int64_t>(seq) * p.max_blocks_per_seq;
  const int block_size = static_cast<int>(p.block_size);
  const int64_t kv_row_elems = p.num_kv_heads * p.head_dim;
  const float scale = p.scale;
  const int tile_lo = key_lo / kKeyTile, tile_hi = (key_hi - 1) / kKeyTile;
  const int first_tile = tile_lo + ((warp - tile_lo % kWarps) + kWarps) % kWarps;

  for (int kt = first_tile; kt <= tile_hi; kt += kWarps) {
    const int key = kt * kKeyTile + lane;  // this lane's key
    int64_t my_base = -1;                  // element offset of (key, kv_head) in the cache
    if (key >= key_lo && key < key_hi) {
      const int64_t block = table[key / block_size];
      my_base = (block * block_size + key % block_size) * kv_row_elems +
                static_cast<int64_t>(kv_head) * head_dim;
    }
    __syncwarp();
    LoadKvTile(k_cache, my_base, head_dim, lay, kv_buf, lane);
    __syncwarp();

    // Scores of key `key` (this lane) for every row, in fixed d order.
    float s[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) s[r] = 0.0f;
    const T* k_row = kv_buf + lane * lay.kv_stride;
    for (int d = 0; d < dpad; d += 4) {
      const float k0 = ToF32(k_row[d]), k1 = ToF32(k_row[d + 1]);
      const float k2 = ToF32(k_row[d + 2]), k3 = ToF32(k_row[d + 3]);
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        if (r < rows) {
          const float4 q4 = *reinterpret_cast<const float4*>(q_s + r * dpad + d);
          s[r] = fmaf(q4.x, k0, s[r]);
          s[r] = fmaf(q4.y, k1, s[r]);
          s[r] = fmaf(q4.z, k2, s[r]);
          s[r] = fmaf(q4.w, k3, s[r]);
        }
      }
    }

    // Online softmax per row. `active` marks rows that see at least one key of this tile; the
    // others are left untouched (an exact no-op, see the batch-invariance note).
    uint32_t active = 0;
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      if (r < rows) {
        const bool visible = key >= row_first[r] && key <= row_pos[r];
        const float score = visible ? s[r] * scale : -INFINITY;
        const float tile_max = WarpMax(score);
        if (tile_max != -INFINITY) {
          active |= 1u << r;
          const float m_new = fmaxf(m[r], tile_max);
          const float alpha = expf(m[r] - m_new);  // m[r] == -inf: 0
          s[r] = visible ? expf(score - m_new) : 0.0f;
          l[r] = l[r] * alpha + s[r];
#pragma unroll
          for (int i = 0; i < kDimsPerLane; ++i) o[r][i] *= alpha;
          m[r] = m_new;
        }
      }
    }

    __syncwarp();
    LoadKvTile(v_cache, my_base, head_dim, lay, kv_buf, lane);
    __syncwarp();
    // o[r][d] += p[r][j] * v[j][d] over the keys j of the tile in ascending order.
    const int j_lo = max(key_lo - kt * kKeyTile, 0);
    const int j_hi = min(key_hi - kt * kKeyTile, kKeyTile);
    for (int j = j_lo; j < j_hi; ++j) {
      float v[kDimsPerLane];
#pragma unroll
      for (int i = 0; i < kDimsPerLane; ++i) {
        const int d = lane + 32 * i;
        v[i] = d < head_dim ? ToF32(kv_buf[j * lay.kv_stride + d]) : 0.0f;
      }
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        if ((active >> r) & 1u) {
          const float pj = __shfl_sync(kFull, s[r], j);
#pragma unroll
          for (int i = 0; i < kDimsPerLane; ++i) o[r][i] = fmaf(pj, v[i], o[r][i]);
        }
      }
    }
  }

  // Combine the warps' states in warp order. The K/V buffers become the combine area.
  __syncthreads();
  float* comb_o = reinterpret_cast<float*>(scratch);  // [kWarps, kRows, dpad]
  float* comb_m = comb_o + kWarps * kRows * dpad;     // [kWarps, kRows]
  float* comb_l = comb_m + kWarps * kRows;            // [kWarps, kRows]
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    if (r < rows) {
      const float l_sum = WarpSum(l[r]);  // fixed butterfly order
      if (lane == 0) {
        comb_m[warp * kRows + r] = m[r];
        comb_l[warp * kRows + r] = l_sum;
      }
#pragma unroll
      for (int i = 0; i < kDimsPerLane; ++i) {
        const int d = lane + 32 * i;
        if (d < head_dim) comb_o[(warp * kRows + r) * dpad + d] = o[r][i];
      }
    }
  }
  __syncthreads();
  for (int i = tid; i < rows * head_dim; i += kThreads) {
    const int r = i / head_dim, d = i % head_dim;
    float m_max = -INFINITY;
    for (int w = 0; w < kWarps; ++w) m_max = fmaxf(m_max, comb_m[w * kRows + r]);
    float denom = 0.0f, acc = 0.0f;
    for (int w = 0; w < kWarps; ++w) {
      const float f = expf(comb_m[w * kRows + r] - m_max);  // a warp without keys: exp(-inf) = 0
      denom += f * comb_l[w * kRows + r];
      acc += f * comb_o[(w * kRows + r) * dpad + d];
    }
    const float result = denom > 0.0f ? acc / denom : 0.0f;  // denom == 0 only for invalid input
    const int64_t t = tok0 + r / num_heads;
    const int64_t q_head = static_cast<int64_t>(kv_head) * lay.group + head0 + r % num_heads;
    StoreF32(p.out, p.act_dtype, t * q_row_elems + q_head * head_dim + d, result);
  }
}

template <typename T, int kDimsPerLane>
cudaError_t Launch(const PagedAttentionParams& p, Layout lay, cudaStream_t stream) {
  constexpr int kRows = kRowsPerCta<kDimsPerLane>;
  lay.heads_per_cta = lay.group < kRows ? lay.group : kRows;
  lay.head_chunks = (lay.group + lay.heads_per_cta - 1) / lay.heads_per_cta;
  lay.tokens_per_cta = kRows / lay.heads_per_cta;
  lay.kv_stride = sizeof(T) == 4 ? lay.head_dim_padded + 1 : lay.head_dim_padded + 2;
  lay.kv_vec16 = CanVec16<T>(p.head_dim, {p.k_cache, p.v_cache});

  const size_t q_bytes = sizeof(float) * kRows * lay.head_dim_padded;
  const size_t kv_bytes = sizeof(T) * kWarps * kKeyTile * lay.kv_stride;
  const size_t comb_bytes = sizeof(float) * kWarps * kRows * (lay.head_dim_padded + 2);
  const size_t smem = q_bytes + (kv_bytes > comb_bytes ? kv_bytes : comb_bytes);
  if (smem > 48 * 1024) {
    // Over the default limit only for head_dim > 128 or fp32 KV; a function attribute, not a
    // stream operation, so this is fine during graph capture.
    const cudaError_t err =
        cudaFuncSetAttribute(PagedAttentionKernel<T, kDimsPerLane>,
                             cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (err != cudaSuccess) return err;
  }
  const int64_t tiles = p.num_tokens / lay.tokens_per_cta + p.num_seqs;
  const int64_t grid_x = tiles * lay.head_chunks;
  if (grid_x > 0x7fffffff) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(grid_x), static_cast<unsigned>(p.num_kv_heads));
  PagedAttentionKernel<T, kDimsPerLane><<<grid, kThreads, smem, stream>>>(p, lay);
  return cudaGetLastError();
}

}  // namespace

cudaError_t PagedAttention(const PagedAttentionParams& p, cudaStream_t stream) {
  if (p.num_tokens == 0 || p.num_seqs == 0) return cudaSuccess;
  if (p.head_dim <= 0 || p.head_dim > 256 || p.num_kv_heads <= 0 || p.num_q_heads <= 0 ||
      p.num_q_heads % p.num_kv_heads != 0 || p.block_size <= 0 || p.num_kv_heads > 65535 ||
      p.num_seqs > 0x7fffffff || p.num_tokens > 0x7fffffff) {
    return cudaErrorInvalidValue;
  }
  if (!IsFloat(p.act_dtype) || !IsFloat(p.kv_dtype)) return cudaErrorInvalidValue;
  Layout lay{};
  lay.group = static_cast<int>(p.num_q_heads / p.num_kv_heads);
  lay.head_dim_padded = static_cast<int>((p.head_dim + 3) / 4 * 4);
  return DispatchFloatDType(p.kv_dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (p.head_dim <= 64) return Launch<T, 2>(p, lay, stream);
    if (p.head_dim <= 128) return Launch<T, 4>(p, lay, stream);
    return Launch<T, 8>(p, lay, stream);
  });
}

}  // namespace moeserve::kernels::cuda
