#pragma once
#include "kernels/ops/rmsnorm.h"
namespace moeserve::kernels::cpu {
void RmsNorm(const RmsNormParams& p);  // REQUIRES: Validate(p).ok()
}  // namespace moeserve::kernels::cpu
