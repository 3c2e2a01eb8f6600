#include "kernels/cpu/moe.h"

#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/cpu/act.h"
#include "kernels/cpu/kernel_clones.h"
#include "kernels/cpu/swiglu.h"

namespace moeserve::kernels::cpu {

void MoeAlign(const MoeAlignParams& p) {
  const int64_t rows = p.num_tokens * p.top_k;
  // Counting sort by expert. Scanning (t, j) in order keeps each group in ascending (t, j) order,
  // exactly parallel/moe/dispatch_plan.cc's BuildDispatchPlan.
  std::vector<int32_t> counts(static_cast<size_t>(p.num_experts), 0);
  for (int64_t i = 0; i < rows; ++i) ++counts[p.expert_ids[i]];
  p.expert_offsets[0] = 0;
  for (int64_t e = 0; e < p.num_experts; ++e) {
    p.expert_offsets[e + 1] = p.expert_offsets[e] + counts[e];
  }
  std::vector<int32_t> cursor(p.expert_offsets, p.expert_offsets + p.num_experts);
  for (int64_t i = 0; i < rows; ++i) {
    const int32_t row = cursor[p.expert_ids[i]]++;
    p.permuted_token[row] = static_cast<int32_t>(i / p.top_k);
    p.combine_rows[i] = row;
  }
  if (p.expert_counts != nullptr) {
    for (int64_t e = 0; e < p.num_experts; ++e) p.expert_counts[e] += counts[e];
  }
}

void GatherRows(const GatherRowsParams& p) {
  const size_t row_bytes = static_cast<size_t>(p.hidden) * DTypeSize(p.act_dtype);
  // Plain row copies: threads only for large gathers (prefill).
#pragma omp parallel for schedule(static) if (p.num_rows * p.hidden >= (int64_t{1} << 18))
  for (int64_t i = 0; i < p.num_rows; ++i) {
    std::memcpy(static_cast<char*>(p.dst) + i * row_bytes,
                static_cast<const char*>(p.src) + static_cast<size_t>(p.rows[i]) * row_bytes,
                row_bytes);
  }
}

void SwiGlu(const SwiGluParams& p) {
  DispatchAct(p.act_dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* gate = static_cast<const T*>(p.gate);
    const T* up = static_cast<const T*>(p.up);
    T* out = static_cast<T*>(p.out);
    if constexpr (std::is_same_v<T, float>) {
      SiluMulRow(gate, up, out, p.n);
    } else {
      for (int64_t i = 0; i < p.n; ++i) out[i] = FromF32<T>(SiluMul(ToF32(gate[i]), ToF32(up[i])));
    }
  });
}

namespace {

// acc[h] (+)= w * src[h]: the first term is a product, later ones add to it, as the scalar loop
// that starts from 0 did (0 + w*x == w*x exactly, including the sign of zero).
MOESERVE_KERNEL_CLONES void ScaledRow(float* acc, float w, const float* src, int64_t n,
                                      bool first) {
  if (first) {
    for (int64_t h = 0; h < n; ++h) acc[h] = 0.0f + w * src[h];
  } else {
    for (int64_t h = 0; h < n; ++h) acc[h] += w * src[h];
  }
}

}  // namespace

void MoeCombine(const MoeCombineParams& p) {
  DispatchAct(p.act_dtype, [&](auto tag) {
    using T = decltype(tag);
    // Tokens are independent; each sums its top_k expert rows in slot order.
#pragma omp parallel if (p.num_tokens * p.hidden >= (int64_t{1} << 16))
    {
      std::vector<float> acc(static_cast<size_t>(p.hidden)), src_f32;
#pragma omp for schedule(dynamic, 16)
      for (int64_t t = 0; t < p.num_tokens; ++t) {
        for (int64_t j = 0; j < p.top_k; ++j) {
          const float w = p.weights[t * p.top_k + j];
          const T* src = static_cast<const T*>(p.expert_out) +
                         static_cast<int64_t>(p.src_rows[t * p.top_k + j]) * p.hidden;
          const float* src32;
          if constexpr (std::is_same_v<T, float>) {
            src32 = src;
          } else {
            src_f32.resize(static_cast<size_t>(p.hidden));
            for (int64_t h = 0; h < p.hidden; ++h) src_f32[h] = ToF32(src[h]);
            src32 = src_f32.data();
          }
          ScaledRow(acc.data(), w, src32, p.hidden, j == 0);
        }
        T* out = static_cast<T*>(p.out) + t * p.hidden;
        if constexpr (std::is_same_v<T, float>) {
          std::memcpy(out, acc.data(), sizeof(float) * static_cast<size_t>(p.hidden));
        } else {
          for (int64_t h = 0; h < p.hidden; ++h) out[h] = FromF32<T>(acc[h]);
        }
      }
    }
  });
}

}  // namespace moeserve::kernels::cpu
