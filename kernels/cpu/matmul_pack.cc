#include "kernels/cpu/matmul_pack.h"

#include <algorithm>
#include <cstring>

namespace moeserve::kernels::cpu {

DType PackedDType(DType w_dtype) { return w_dtype == DType::kBF16 ? DType::kBF16 : DType::kF32; }

size_t PackedBytes(DType w_dtype, int64_t n, int64_t k) {
  return static_cast<size_t>(NumPanels(n) * kPanelCols * k) * DTypeSize(PackedDType(w_dtype));
}

namespace {

// The panel loop both packed dtypes share: weight row 32p + j, step i goes to
// panel p at i * 32 + Slot(j); rows past n are zero. value(row, i) gives the element.
template <class T, class Slot, class Value>
void PackPanels(T* out, int64_t n, int64_t k, Slot slot_of, Value value) {
  const int64_t panels = NumPanels(n);
  const int64_t panel_elems = k * kPanelCols;
#pragma omp parallel for schedule(static) if (panels * panel_elems > (int64_t{1} << 16))
  for (int64_t p = 0; p < panels; ++p) {
    for (int64_t j = 0; j < kPanelCols; ++j) {
      const int64_t row = p * kPanelCols + j;
      T* slot = out + p * panel_elems + slot_of(j);
      for (int64_t i = 0; i < k; ++i) slot[i * kPanelCols] = row < n ? value(row, i) : T{0};
    }
  }
}

}  // namespace

void PackWeight(const void* w, DType w_dtype, int64_t n, int64_t k, void* dst) {
  if (w_dtype == DType::kBF16) {
    const uint16_t* src = static_cast<const uint16_t*>(w);
    // Row 32p + j goes to word j % 16 of each step, low half when j < 16 (little endian: the low
    // half is the first uint16 of the word); the bits are copied as they are.
    PackPanels(
        static_cast<uint16_t*>(dst), n, k, [](int64_t j) { return 2 * (j % 16) + j / 16; },
        [src, k](int64_t row, int64_t i) { return src[row * k + i]; });
    return;
  }
  PackPanels(
      static_cast<float*>(dst), n, k, [](int64_t j) { return j; },
      [w, w_dtype, k](int64_t row, int64_t i) {
        return LoadAsF32(w, w_dtype, static_cast<size_t>(row * k + i));
      });
}

}  // namespace moeserve::kernels::cpu
