// Weights on a device backend: copies a bound MixtralWeights (views of an mmap'ed checkpoint or
// of in-memory tensors) into the backend's device memory at load time.
//
// Layout: one buffer for every dense tensor (embeddings, norms, attention, routers, LM head; a
// tied LM head shares the embedding), and per layer and projection (w1, w3, w2) one stacked
// [held_experts, n, k] buffer holding the experts this rank holds, in expert order. The
// GroupedMatmul pointer tables are built from the returned views (parallel::BuildExpertTables).
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "runtime/model/mixtral_weights.h"

namespace moeserve::runtime {

// Bytes UploadWeights allocates for `host` (alignment padding included).
size_t DeviceWeightBytes(const MixtralWeights& host);

// Checks the total against backend.MemoryInfo().free_bytes before copying anything
// (ResourceExhausted naming both numbers), then copies every tensor and synchronises once.
// *storage receives the buffers the returned views point into.
absl::StatusOr<MixtralWeights> UploadWeights(kernels::Backend& backend, const MixtralWeights& host,
                                             std::vector<kernels::DeviceBuffer>* storage);

}  // namespace moeserve::runtime
