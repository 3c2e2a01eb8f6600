// Random-init models built directly in the backend's memory (`moeserve bench --preset`): every
// tensor is allocated on the device and filled there by kernels::RandomFillOnBackend, so a
// Mixtral 8x7B (93 GB of bf16) needs no file and no host copy.
//
// Values are uniform with the per-role scales of MakeRandomTensor (random_model.h): norms 1 +-
// 0.1, embeddings std 1, routers std 4/sqrt(hidden) (decisive, non-degenerate routing), every
// other matrix std 1/sqrt(fan_in). The values are not MakeRandomTensor's (a different hash: one
// that a kernel computes per element), but they are the same on CPU and CUDA.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "runtime/config/model_config.h"
#include "runtime/model/model_loader.h"

namespace moeserve::runtime {

// Device bytes the model's weights take (every tensor, 256-byte aligned).
size_t DeviceRandomModelBytes(const ModelConfig& config);

// Checks DeviceRandomModelBytes + reserve_bytes against backend->MemoryInfo().free_bytes
// (ResourceExhausted naming the numbers) before allocating anything, then allocates one buffer
// per layer (plus one for the embeddings, final norm and LM head), fills every tensor and binds
// the model. source is "device-random:<seed>"; LoadedModel::device_weights owns the memory (also
// on CPU, where the buffers are host memory). weights_out (optional) receives a copy of the
// bound views, for benchmarks that run one block alone (valid while the LoadedModel lives).
absl::StatusOr<std::unique_ptr<LoadedModel>> MakeDeviceRandomModel(
    const ModelConfig& config, uint64_t seed, kernels::Backend* backend, size_t reserve_bytes = 0,
    MixtralWeights* weights_out = nullptr);

}  // namespace moeserve::runtime
