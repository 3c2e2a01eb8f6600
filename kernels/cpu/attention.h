#pragma once
#include "kernels/cpu/cpu_features.h"
#include "kernels/ops/attention.h"
namespace moeserve::kernels::cpu {
void KvWrite(const KvWriteParams& p);                // REQUIRES: Validate(p).ok()
void PagedAttention(const PagedAttentionParams& p);  // REQUIRES: Validate(p).ok()
// The same on a chosen SIMD path (clamped to what the CPU runs); every path gives the same bits.
void PagedAttention(const PagedAttentionParams& p, CpuIsa isa);
}  // namespace moeserve::kernels::cpu
