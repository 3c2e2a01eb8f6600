#pragma once
#include "kernels/ops/matmul.h"
namespace moeserve::kernels::cpu {
void Matmul(const MatmulParams& p);  // REQUIRES: Validate(p).ok()
}  // namespace moeserve::kernels::cpu
