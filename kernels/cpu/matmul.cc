#include "kernels/cpu/matmul.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <vector>

#include "kernels/cpu/act.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/matmul_tile.h"

namespace moeserve::kernels::cpu {
namespace {

// Output tiles, the unit of work a thread takes: kTileRows x rows by up to kTileCols weight rows.
// A tile's weight rows (converted to fp32 when there are many x rows) stay in L2 while the x rows
// stream past them. Which thread computes a tile never changes its bits (matmul_tile.h).
constexpr int64_t kTileRows = 64;
int64_t TileCols(int64_t k) {
  // ~256 KiB of fp32 weights per tile, 16..64 rows.
  const int64_t rows = (int64_t{256} << 10) / (4 * RoundUpToChunk(k)) / kChunk * kChunk;
  return std::clamp<int64_t>(rows, kChunk, 64);
}

using TileFn = void (*)(const MatmulTileArgs&);
TileFn TileFunction() {
  switch (ActiveCpuIsa()) {
#if defined(MOESERVE_X86_KERNELS)
    case CpuIsa::kAvx512:
      return MatmulTileAvx512;
    case CpuIsa::kAvx2:
      return MatmulTileAvx2;
#endif
    default:
      return MatmulTileScalar;
  }
}

// Per-thread buffers, grown on demand and kept (OpenMP threads persist), 64-byte aligned.
struct AlignedBuffer {
  std::unique_ptr<float, decltype(&std::free)> data{nullptr, &std::free};
  int64_t size = 0;
  float* Get(int64_t floats) {
    if (floats > size) {
      const size_t bytes = (sizeof(float) * static_cast<size_t>(floats) + 63) / 64 * 64;
      data.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
      size = floats;
    }
    return data.get();
  }
};
struct ThreadBuffers {
  AlignedBuffer scratch, gate, up;
};
ThreadBuffers& LocalBuffers() {
  thread_local ThreadBuffers buffers;
  return buffers;
}

// One GEMM of a call: y [m, n] (y_dtype, row stride n) = x [m, :] @ w^T; with w_up the fused
// SwiGLU form y = silu(x @ w^T) * (x @ w_up^T), both in fp32, rounded once.
struct Gemm {
  const float* x = nullptr;  // [m, ldx], padded as MatmulTileArgs requires
  int64_t m = 0;
  const void* w = nullptr;
  const void* w_up = nullptr;
  void* y = nullptr;
  DType y_dtype = DType::kF32;
};

// Runs every tile of every GEMM in one parallel region; tiles are handed out dynamically so that
// a core slowed by another process does not hold up the others.
void RunGemms(const std::vector<Gemm>& gemms, DType w_dtype, int64_t n, int64_t k, int64_t ldx) {
  const int64_t tile_cols = TileCols(k);
  const int64_t col_tiles = (n + tile_cols - 1) / tile_cols;
  std::vector<int64_t> first_tile(gemms.size() + 1, 0);  // prefix sums of tiles per GEMM
  for (size_t g = 0; g < gemms.size(); ++g) {
    first_tile[g + 1] = first_tile[g] + (gemms[g].m + kTileRows - 1) / kTileRows * col_tiles;
  }
  const int64_t tiles = first_tile.back();
  if (tiles == 0) return;
  const TileFn tile_fn = TileFunction();
  const size_t w_elem = DTypeSize(w_dtype);
#pragma omp parallel if (tiles > 1)
  {
    ThreadBuffers& buffers = LocalBuffers();
    float* const scratch = buffers.scratch.Get(MatmulTileScratchFloats(tile_cols, k));
    float* const gate = buffers.gate.Get(kTileRows * tile_cols);
    float* const up = buffers.up.Get(kTileRows * tile_cols);
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < tiles; ++t) {
      const size_t g = static_cast<size_t>(
          std::upper_bound(first_tile.begin(), first_tile.end(), t) - first_tile.begin() - 1);
      const Gemm& gemm = gemms[g];
      const int64_t local = t - first_tile[g];
      // Column tiles inner: neighbouring tiles share x rows.
      const int64_t row0 = local / col_tiles * kTileRows;
      const int64_t col0 = local % col_tiles * tile_cols;
      const int64_t rows = std::min(kTileRows, gemm.m - row0);
      const int64_t cols = std::min(tile_cols, n - col0);
      MatmulTileArgs a;
      a.x = gemm.x + row0 * ldx;
      a.ldx = ldx;
      a.m = rows;
      a.w = static_cast<const char*>(gemm.w) + static_cast<size_t>(col0 * k) * w_elem;
      a.w_dtype = w_dtype;
      a.n = cols;
      a.w_rows_before = col0;
      a.k = k;
      a.scratch = scratch;
      if (gemm.w_up == nullptr && gemm.y_dtype == DType::kF32) {  // straight into y
        a.y = static_cast<float*>(gemm.y) + row0 * n + col0;
        a.ldy = n;
        tile_fn(a);
        continue;
      }
      a.y = gate;
      a.ldy = cols;
      tile_fn(a);
      if (gemm.w_up != nullptr) {
        a.w = static_cast<const char*>(gemm.w_up) + static_cast<size_t>(col0 * k) * w_elem;
        a.y = up;
        tile_fn(a);
      }
      DispatchAct(gemm.y_dtype, [&](auto tag) {
        using T = decltype(tag);
        for (int64_t r = 0; r < rows; ++r) {
          T* dst = static_cast<T*>(gemm.y) + (row0 + r) * n + col0;
          const float* g_row = gate + r * cols;
          if (gemm.w_up == nullptr) {
            for (int64_t c = 0; c < cols; ++c) dst[c] = FromF32<T>(g_row[c]);
          } else {
            // The expression of SwiGlu (moe.cc), so the fused form is bit for bit
            // Matmul(w) + Matmul(w_up) + SwiGlu.
            const float* u_row = up + r * cols;
            for (int64_t c = 0; c < cols; ++c) {
              const float gv = g_row[c];
              dst[c] = FromF32<T>((gv / (1.0f + std::exp(-gv))) * u_row[c]);
            }
          }
        }
      });
    }
  }
}

// x [rows, k] of dtype as fp32 rows of stride *ldx, zero-padded to a whole chunk when k is not
// (MatmulTileArgs): x itself when possible, else a converted copy in *storage.
const float* PrepareX(const void* x, DType dtype, int64_t rows, int64_t k,
                      std::vector<float>* storage, int64_t* ldx) {
  const int64_t kp = RoundUpToChunk(k);
  *ldx = kp;
  if (dtype == DType::kF32 && kp == k) return static_cast<const float*>(x);
  storage->assign(static_cast<size_t>(rows * kp), 0.0f);
  for (int64_t r = 0; r < rows; ++r) {
    float* dst = storage->data() + r * kp;
    if (dtype == DType::kF32) {
      std::copy_n(static_cast<const float*>(x) + r * k, k, dst);
    } else {
      const Bf16* src = static_cast<const Bf16*>(x) + r * k;
      for (int64_t i = 0; i < k; ++i) dst[i] = ToF32(src[i]);
    }
  }
  return storage->data();
}

}  // namespace

void Matmul(const MatmulParams& p) {
  if (p.m_rows == 0) return;
  std::vector<float> x_storage;
  int64_t ldx = 0;
  const float* x = PrepareX(p.x, p.x_dtype, p.m_rows, p.k, &x_storage, &ldx);
  RunGemms({Gemm{x, p.m_rows, p.w, nullptr, p.y, p.y_dtype}}, p.w_dtype, p.n, p.k, ldx);
}

void GroupedMatmul(const GroupedMatmulParams& p) {
  const int64_t total_rows = p.expert_offsets[p.num_experts];
  if (total_rows == 0) return;
  std::vector<float> x_storage;
  int64_t ldx = 0;
  const float* x = PrepareX(p.x, p.act_dtype, total_rows, p.k, &x_storage, &ldx);
  const size_t y_elem = DTypeSize(p.act_dtype);
  std::vector<Gemm> gemms;
  for (int64_t e = 0; e < p.num_experts; ++e) {
    const int64_t row0 = p.expert_offsets[e];
    const int64_t rows = p.expert_offsets[e + 1] - row0;
    // An expert with rows but no weights writes nothing: callers must never route to it.
    if (rows <= 0 || p.w[e] == nullptr || (p.w_up != nullptr && p.w_up[e] == nullptr)) continue;
    gemms.push_back(Gemm{x + row0 * ldx, rows, p.w[e], p.w_up != nullptr ? p.w_up[e] : nullptr,
                         static_cast<char*>(p.y) + static_cast<size_t>(row0 * p.n) * y_elem,
                         p.act_dtype});
  }
  RunGemms(gemms, p.w_dtype, p.n, p.k, ldx);
}

}  // namespace moeserve::kernels::cpu
