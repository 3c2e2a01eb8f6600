#include "runtime/model/model_loader.h"

#include <map>

#include "absl/strings/str_cat.h"
#include "kernels/base/status_macros.h"
#include "runtime/model/device_weights.h"

namespace moeserve::runtime {
namespace {

absl::Status CheckPlacement(const ModelConfig& config, const ModelLoadOptions& options) {
  const parallel::ExpertPlacement* p = options.placement;
  if (p == nullptr) return absl::OkStatus();
  if (p->num_layers() != config.num_hidden_layers || p->num_experts() != config.num_local_experts) {
    return absl::InvalidArgumentError(
        absl::StrCat("expert placement has ", p->num_layers(), " layers x ", p->num_experts(),
                     " experts, but config.json has num_hidden_layers=", config.num_hidden_layers,
                     " and num_local_experts=", config.num_local_experts));
  }
  if (options.rank < 0 || options.rank >= p->world_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", options.rank, " is outside [0, ", p->world_size(), ")"));
  }
  return absl::OkStatus();
}

// Binds in-memory tensors (random weights) by name.
absl::StatusOr<MixtralWeights> BindOwned(const ModelConfig& config,
                                         const std::vector<OwnedTensor>& owned,
                                         const std::string& source,
                                         const ModelLoadOptions& options) {
  std::map<std::string, const OwnedTensor*> by_name;
  for (const OwnedTensor& t : owned) by_name[t.name] = &t;
  return BindMixtralWeights(
      config,
      [&](const std::string& name,
          const std::vector<int64_t>& shape) -> absl::StatusOr<kernels::TensorView> {
        auto it = by_name.find(name);
        if (it == by_name.end() || it->second->shape != shape) {
          return absl::InternalError(absl::StrCat(source, ": bad tensor ", name));
        }
        return kernels::TensorView{it->second->bytes.data(), it->second->dtype,
                                   kernels::Device::kCpu, shape};
      },
      options.progress, ExpertsOfRank(options.placement, options.rank));
}

// The model over `weights`, first copied to device memory when the backend is not the CPU.
absl::Status MakeModel(LoadedModel& loaded, const ModelConfig& config, MixtralWeights weights,
                       kernels::Backend* backend) {
  if (backend->device() != kernels::Device::kCpu) {
    MOESERVE_ASSIGN_OR_RETURN(weights, UploadWeights(*backend, weights, &loaded.device_weights));
  }
  loaded.model = std::make_unique<MixtralModel>(config, std::move(weights), backend);
  return absl::OkStatus();
}

}  // namespace

ExpertFilter ExpertsOfRank(const parallel::ExpertPlacement* placement, int rank) {
  if (placement == nullptr) return nullptr;
  return [placement, rank](int64_t layer, int64_t expert) {
    return placement->Holds(rank, layer, expert);
  };
}

absl::StatusOr<std::unique_ptr<LoadedModel>> LoadModelDir(const std::string& dir,
                                                          kernels::Backend* backend,
                                                          const ModelLoadOptions& options) {
  MOESERVE_ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(dir));
  MOESERVE_RETURN_IF_ERROR(CheckPlacement(config, options));
  auto loaded = std::make_unique<LoadedModel>();
  loaded->source = dir;
  MOESERVE_ASSIGN_OR_RETURN(loaded->checkpoint, Checkpoint::Open(dir));
  Checkpoint* ckpt = loaded->checkpoint.get();
  MOESERVE_ASSIGN_OR_RETURN(MixtralWeights weights,
                            BindMixtralWeights(
                                config,
                                [ckpt](const std::string& name, const std::vector<int64_t>& shape) {
                                  return ckpt->Load(name, shape);
                                },
                                options.progress, ExpertsOfRank(options.placement, options.rank)));
  MOESERVE_RETURN_IF_ERROR(MakeModel(*loaded, config, std::move(weights), backend));
  return loaded;
}

absl::StatusOr<std::unique_ptr<LoadedModel>> LoadModelDir(const std::string& dir,
                                                          kernels::Backend* backend,
                                                          const ProgressFn& progress) {
  ModelLoadOptions options;
  options.progress = progress;
  return LoadModelDir(dir, backend, options);
}

absl::StatusOr<std::unique_ptr<LoadedModel>> LoadRandomModel(const ModelConfig& config,
                                                             uint64_t seed,
                                                             kernels::Backend* backend,
                                                             const ModelLoadOptions& options) {
  MOESERVE_RETURN_IF_ERROR(config.Validate());
  MOESERVE_RETURN_IF_ERROR(CheckPlacement(config, options));
  auto loaded = std::make_unique<LoadedModel>();
  loaded->source = absl::StrCat("random:", seed);
  loaded->owned = MakeRandomWeights(config, seed, ExpertsOfRank(options.placement, options.rank));
  MOESERVE_ASSIGN_OR_RETURN(MixtralWeights weights,
                            BindOwned(config, loaded->owned, loaded->source, options));
  MOESERVE_RETURN_IF_ERROR(MakeModel(*loaded, config, std::move(weights), backend));
  return loaded;
}

absl::StatusOr<std::unique_ptr<LoadedModel>> LoadEmbeddedModel(kernels::Backend* backend,
                                                               const ModelLoadOptions& options) {
  MOESERVE_ASSIGN_OR_RETURN(ModelConfig config, PresetConfig("tiny"));
  MOESERVE_ASSIGN_OR_RETURN(auto loaded,
                            LoadRandomModel(config, kEmbeddedModelSeed, backend, options));
  loaded->source = "embedded:tiny";
  return loaded;
}

}  // namespace moeserve::runtime
