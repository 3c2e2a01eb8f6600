#include "runtime/engine/rank_set.h"

#include <algorithm>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/base/status_macros.h"
#include "parallel/comm/in_process_communicator.h"
#include "runtime/model/random_model.h"
#include "spdlog/spdlog.h"

namespace moeserve::runtime {
namespace {

// What the workers need alive for as long as they run: the rank's model (and what backs its
// weights), the group its communicator belongs to, and the placement the model points at.
struct RankResources {
  std::shared_ptr<parallel::InProcessGroup> group;
  std::shared_ptr<const parallel::ExpertPlacement> placement;
  std::unique_ptr<LoadedModel> loaded;
};

absl::StatusOr<std::unique_ptr<LoadedModel>> LoadOne(const RankSetOptions& options,
                                                     kernels::Backend* backend,
                                                     const ModelLoadOptions& load) {
  if (options.model_dir.empty()) return LoadEmbeddedModel(backend, load);
  return LoadModelDir(options.model_dir, backend, load);
}

// The placement of `world` ranks: the JSON file, else the contiguous split. Its shape comes from
// the config, read before any weights.
absl::StatusOr<std::shared_ptr<const parallel::ExpertPlacement>> MakePlacement(
    const RankSetOptions& options, int world) {
  MOESERVE_ASSIGN_OR_RETURN(const ModelConfig config, options.model_dir.empty()
                                                          ? PresetConfig("tiny")
                                                          : LoadModelConfig(options.model_dir));
  absl::StatusOr<parallel::ExpertPlacement> placement =
      options.placement_file.empty()
          ? parallel::ExpertPlacement::Contiguous(config.num_hidden_layers,
                                                  config.num_local_experts, world)
          : parallel::ExpertPlacement::FromJsonFile(
                options.placement_file, config.num_hidden_layers, config.num_local_experts, world);
  MOESERVE_RETURN_IF_ERROR(placement.status());
  if (options.placement_file.empty() && placement->IsUnevenSplit()) {
    spdlog::warn(
        "--ep-size {} does not divide num_local_experts={}: uneven contiguous split ({}); "
        "ranks holding more experts carry more load",
        world, config.num_local_experts, placement->Summary());
  }
  return std::make_shared<const parallel::ExpertPlacement>(*std::move(placement));
}

// What a rank process keeps alive: its communicator and the placement its model points at.
struct ProcessRankResources {
  std::unique_ptr<parallel::Communicator> comm;
  std::shared_ptr<const parallel::ExpertPlacement> placement;
  std::unique_ptr<LoadedModel> loaded;
};

}  // namespace

absl::StatusOr<std::unique_ptr<kernels::Backend>> MakeBackend(const std::string& device,
                                                              int cpu_threads, int cuda_device) {
  std::unique_ptr<kernels::Backend> backend;
  if (device == "cuda" || device == "auto") {
    absl::StatusOr<std::unique_ptr<kernels::Backend>> cuda = kernels::MakeCudaBackend(cuda_device);
    if (cuda.ok()) {
      backend = *std::move(cuda);
    } else if (device == "cuda") {
      return absl::FailedPreconditionError(
          absl::StrCat("--device cuda: ", cuda.status().message()));
    }  // auto: fall back to the CPU

  } else if (device != "cpu") {
    return absl::InvalidArgumentError(
        absl::StrCat("--device must be cpu, cuda or auto, got \"", device, "\""));
  }
  if (!backend) backend = kernels::MakeCpuBackend(cpu_threads);
  return backend;
}

absl::StatusOr<RankSet> LoadRankSet(const RankSetOptions& options) {
  if (options.ep_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--ep-size must be >= 1, got ", options.ep_size));
  }
  if (options.ep_size == 1 && !options.placement_file.empty()) {
    // A placement only places experts over several ranks; ignoring it would leave the user
    // believing it took effect.
    return absl::InvalidArgumentError(
        absl::StrCat("--placement ", options.placement_file,
                     " needs --ep-size > 1 (with one rank every expert is local); give the "
                     "--ep-size the placement was written for, or drop --placement"));
  }
  const int world = options.ep_size;
  const int cores =
      options.threads > 0 ? options.threads : static_cast<int>(std::thread::hardware_concurrency());
  const int threads_per_rank = std::max(1, cores / world);
  RankSet set;

  if (world == 1) {
    RankModel r;
    MOESERVE_ASSIGN_OR_RETURN(r.backend, MakeBackend(options.device, options.threads));
    spdlog::info("backend: {}", r.backend->Describe());
    ModelLoadOptions load;
    load.progress = options.progress;
    load.weight_check = options.weight_check;
    MOESERVE_ASSIGN_OR_RETURN(std::unique_ptr<LoadedModel> loaded,
                              LoadOne(options, r.backend.get(), load));
    r.model = loaded->model.get();
    // Decode graphs only where the backend has graphs (the CPU would just pay for the padding).
    DecodeGraphOptions graphs = options.decode_graphs;
    graphs.enabled = graphs.enabled && r.backend->SupportsGraphs();
    r.model->SetDecodeGraphs(std::move(graphs));
    r.keep_alive = std::shared_ptr<LoadedModel>(std::move(loaded));
    set.ranks.push_back(std::move(r));
    return set;
  }

  MOESERVE_ASSIGN_OR_RETURN(set.placement, MakePlacement(options, world));

  // Expert parallelism runs over the in-process communicator, which moves rows with host
  // memcpy: CPU ranks only until a device communicator (NCCL) is wired in.
  if (options.device == "cuda") {
    return absl::UnimplementedError(absl::StrCat("--device cuda with --ep-size ", world,
                                                 ": expert parallelism needs a device communicator "
                                                 "(NCCL), not built yet; use --device cpu"));
  }
  auto group = std::make_shared<parallel::InProcessGroup>(world);
  for (int rank = 0; rank < world; ++rank) {
    RankModel r;
    MOESERVE_ASSIGN_OR_RETURN(r.backend, MakeBackend("cpu", threads_per_rank));
    spdlog::info("rank {} backend: {}", rank, r.backend->Describe());
    ModelLoadOptions load;
    if (rank == 0) load.progress = options.progress;
    load.weight_check = options.weight_check;
    load.placement = set.placement.get();
    load.rank = rank;
    auto resources = std::make_shared<RankResources>();
    resources->group = group;
    resources->placement = set.placement;
    MOESERVE_ASSIGN_OR_RETURN(resources->loaded, LoadOne(options, r.backend.get(), load));
    MOESERVE_RETURN_IF_ERROR(resources->loaded->model->EnableExpertParallel(
        {.comm = group->comm(rank), .placement = set.placement.get()}));
    r.model = resources->loaded->model.get();
    r.comm = group->comm(rank);
    // EPLB replicas: CPU ranks re-read their model's source (expert_source.h).
    MOESERVE_ASSIGN_OR_RETURN(r.expert_source, MakeExpertSource(*resources->loaded, *r.backend));
    r.keep_alive = resources;
    set.ranks.push_back(std::move(r));
  }
  return set;
}

absl::StatusOr<RankSet> LoadProcessRank(const RankSetOptions& options,
                                        std::unique_ptr<parallel::Communicator> comm) {
  if (comm == nullptr || comm->world_size() != options.ep_size) {
    return absl::InvalidArgumentError("LoadProcessRank: the communicator's world is not --ep-size");
  }
  if (options.device == "cuda") {
    return absl::UnimplementedError(
        "--device cuda with --ep-launch processes: the GPU data plane (NCCL) is not built yet; "
        "use --device cpu");
  }
  const int rank = comm->rank();
  RankSet set;
  MOESERVE_ASSIGN_OR_RETURN(set.placement, MakePlacement(options, comm->world_size()));
  RankModel r;
  MOESERVE_ASSIGN_OR_RETURN(r.backend, MakeBackend("cpu", options.threads));
  spdlog::info("rank {} backend: {}", rank, r.backend->Describe());
  ModelLoadOptions load;
  load.progress = options.progress;
  load.weight_check = options.weight_check;
  load.placement = set.placement.get();
  load.rank = rank;
  auto resources = std::make_shared<ProcessRankResources>();
  resources->placement = set.placement;
  MOESERVE_ASSIGN_OR_RETURN(resources->loaded, LoadOne(options, r.backend.get(), load));
  MOESERVE_RETURN_IF_ERROR(resources->loaded->model->EnableExpertParallel(
      {.comm = comm.get(), .placement = set.placement.get()}));
  r.model = resources->loaded->model.get();
  r.comm = comm.get();
  resources->comm = std::move(comm);
  r.keep_alive = resources;
  set.ranks.push_back(std::move(r));
  return set;
}

}  // namespace moeserve::runtime
