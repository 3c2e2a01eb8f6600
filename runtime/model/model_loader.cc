#include "runtime/model/model_loader.h"

#include <map>

#include "absl/strings/str_cat.h"
#include "kernels/base/status_macros.h"
#include "runtime/model/cpu_weights.h"
#include "runtime/model/device_weights.h"
#include "runtime/model/weight_names.h"
#include "spdlog/spdlog.h"

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

// The config's sizes against the checkpoint's tensor list, before anything is sized from them:
// the last layer and the last expert must exist, and there must be at least as many tensors as
// the config implies. Reads only names (an index, or the headers already parsed at Open).
absl::Status CheckConfigAgainstCheckpoint(const ModelConfig& c, const Checkpoint& ckpt,
                                          const std::string& config_path) {
  const std::string last_layer = LayerPrefix(c.num_hidden_layers - 1) + "input_layernorm.weight";
  if (!ckpt.Has(last_layer)) {
    return absl::InvalidArgumentError(
        absl::StrCat(config_path, ": num_hidden_layers=", c.num_hidden_layers, " but checkpoint ",
                     ckpt.dir(), " has no tensor '", last_layer, "'"));
  }
  const std::string last_expert = ExpertPrefix(0, c.num_local_experts - 1) + "w1.weight";
  if (!ckpt.Has(last_expert)) {
    return absl::InvalidArgumentError(
        absl::StrCat(config_path, ": num_local_experts=", c.num_local_experts, " but checkpoint ",
                     ckpt.dir(), " has no tensor '", last_expert, "'"));
  }
  // Bounded by ModelConfig::Validate (<= 1024 * (7 + 3 * 1024) + 3): no overflow.
  const int64_t expected =
      2 + (c.tie_word_embeddings ? 0 : 1) + c.num_hidden_layers * (7 + 3 * c.num_local_experts);
  if (ckpt.num_tensors() < expected) {
    return absl::InvalidArgumentError(absl::StrCat(
        config_path, ": num_hidden_layers=", c.num_hidden_layers, ", num_local_experts=",
        c.num_local_experts, " and tie_word_embeddings=", c.tie_word_embeddings ? "true" : "false",
        " need ", expected, " tensors but checkpoint ", ckpt.dir(), " has ", ckpt.num_tensors()));
  }
  return absl::OkStatus();
}

// Whether the loader scans this tensor for NaN / Inf (see WeightCheck).
bool ShouldScan(WeightCheck check, bool is_expert, int rank) {
  switch (check) {
    case WeightCheck::kOff:
      return false;
    case WeightCheck::kWarn:
      return !is_expert && rank == 0;
    case WeightCheck::kFull:
      return true;
  }
  return false;
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

// The model over `weights`: on a device backend first copied to device memory, on the CPU with
// its matmul weights packed (runtime/model/cpu_weights.h).
absl::Status MakeModel(LoadedModel& loaded, const ModelConfig& config, MixtralWeights weights,
                       kernels::Backend* backend) {
  if (backend->device() != kernels::Device::kCpu) {
    MOESERVE_ASSIGN_OR_RETURN(weights, UploadWeights(*backend, weights, &loaded.device_weights));
  } else {
    MOESERVE_ASSIGN_OR_RETURN(weights, PackCpuWeights(weights, &loaded.device_weights));
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
  MOESERVE_RETURN_IF_ERROR(CheckConfigAgainstCheckpoint(config, *ckpt, dir + "/config.json"));
  LoadedModel* out = loaded.get();
  auto load = [&](const std::string& name,
                  const std::vector<int64_t>& shape) -> absl::StatusOr<kernels::TensorView> {
    MOESERVE_ASSIGN_OR_RETURN(kernels::TensorView view, ckpt->Load(name, shape));
    const bool is_expert = name.find(".experts.") != std::string::npos;
    if (!ShouldScan(options.weight_check, is_expert, options.rank)) return view;
    const int64_t bad = CountNonFinite(view);
    if (bad == 0) return view;
    MOESERVE_ASSIGN_OR_RETURN(const TensorInfo info, ckpt->Info(name));
    const std::string what = absl::StrCat(name, " in ", info.file, ": ", bad, " of ", view.numel(),
                                          " values are NaN or Inf");
    if (options.weight_check == WeightCheck::kFull) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " (--check-weights full makes this an error)"));
    }
    spdlog::warn("{}", what);
    out->warnings.push_back(what);
    return view;
  };
  MOESERVE_ASSIGN_OR_RETURN(MixtralWeights weights,
                            BindMixtralWeights(config, load, options.progress,
                                               ExpertsOfRank(options.placement, options.rank)));
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
