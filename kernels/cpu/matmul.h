#pragma once
#include "kernels/ops/matmul.h"
#include "kernels/ops/moe.h"
namespace moeserve::kernels::cpu {
void Matmul(const MatmulParams& p);                // REQUIRES: Validate(p).ok()
void GroupedMatmul(const GroupedMatmulParams& p);  // REQUIRES: Validate(p).ok()
}  // namespace moeserve::kernels::cpu
