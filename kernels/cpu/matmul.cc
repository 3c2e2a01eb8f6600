#include "kernels/cpu/matmul.h"

#include <vector>

namespace moeserve::kernels::cpu {
namespace {

// Dot product with 8 interleaved partial sums, combined pairwise at the end. The order depends
// only on k, so results do not change with batch size or threads; the independent partial sums
// let the compiler vectorise without -ffast-math.
inline float Dot(const float* a, const float* b, int64_t k) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  }
  for (int j = 0; i < k; ++i, ++j) acc[j] += a[i] * b[i];
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

void ConvertRow(const void* w, DType dtype, int64_t row, int64_t k, float* out) {
  const size_t offset = static_cast<size_t>(row) * static_cast<size_t>(k);
  switch (dtype) {
    case DType::kBF16: {
      const uint16_t* src = static_cast<const uint16_t*>(w) + offset;
      for (int64_t i = 0; i < k; ++i) out[i] = Bf16ToF32(src[i]);
      break;
    }
    case DType::kF16: {
      const uint16_t* src = static_cast<const uint16_t*>(w) + offset;
      for (int64_t i = 0; i < k; ++i) out[i] = F16ToF32(src[i]);
      break;
    }
    default: {
      const float* src = static_cast<const float*>(w) + offset;
      for (int64_t i = 0; i < k; ++i) out[i] = src[i];
    }
  }
}

}  // namespace

void Matmul(const MatmulParams& p) {
  if (p.m_rows == 0) return;
  // Each weight row is converted to fp32 once and reused for every input row (weights dominate
  // memory traffic: decode is a matrix-vector product). Threads split the output columns.
#pragma omp parallel
  {
    std::vector<float> w_row(static_cast<size_t>(p.k));
#pragma omp for schedule(static)
    for (int64_t n = 0; n < p.n; ++n) {
      const float* w;
      if (p.w_dtype == DType::kF32) {
        w = static_cast<const float*>(p.w) + n * p.k;
      } else {
        ConvertRow(p.w, p.w_dtype, n, p.k, w_row.data());
        w = w_row.data();
      }
      for (int64_t m = 0; m < p.m_rows; ++m) p.y[m * p.n + n] = Dot(p.x + m * p.k, w, p.k);
    }
  }
}

}  // namespace moeserve::kernels::cpu
