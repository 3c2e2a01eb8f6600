#include "kernels/cpu/matmul.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <vector>

#include "kernels/cpu/act.h"

namespace moeserve::kernels::cpu {
namespace {

// Output columns handled together: four converted weight rows share every load of x.
constexpr int64_t kTileN = 4;
// Partial sums per dot product. Lane j accumulates elements i with i % 8 == j; the lanes are
// combined pairwise at the end. This order depends only on k, never on m_rows, the tile or the
// thread count, which is the determinism contract in ops/matmul.h. Files in this target are built
// with -ffp-contract=off, so no clone fuses the multiply-add and the bits are the same on every
// x86-64 machine.
constexpr int kLanes = 8;

// The clones are picked by an ifunc resolver that the dynamic loader runs before any sanitizer
// runtime is set up; ThreadSanitizer instruments the resolver (__tsan_func_entry) and the
// process crashes at load. TSan builds (tools/sanitize.sh) therefore use the baseline code only;
// the bits are the same either way (see above).
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MOESERVE_NO_TARGET_CLONES 1
#endif
#endif
#ifdef MOESERVE_NO_TARGET_CLONES
#define MOESERVE_CPU_CLONES
#else
#define MOESERVE_CPU_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#endif

inline float Reduce(const float* acc) {
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

// y[j] = dot(x, w + j*k) for j < kTileN; w holds kTileN fp32 rows of length k.
// Compiled twice (AVX2 and baseline SSE2) and picked at load time by the CPU's features.
MOESERVE_CPU_CLONES void DotTile(const float* x, const float* w, int64_t k, float* y) {
  float acc[kTileN][kLanes] = {};
  const float* w0 = w;
  const float* w1 = w + k;
  const float* w2 = w + 2 * k;
  const float* w3 = w + 3 * k;
  int64_t i = 0;
  for (; i + kLanes <= k; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      const float xv = x[i + j];
      acc[0][j] += xv * w0[i + j];
      acc[1][j] += xv * w1[i + j];
      acc[2][j] += xv * w2[i + j];
      acc[3][j] += xv * w3[i + j];
    }
  }
  for (int j = 0; i < k; ++i, ++j) {
    acc[0][j] += x[i] * w0[i];
    acc[1][j] += x[i] * w1[i];
    acc[2][j] += x[i] * w2[i];
    acc[3][j] += x[i] * w3[i];
  }
  for (int64_t t = 0; t < kTileN; ++t) y[t] = Reduce(acc[t]);
}

// Converts rows [row, row + count) of w to fp32 into out ([kTileN, k]); rows past count are
// zero-filled so DotTile can always run on a full tile.
MOESERVE_CPU_CLONES void ConvertRows(const void* w, DType dtype, int64_t row, int64_t count,
                                     int64_t k, float* out) {
  const size_t offset = static_cast<size_t>(row) * static_cast<size_t>(k);
  const size_t total = static_cast<size_t>(count) * static_cast<size_t>(k);
  switch (dtype) {
    case DType::kBF16: {
      const uint16_t* src = static_cast<const uint16_t*>(w) + offset;
      for (size_t i = 0; i < total; ++i) out[i] = Bf16ToF32(src[i]);
      break;
    }
    case DType::kF16: {
      const uint16_t* src = static_cast<const uint16_t*>(w) + offset;
      for (size_t i = 0; i < total; ++i) out[i] = F16ToF32(src[i]);
      break;
    }
    default: {
      const float* src = static_cast<const float*>(w) + offset;
      std::copy(src, src + total, out);
    }
  }
  std::fill(out + total, out + kTileN * k, 0.0f);
}

// y [m_rows, n] of y_dtype = x [m_rows, k] (fp32) @ w^T. The one matmul loop behind Matmul and
// GroupedMatmul, so both give the same bits for the same row.
void MatmulRows(const float* x, int64_t m_rows, const void* w, DType w_dtype, int64_t n, int64_t k,
                void* y, DType y_dtype) {
  if (m_rows == 0) return;
  const int64_t tiles = (n + kTileN - 1) / kTileN;
  // Each tile of weight rows is converted to fp32 once and reused for every input row (weights
  // dominate memory traffic: decode is a matrix-vector product). Threads split the tiles.
#pragma omp parallel
  {
    // 64-byte aligned (a cache line): with the 16 bytes malloc guarantees, speed swung by ~40%
    // between runs depending on where the heap happened to place the buffer.
    const size_t bytes = (sizeof(float) * static_cast<size_t>(kTileN * k) + 63) / 64 * 64;
    std::unique_ptr<float, decltype(&std::free)> w_tile_buffer(
        static_cast<float*>(std::aligned_alloc(64, bytes)), &std::free);
    float* const w_tile = w_tile_buffer.get();
    float out[kTileN];
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t n0 = t * kTileN;
      const int64_t count = std::min(kTileN, n - n0);
      ConvertRows(w, w_dtype, n0, count, k, w_tile);
      for (int64_t m = 0; m < m_rows; ++m) {
        DotTile(x + m * k, w_tile, k, out);
        if (y_dtype == DType::kBF16) {
          Bf16* dst = static_cast<Bf16*>(y) + m * n + n0;
          for (int64_t j = 0; j < count; ++j) dst[j] = FromF32<Bf16>(out[j]);
        } else {
          std::copy(out, out + count, static_cast<float*>(y) + m * n + n0);
        }
      }
    }
  }
}

// x [rows, k] of dtype as fp32: x itself for fp32, else a converted copy in *storage.
const float* AsF32(const void* x, DType dtype, int64_t rows, int64_t k,
                   std::vector<float>* storage) {
  if (dtype == DType::kF32) return static_cast<const float*>(x);
  storage->resize(static_cast<size_t>(rows * k));
  const Bf16* src = static_cast<const Bf16*>(x);
  for (size_t i = 0; i < storage->size(); ++i) (*storage)[i] = ToF32(src[i]);
  return storage->data();
}

}  // namespace

void Matmul(const MatmulParams& p) {
  if (p.m_rows == 0) return;
  std::vector<float> x_f32;
  MatmulRows(AsF32(p.x, p.x_dtype, p.m_rows, p.k, &x_f32), p.m_rows, p.w, p.w_dtype, p.n, p.k, p.y,
             p.y_dtype);
}

void GroupedMatmul(const GroupedMatmulParams& p) {
  const int64_t total_rows = p.expert_offsets[p.num_experts];
  if (total_rows == 0) return;
  std::vector<float> x_storage, gate, up;
  const float* x = AsF32(p.x, p.act_dtype, total_rows, p.k, &x_storage);
  const size_t y_elem = DTypeSize(p.act_dtype);
  for (int64_t e = 0; e < p.num_experts; ++e) {
    const int64_t row0 = p.expert_offsets[e];
    const int64_t rows = p.expert_offsets[e + 1] - row0;
    // An expert with rows but no weights writes nothing: callers must never route to it.
    if (rows <= 0 || p.w[e] == nullptr || (p.w_up != nullptr && p.w_up[e] == nullptr)) continue;
    void* y = static_cast<char*>(p.y) + static_cast<size_t>(row0 * p.n) * y_elem;
    const float* xe = x + row0 * p.k;
    if (p.w_up == nullptr) {
      MatmulRows(xe, rows, p.w[e], p.w_dtype, p.n, p.k, y, p.act_dtype);
      continue;
    }
    // Fused SwiGLU: both projections in fp32, silu(gate) * up rounded once. On fp32 this is
    // bit for bit Matmul(w) + Matmul(w_up) + SwiGlu (the same expression on the same floats).
    gate.resize(static_cast<size_t>(rows * p.n));
    up.resize(static_cast<size_t>(rows * p.n));
    MatmulRows(xe, rows, p.w[e], p.w_dtype, p.n, p.k, gate.data(), DType::kF32);
    MatmulRows(xe, rows, p.w_up[e], p.w_dtype, p.n, p.k, up.data(), DType::kF32);
    DispatchAct(p.act_dtype, [&](auto tag) {
      using T = decltype(tag);
      T* out = static_cast<T*>(y);
      for (size_t i = 0; i < gate.size(); ++i) {
        const float g = gate[i];
        out[i] = FromF32<T>((g / (1.0f + std::exp(-g))) * up[i]);
      }
    });
  }
}

}  // namespace moeserve::kernels::cpu
