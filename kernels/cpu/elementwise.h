#pragma once
#include "kernels/ops/elementwise.h"
namespace moeserve::kernels::cpu {
void AddInPlace(const AddInPlaceParams& p);  // REQUIRES: Validate(p).ok()
}  // namespace moeserve::kernels::cpu
