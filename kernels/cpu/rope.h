#pragma once
#include "kernels/ops/rope.h"
namespace moeserve::kernels::cpu {
void Rope(const RopeParams& p);  // REQUIRES: Validate(p).ok()
}  // namespace moeserve::kernels::cpu
