#pragma once
#include "kernels/ops/router.h"
namespace moeserve::kernels::cpu {
void RouterTopK(const RouterTopKParams& p);  // REQUIRES: Validate(p).ok()
}  // namespace moeserve::kernels::cpu
