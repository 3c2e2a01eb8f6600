#pragma once
#include "kernels/ops/embedding.h"
namespace moeserve::kernels::cpu {
void Embedding(const EmbeddingParams& p);  // REQUIRES: Validate(p).ok()
}  // namespace moeserve::kernels::cpu
