// Turning a model directory (or the embedded default, or a random model) into a ready
// MixtralModel.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "parallel/placement/expert_placement.h"
#include "runtime/model/mixtral_model.h"
#include "runtime/model/random_model.h"
#include "runtime/weights/safetensors.h"

namespace moeserve::runtime {

// Owns whatever backs the weight views (an mmap'ed checkpoint or in-memory tensors, and on a
// device backend the device copies the model uses) together with the model that points into it.
// On CPU the model reads embeddings and norms from the host views and its matmul weights from
// copies packed at load (runtime/model/cpu_weights.h); on a device backend every tensor is
// copied to device memory at load (runtime/model/device_weights.h).
struct LoadedModel {
  std::string source;  // directory, "embedded:tiny" or "random:<seed>"
  std::unique_ptr<Checkpoint> checkpoint;
  std::vector<OwnedTensor> owned;
  // The weights the model uses: device copies, or on CPU the packed matmul weights.
  std::vector<kernels::DeviceBuffer> device_weights;
  std::unique_ptr<MixtralModel> model;
  // Load-time warnings (non-finite weights, see WeightCheck), also logged as they are found.
  std::vector<std::string> warnings;
};

using ProgressFn = std::function<void(int64_t done, int64_t total)>;

struct ModelLoadOptions {
  ProgressFn progress;  // (tensors done, total) after each tensor
  // Expert parallelism: load only the experts `placement` assigns to `rank` (every other
  // expert's tensors are never read from the checkpoint). Null: every expert. The placement must
  // match the config's layers and experts. The caller still connects the model to its group
  // (MixtralModel::EnableExpertParallel).
  const parallel::ExpertPlacement* placement = nullptr;
  int rank = 0;
  // NaN / Inf scan of checkpoint weights (random models are not scanned).
  WeightCheck weight_check = WeightCheck::kWarn;
};

// Reads <dir>/config.json and the safetensors weights (single file or sharded). The config is
// checked against the checkpoint's tensor list (layers, experts, tensor count) before any weight
// list is sized from it; each weight's shape and dtype is checked as it is bound.
absl::StatusOr<std::unique_ptr<LoadedModel>> LoadModelDir(const std::string& dir,
                                                          kernels::Backend* backend,
                                                          const ModelLoadOptions& options);
absl::StatusOr<std::unique_ptr<LoadedModel>> LoadModelDir(const std::string& dir,
                                                          kernels::Backend* backend,
                                                          const ProgressFn& progress = nullptr);

// A random-init model of `config` built in memory (MakeRandomWeights with `seed`).
absl::StatusOr<std::unique_ptr<LoadedModel>> LoadRandomModel(const ModelConfig& config,
                                                             uint64_t seed,
                                                             kernels::Backend* backend,
                                                             const ModelLoadOptions& options = {});

// The embedded default model: preset "tiny" with weights from seed 0, built in memory. Its text
// is not meaningful; it exists so that the daemon runs with no download.
absl::StatusOr<std::unique_ptr<LoadedModel>> LoadEmbeddedModel(
    kernels::Backend* backend, const ModelLoadOptions& options = {});
inline constexpr uint64_t kEmbeddedModelSeed = 0;

// The filter of the experts `placement` assigns to `rank`; null when placement is null.
ExpertFilter ExpertsOfRank(const parallel::ExpertPlacement* placement, int rank);

}  // namespace moeserve::runtime
