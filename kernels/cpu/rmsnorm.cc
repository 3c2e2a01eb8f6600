#include "kernels/cpu/rmsnorm.h"

#include <cmath>
#include <type_traits>
#include <vector>

#include "kernels/cpu/act.h"
#include "kernels/cpu/kernel_clones.h"

namespace moeserve::kernels::cpu {
namespace {

// Sum of squares of v[0, n) in a fixed shape: lane j adds v[i]^2 for i = j (mod 16) in order,
// then lanes are folded (j += j + 8), (j += j + 4), (j += j + 2), (j += j + 1). The shape depends
// on n only, so a row normalises identically in any batch, on any thread and on every clone.
MOESERVE_KERNEL_CLONES float SumOfSquares(const float* v, int64_t n) {
  constexpr int kLanes = 16;
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) acc[j] += v[i + j] * v[i + j];
  }
  for (int j = 0; i < n; ++i, ++j) acc[j] += v[i] * v[i];
  for (int width = kLanes / 2; width >= 1; width /= 2) {
    for (int j = 0; j < width; ++j) acc[j] += acc[j + width];
  }
  return acc[0];
}

// out[h] = (in[h] * inv_rms) * weight[h]: two roundings per element, as before vectorising.
MOESERVE_KERNEL_CLONES void ScaleRow(const float* in, float inv_rms, const float* weight,
                                     float* out, int64_t n) {
  for (int64_t h = 0; h < n; ++h) out[h] = (in[h] * inv_rms) * weight[h];
}

// s = res + x, stored back into res (the fused residual add).
MOESERVE_KERNEL_CLONES void AddRow(float* res, const float* x, int64_t n) {
  for (int64_t h = 0; h < n; ++h) res[h] = res[h] + x[h];
}

template <typename T>
void NormRow(const RmsNormParams& p, const float* weight, int64_t r, std::vector<float>& row) {
  const T* x = static_cast<const T*>(p.x) + r * p.hidden;
  T* out = static_cast<T*>(p.out) + r * p.hidden;
  const float* in;
  if constexpr (std::is_same_v<T, float>) {
    in = x;
    if (p.residual != nullptr) {
      float* res = static_cast<float*>(p.residual) + r * p.hidden;
      AddRow(res, x, p.hidden);
      in = res;
    }
  } else {
    // bf16: compute on an fp32 copy of the row; the residual sum is rounded as the unfused
    // AddInPlace would store it.
    row.resize(static_cast<size_t>(p.hidden));
    if (p.residual != nullptr) {
      T* res = static_cast<T*>(p.residual) + r * p.hidden;
      for (int64_t h = 0; h < p.hidden; ++h) {
        res[h] = FromF32<T>(ToF32(res[h]) + ToF32(x[h]));
        row[h] = ToF32(res[h]);
      }
    } else {
      for (int64_t h = 0; h < p.hidden; ++h) row[h] = ToF32(x[h]);
    }
    in = row.data();
  }
  const float sum_sq = SumOfSquares(in, p.hidden);
  const float inv_rms = 1.0f / std::sqrt(sum_sq / static_cast<float>(p.hidden) + p.eps);
  if constexpr (std::is_same_v<T, float>) {
    ScaleRow(in, inv_rms, weight, out, p.hidden);
  } else {
    ScaleRow(in, inv_rms, weight, row.data(), p.hidden);
    for (int64_t h = 0; h < p.hidden; ++h) out[h] = FromF32<T>(row[h]);
  }
}

}  // namespace

void RmsNorm(const RmsNormParams& p) {
  // The weight as fp32, once per call (it is bf16 in checkpoints).
  thread_local std::vector<float> weight;
  weight.resize(static_cast<size_t>(p.hidden));
  for (int64_t h = 0; h < p.hidden; ++h) weight[h] = LoadAsF32(p.weight, p.weight_dtype, h);
  const float* w = weight.data();
  // Rows are independent: threads only when there is enough work to pay for waking them.
  const bool parallel = p.rows * p.hidden >= (int64_t{1} << 16);
  DispatchAct(p.act_dtype, [&](auto tag) {
    using T = decltype(tag);
#pragma omp parallel if (parallel)
    {
      std::vector<float> row;
#pragma omp for schedule(dynamic, 16)
      for (int64_t r = 0; r < p.rows; ++r) NormRow<T>(p, w, r, row);
    }
  });
}

}  // namespace moeserve::kernels::cpu
