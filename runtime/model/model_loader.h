// Turning a model directory (or the embedded default) into a ready MixtralModel.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "runtime/model/mixtral_model.h"
#include "runtime/model/random_model.h"
#include "runtime/weights/safetensors.h"

namespace moeserve::runtime {

// Owns whatever backs the weight views (an mmap'ed checkpoint or in-memory tensors) together
// with the model that points into it.
struct LoadedModel {
  std::string source;  // directory, or "embedded:tiny"
  std::unique_ptr<Checkpoint> checkpoint;
  std::vector<OwnedTensor> owned;
  std::unique_ptr<MixtralModel> model;
};

using ProgressFn = std::function<void(int64_t done, int64_t total)>;

// Reads <dir>/config.json and the safetensors weights (single file or sharded).
absl::StatusOr<std::unique_ptr<LoadedModel>> LoadModelDir(const std::string& dir,
                                                          kernels::Backend* backend,
                                                          const ProgressFn& progress = nullptr);

// The embedded default model: preset "tiny" with weights from seed 0, built in memory. Its text
// is not meaningful; it exists so that the daemon runs with no download.
absl::StatusOr<std::unique_ptr<LoadedModel>> LoadEmbeddedModel(kernels::Backend* backend);
inline constexpr uint64_t kEmbeddedModelSeed = 0;

}  // namespace moeserve::runtime
