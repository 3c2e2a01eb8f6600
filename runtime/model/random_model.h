// Random-init models of the Mixtral architecture: presets, deterministic weights, and writing
// them in the Hugging Face layout (used by `moeserve make-model` and the embedded default model).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/dtype.h"
#include "runtime/config/model_config.h"
#include "runtime/model/weight_names.h"

namespace moeserve::runtime {

// Presets: "tiny" (the embedded default: 4 layers, hidden 256, the real 32000-token vocabulary)
// and "mixtral-8x7b" (Mixtral 8x7B's shapes, for GPU benchmarks; choose the layer count).
// num_layers > 0 overrides the preset's layer count.
absl::StatusOr<ModelConfig> PresetConfig(const std::string& name, int64_t num_layers = 0);
std::vector<std::string> PresetNames();

struct OwnedTensor {
  std::string name;
  kernels::DType dtype = kernels::DType::kBF16;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

// Weights of one tensor, a pure function of (seed, name, shape, dtype): uniform values with
// per-role scales chosen so hidden states stay O(1), routing is decisive and greedy text is
// varied. Norm weights are 1 +- 0.1.
OwnedTensor MakeRandomTensor(const std::string& name, const std::vector<int64_t>& shape,
                             kernels::DType dtype, uint64_t seed, int64_t hidden_size);

// Every tensor of the model (config.dtype), in checkpoint order; with holds_expert, only the
// expert tensors it accepts (an expert-parallel rank builds only its own experts).
std::vector<OwnedTensor> MakeRandomWeights(const ModelConfig& config, uint64_t seed,
                                           const ExpertFilter& holds_expert = nullptr);

// Writes config.json and the weights to `dir` (created if missing). Small models go to one
// model.safetensors; larger ones (or shard_per_layer) to one shard per layer plus
// model.safetensors.index.json, generating one shard at a time to bound memory.
absl::Status WriteRandomModel(const ModelConfig& config, uint64_t seed, const std::string& dir,
                              bool shard_per_layer,
                              const std::function<void(int64_t, int64_t)>& on_progress = nullptr);

}  // namespace moeserve::runtime
