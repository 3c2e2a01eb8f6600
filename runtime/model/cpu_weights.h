// Weights for the CPU backend: every matmul weight (attention projections, routers, held experts'
// w1 / w3 / w2, the LM head) packed once at load into the CPU matmul's panel layout
// (kernels/cpu/matmul_pack.h), so that no step re-packs or re-reads weights in row order.
// Embeddings and norms stay as they are (the embedding is read by row; a tied LM head gets its
// own packed copy). The packed views keep their logical [n, k] shape.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "kernels/tensor.h"
#include "runtime/model/mixtral_weights.h"

namespace moeserve::runtime {

// The weights with every matmul weight packed; *storage receives the buffers the packed views
// point into. The views of `host` stay valid and unchanged.
absl::StatusOr<MixtralWeights> PackCpuWeights(const MixtralWeights& host,
                                              std::vector<kernels::DeviceBuffer>* storage);

}  // namespace moeserve::runtime
