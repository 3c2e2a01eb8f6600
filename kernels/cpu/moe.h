#pragma once
#include "kernels/ops/moe.h"
namespace moeserve::kernels::cpu {
void MoeAlign(const MoeAlignParams& p);      // REQUIRES: Validate(p).ok()
void GatherRows(const GatherRowsParams& p);  // REQUIRES: Validate(p).ok()
void SwiGlu(const SwiGluParams& p);          // REQUIRES: Validate(p).ok()
void MoeCombine(const MoeCombineParams& p);  // REQUIRES: Validate(p).ok()
}  // namespace moeserve::kernels::cpu
