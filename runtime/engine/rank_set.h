// The ranks of one engine process, ready for Engine::Create. World size 1: one model holding every
// expert. Expert parallelism (ep_size > 1): an in-process communicator group (one worker thread
// per rank; the CUDA/NCCL issue swaps in one GPU per rank), an ExpertPlacement, and per rank a
// backend and a model that loaded only the experts the placement gives it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "parallel/placement/expert_placement.h"
#include "runtime/engine/engine.h"
#include "runtime/model/decode_graphs.h"
#include "runtime/model/model_loader.h"

namespace moeserve::runtime {

struct RankSetOptions {
  std::string model_dir;  // empty: the embedded default model
  int ep_size = 1;        // ranks; must divide num_local_experts unless a placement file is given
  // JSON placement (replicas allowed); empty: contiguous split. Requires ep_size > 1.
  std::string placement_file;
  int threads = 0;      // CPU threads in all (0: every core), split between the ranks
  ProgressFn progress;  // loading progress of rank 0
  WeightCheck weight_check = WeightCheck::kWarn;  // NaN / Inf scan (--check-weights)
  std::string device = "auto";                    // "cpu", "cuda" or "auto" (MakeBackend)
  // World size 1 on a backend with graphs: decode steps as CUDA graphs (decode_graphs.h). With
  // expert parallelism steps always run eagerly (the exchange is driven from the host).
  DecodeGraphOptions decode_graphs{.enabled = true};
};

struct RankSet {
  std::vector<RankModel> ranks;
  // Shared with every RankModel's keep_alive; null at world size 1.
  std::shared_ptr<const parallel::ExpertPlacement> placement;
};

absl::StatusOr<RankSet> LoadRankSet(const RankSetOptions& options);

// One rank of a group whose ranks are PROCESSES (--ep-launch processes): the placement of
// comm->world_size() (= options.ep_size) ranks, and one RankModel on the CPU with
// options.threads threads (0: every core) holding only the experts the placement gives
// comm->rank(); its MoE layers exchange through `comm`, which the RankModel keeps alive.
absl::StatusOr<RankSet> LoadProcessRank(const RankSetOptions& options,
                                        std::unique_ptr<parallel::Communicator> comm);

// The compute backend `device` names: "cpu" (cpu_threads, 0: all cores), "cuda" (GPU
// cuda_device; an error when the build has no CUDA or there is no usable GPU) or "auto" (CUDA
// when MakeCudaBackend succeeds, else the CPU). Every command (serve, generate, bench) creates
// its backends here and logs Backend::Describe() (generate and bench on stderr: their stdout is
// the result).
absl::StatusOr<std::unique_ptr<kernels::Backend>> MakeBackend(const std::string& device,
                                                              int cpu_threads, int cuda_device = 0);

}  // namespace moeserve::runtime
