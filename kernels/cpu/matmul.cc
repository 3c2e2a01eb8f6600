#include "kernels/cpu/matmul.h"

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <type_traits>
#include <vector>

#include "kernels/base/buffer_sizes.h"
#include "kernels/cpu/act.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/matmul_tile.h"
#include "kernels/cpu/swiglu.h"

namespace moeserve::kernels::cpu {
namespace {

// Output tiles, the unit of work a thread takes: up to kTileRows x rows by kTilePanels packed
// weight panels (128 columns). A tile's panels stay in L2 and its x rows in L1 while the
// register blocks (matmul_avx512.cc) sweep them. Which thread computes a tile never changes its
// bits (matmul_tile.h).
constexpr int64_t kTileRows = 48;
constexpr int64_t kTilePanels = 4;
constexpr int64_t kTileCols = kTilePanels * kPanelCols;

using BlockFn = void (*)(const MatmulBlockArgs&);
BlockFn BlockFunction() {
  switch (ActiveCpuIsa()) {
#if defined(MOESERVE_X86_KERNELS)
    case CpuIsa::kAvx512:
      return MatmulBlockAvx512;
    case CpuIsa::kAvx2:
      return MatmulBlockAvx2;
#endif
    default:
      return MatmulBlockScalar;
  }
}

// Per-thread buffers, grown on demand and kept (OpenMP threads persist), 64-byte aligned.
struct AlignedBuffer {
  std::unique_ptr<float, decltype(&std::free)> data{nullptr, &std::free};
  int64_t size = 0;
  float* Get(int64_t floats) {
    if (floats > size) {
      const size_t bytes = AlignedBytes(floats, sizeof(float));
      data.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
      size = floats;
    }
    return data.get();
  }
};
struct ThreadBuffers {
  AlignedBuffer gate, up;
};
ThreadBuffers& LocalBuffers() {
  thread_local ThreadBuffers buffers;
  return buffers;
}

// One GEMM of a call: y [m, n] (y_dtype, row stride n) = x [m, :] @ w^T; with w_up the fused
// SwiGLU form y = silu(x @ w^T) * (x @ w_up^T), both in fp32, rounded once. w, w_up: packed.
struct Gemm {
  const float* x = nullptr;  // [m, ldx] fp32
  int64_t m = 0;
  const void* w = nullptr;
  const void* w_up = nullptr;
  void* y = nullptr;
  DType y_dtype = DType::kF32;
};

// Runs every tile of every GEMM in one parallel region; tiles are handed out dynamically so that
// a core slowed by another process does not hold up the others. w_dtype: the packed dtype.
void RunGemms(const std::vector<Gemm>& gemms, DType w_dtype, int64_t n, int64_t k, int64_t ldx) {
  const int64_t col_tiles = (NumPanels(n) + kTilePanels - 1) / kTilePanels;
  std::vector<int64_t> first_tile(gemms.size() + 1, 0);  // prefix sums of tiles per GEMM
  for (size_t g = 0; g < gemms.size(); ++g) {
    first_tile[g + 1] = first_tile[g] + (gemms[g].m + kTileRows - 1) / kTileRows * col_tiles;
  }
  const int64_t tiles = first_tile.back();
  if (tiles == 0) return;
  const BlockFn block_fn = BlockFunction();
  const size_t panel_bytes = static_cast<size_t>(k * kPanelCols) * DTypeSize(w_dtype);
#pragma omp parallel if (tiles > 1)
  {
    ThreadBuffers& buffers = LocalBuffers();
    float* const gate = buffers.gate.Get(kTileRows * kTileCols);
    float* const up = buffers.up.Get(kTileRows * kTileCols);
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < tiles; ++t) {
      const size_t g = static_cast<size_t>(
          std::upper_bound(first_tile.begin(), first_tile.end(), t) - first_tile.begin() - 1);
      const Gemm& gemm = gemms[g];
      const int64_t local = t - first_tile[g];
      // Column tiles inner: neighbouring tiles share x rows.
      const int64_t row0 = local / col_tiles * kTileRows;
      const int64_t panel0 = local % col_tiles * kTilePanels;
      const int64_t col0 = panel0 * kPanelCols;
      const int64_t rows = std::min(kTileRows, gemm.m - row0);
      const int64_t cols = std::min(kTileCols, n - col0);
      MatmulBlockArgs a;
      a.x = gemm.x + row0 * ldx;
      a.ldx = ldx;
      a.m = rows;
      a.w = static_cast<const char*>(gemm.w) + static_cast<size_t>(panel0) * panel_bytes;
      a.w_dtype = w_dtype;
      a.panels = NumPanels(cols);
      a.cols = cols;
      a.k = k;
      if (gemm.w_up == nullptr && gemm.y_dtype == DType::kF32) {  // straight into y
        a.y = static_cast<float*>(gemm.y) + row0 * n + col0;
        a.ldy = n;
        block_fn(a);
        continue;
      }
      a.y = gate;
      a.ldy = cols;
      block_fn(a);
      if (gemm.w_up != nullptr) {
        a.w = static_cast<const char*>(gemm.w_up) + static_cast<size_t>(panel0) * panel_bytes;
        a.y = up;
        block_fn(a);
      }
      DispatchAct(gemm.y_dtype, [&](auto tag) {
        using T = decltype(tag);
        for (int64_t r = 0; r < rows; ++r) {
          T* dst = static_cast<T*>(gemm.y) + (row0 + r) * n + col0;
          const float* g_row = gate + r * cols;
          if (gemm.w_up == nullptr) {
            for (int64_t c = 0; c < cols; ++c) dst[c] = FromF32<T>(g_row[c]);
          } else if constexpr (std::is_same_v<T, float>) {
            // The function of the SwiGlu op (swiglu.h), so the fused form is bit for bit
            // Matmul(w) + Matmul(w_up) + SwiGlu.
            SiluMulRow(g_row, up + r * cols, dst, cols);
          } else {
            const float* u_row = up + r * cols;
            for (int64_t c = 0; c < cols; ++c) dst[c] = FromF32<T>(SiluMul(g_row[c], u_row[c]));
          }
        }
      });
    }
  }
}

// x [rows, k] of dtype as fp32 rows of stride *ldx: x itself when fp32, else a converted copy in
// *storage.
const float* PrepareX(const void* x, DType dtype, int64_t rows, int64_t k,
                      std::vector<float>* storage, int64_t* ldx) {
  *ldx = k;
  if (dtype == DType::kF32) return static_cast<const float*>(x);
  storage->resize(static_cast<size_t>(rows * k));
  const Bf16* src = static_cast<const Bf16*>(x);
  for (int64_t i = 0; i < rows * k; ++i) (*storage)[static_cast<size_t>(i)] = ToF32(src[i]);
  return storage->data();
}

// Weights given as rows (tests, tools, models not packed at load) are packed here for the call:
// the same panels, hence the same bits, as weights packed at load, at the cost of one pass over
// them per call.
struct PackedForCall {
  std::vector<std::unique_ptr<void, decltype(&std::free)>> buffers;
  const void* Pack(const void* w, DType dtype, int64_t n, int64_t k) {
    const size_t bytes = AlignedBytes(static_cast<int64_t>(PackedBytes(dtype, n, k)), 1);
    buffers.emplace_back(std::aligned_alloc(64, bytes), &std::free);
    PackWeight(w, dtype, n, k, buffers.back().get());
    return buffers.back().get();
  }
};

}  // namespace

void Matmul(const MatmulParams& p) {
  if (p.m_rows == 0) return;
  std::vector<float> x_storage;
  int64_t ldx = 0;
  const float* x = PrepareX(p.x, p.x_dtype, p.m_rows, p.k, &x_storage, &ldx);
  PackedForCall packed;
  const void* w =
      p.w_layout == WeightLayout::kCpuPanels ? p.w : packed.Pack(p.w, p.w_dtype, p.n, p.k);
  RunGemms({Gemm{x, p.m_rows, w, nullptr, p.y, p.y_dtype}}, PackedDType(p.w_dtype), p.n, p.k, ldx);
}

void GroupedMatmul(const GroupedMatmulParams& p) {
  const int64_t total_rows = p.expert_offsets[p.num_experts];
  if (total_rows == 0) return;
  std::vector<float> x_storage;
  int64_t ldx = 0;
  const float* x = PrepareX(p.x, p.act_dtype, total_rows, p.k, &x_storage, &ldx);
  const size_t y_elem = DTypeSize(p.act_dtype);
  PackedForCall packed;
  auto weight = [&](const void* w) {
    return p.w_layout == WeightLayout::kCpuPanels ? w : packed.Pack(w, p.w_dtype, p.n, p.k);
  };
  std::vector<Gemm> gemms;
  for (int64_t e = 0; e < p.num_experts; ++e) {
    const int64_t row0 = p.expert_offsets[e];
    const int64_t rows = p.expert_offsets[e + 1] - row0;
    // An expert with rows but no weights writes nothing: callers must never route to it.
    if (rows <= 0 || p.w[e] == nullptr || (p.w_up != nullptr && p.w_up[e] == nullptr)) continue;
    gemms.push_back(
        Gemm{x + row0 * ldx, rows, weight(p.w[e]), p.w_up != nullptr ? weight(p.w_up[e]) : nullptr,
             static_cast<char*>(p.y) + static_cast<size_t>(row0 * p.n) * y_elem, p.act_dtype});
  }
  RunGemms(gemms, PackedDType(p.w_dtype), p.n, p.k, ldx);
}

}  // namespace moeserve::kernels::cpu
