#include "kernels/cpu/matmul_pack.h"

#include <algorithm>
#include <cstring>

namespace moeserve::kernels::cpu {

DType PackedDType(DType w_dtype) { return w_dtype == DType::kBF16 ? DType::kBF16 : DType::kF32; }

size_t PackedBytes(DType w_dtype, int64_t n, int64_t k) {
  return static_cast<size_t>(NumPanels(n) * kPanelCols * k) * DTypeSize(PackedDType(w_dtype));
}

void PackWeight(const void* w, DType w_dtype, int64_t n, int64_t k, void* dst) {
  const int64_t panels = NumPanels(n);
  const int64_t panel_elems = k * kPanelCols;
  if (w_dtype == DType::kBF16) {
    const uint16_t* src = static_cast<const uint16_t*>(w);
    uint16_t* out = static_cast<uint16_t*>(dst);
#pragma omp parallel for schedule(static) if (panels * panel_elems > (int64_t{1} << 16))
    for (int64_t p = 0; p < panels; ++p) {
      uint16_t* panel = out + p * panel_elems;
      for (int64_t j = 0; j < kPanelCols; ++j) {
        const int64_t row = p * kPanelCols + j;
        // Row 32p + j goes to word j % 16 of each step, low half when j < 16 (little endian:
        // the low half is the first uint16 of the word).
        uint16_t* slot = panel + 2 * (j % 16) + j / 16;
        if (row >= n) {
          for (int64_t i = 0; i < k; ++i) slot[i * kPanelCols] = 0;
          continue;
        }
        const uint16_t* src_row = src + row * k;
        for (int64_t i = 0; i < k; ++i) slot[i * kPanelCols] = src_row[i];
      }
    }
    return;
  }
  float* out = static_cast<float*>(dst);
#pragma omp parallel for schedule(static) if (panels * panel_elems > (int64_t{1} << 16))
  for (int64_t p = 0; p < panels; ++p) {
    float* panel = out + p * panel_elems;
    for (int64_t j = 0; j < kPanelCols; ++j) {
      const int64_t row = p * kPanelCols + j;
      if (row >= n) {
        for (int64_t i = 0; i < k; ++i) panel[i * kPanelCols + j] = 0.0f;
        continue;
      }
      for (int64_t i = 0; i < k; ++i)
        panel[i * kPanelCols + j] = LoadAsF32(w, w_dtype, static_cast<size_t>(row * k + i));
    }
  }
}

}  // namespace moeserve::kernels::cpu
