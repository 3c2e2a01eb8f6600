// The CPU matmul's packed weight layout (WeightLayout::kCpuPanels), made once at load so that
// every matmul, decode and prefill alike, reads its weights in the order its kernels consume them.
//
// A weight w [n, k] (torch.nn.Linear rows) becomes ceil(n / 32) panels of kPanelCols = 32 weight
// rows each (rows past n are zero); panel p holds rows [32p, 32p + 32) and is stored k-major:
//  - bf16: per k index i, 16 uint32 words; word j holds w[32p + j][i] in its low half and
//    w[32p + 16 + j][i] in its high half. One 64-byte load gives the 32 values of step i, and
//    two integer ops (shift left 16, and 0xffff0000) turn them into exact fp32 vectors of
//    rows 32p .. 32p+15 and 32p+16 .. 32p+31.
//  - fp32 (fp32 weights, and f16 weights converted exactly at packing): per k index i, the
//    32 values w[32p + j][i], j = 0..31, in order.
// Panel p starts at element p * k * 32 of the packed buffer (64-byte aligned when the buffer is).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/dtype.h"

namespace moeserve::kernels::cpu {

inline constexpr int64_t kPanelCols = 32;

inline int64_t NumPanels(int64_t n) { return (n + kPanelCols - 1) / kPanelCols; }

// The dtype the packed panels hold for weights of `w_dtype`: bf16 stays bf16, f16 and fp32 become
// fp32 (f16 -> fp32 is exact).
DType PackedDType(DType w_dtype);

// Bytes of the packed form of an [n, k] weight of w_dtype.
size_t PackedBytes(DType w_dtype, int64_t n, int64_t k);

// Packs w [n, k] (rows, w_dtype) into dst (PackedBytes(w_dtype, n, k) bytes, 64-byte aligned
// preferably). Pure data movement and exact conversion: the matmul gives the same bits on the
// packed weight as on the rows it came from.
void PackWeight(const void* w, DType w_dtype, int64_t n, int64_t k, void* dst);

}  // namespace moeserve::kernels::cpu
