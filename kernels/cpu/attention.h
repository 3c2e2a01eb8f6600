#pragma once
#include "kernels/ops/attention.h"
namespace moeserve::kernels::cpu {
void KvWrite(const KvWriteParams& p);                // REQUIRES: Validate(p).ok()
void PagedAttention(const PagedAttentionParams& p);  // REQUIRES: Validate(p).ok()
}  // namespace moeserve::kernels::cpu
