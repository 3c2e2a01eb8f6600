#include "runtime/model/model_loader.h"

#include <map>

#include "absl/strings/str_cat.h"
#include "kernels/base/status_macros.h"

namespace moeserve::runtime {

absl::StatusOr<std::unique_ptr<LoadedModel>> LoadModelDir(const std::string& dir,
                                                          kernels::Backend* backend,
                                                          const ProgressFn& progress) {
  MOESERVE_ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(dir));
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
                                progress));
  loaded->model = std::make_unique<MixtralModel>(config, std::move(weights), backend);
  return loaded;
}

absl::StatusOr<std::unique_ptr<LoadedModel>> LoadEmbeddedModel(kernels::Backend* backend) {
  MOESERVE_ASSIGN_OR_RETURN(ModelConfig config, PresetConfig("tiny"));
  auto loaded = std::make_unique<LoadedModel>();
  loaded->source = "embedded:tiny";
  loaded->owned = MakeRandomWeights(config, kEmbeddedModelSeed);
  std::map<std::string, const OwnedTensor*> by_name;
  for (const OwnedTensor& t : loaded->owned) by_name[t.name] = &t;
  MOESERVE_ASSIGN_OR_RETURN(
      MixtralWeights weights,
      BindMixtralWeights(
          config,
          [&](const std::string& name,
              const std::vector<int64_t>& shape) -> absl::StatusOr<kernels::TensorView> {
            auto it = by_name.find(name);
            if (it == by_name.end() || it->second->shape != shape) {
              return absl::InternalError(absl::StrCat("embedded model: bad tensor ", name));
            }
            return kernels::TensorView{it->second->bytes.data(), it->second->dtype,
                                       kernels::Device::kCpu, shape};
          }));
  loaded->model = std::make_unique<MixtralModel>(config, std::move(weights), backend);
  return loaded;
}

}  // namespace moeserve::runtime
