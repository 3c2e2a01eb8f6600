// ExpertPlacement: which rank(s) of an expert-parallel group hold each expert of each layer.
//
// The placement is data, not code: built from --ep-size (contiguous split), from a JSON file, or
// from an explicit table, and validated once. An expert held by several ranks is "replicated":
// the rows routed to it are split between its replicas (ReplicaFor), which spreads a hot
// expert's load. Results do not depend on the placement: every row is computed by the same
// expert weights whichever replica runs it, so any valid placement gives the same bits.
//
// JSON format (FromJson), ranks listed per expert:
//   {
//     "world_size": 4,                       // optional; must equal --ep-size when given
//     "experts": [[0], [0], [1], [1, 3], [2], [2], [3], [3, 0]],
//                                            // every layer unless overridden; expert e -> ranks
//     "layers": {"5": [[0, 1], [0], ...]}    // optional per-layer overrides
//   }
// Either "experts" or an entry for every layer in "layers" is required.
//
// Threading: immutable after construction; safe to share between rank threads.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace moeserve::parallel {

class ExpertPlacement {
 public:
  // ranks[layer][expert] = the ranks holding it. Checks: every expert has at least one rank,
  // ranks are in [0, world_size) and not repeated. Ranks are kept sorted.
  static absl::StatusOr<ExpertPlacement> FromTable(
      int world_size, std::vector<std::vector<std::vector<int>>> ranks);

  // The --ep-size split. num_experts divisible by ep_size: rank r holds experts
  // [r * n, (r + 1) * n) of every layer, n = num_experts / ep_size. More ranks than experts with
  // ep_size divisible by num_experts: expert e is replicated on ranks [e * m, (e + 1) * m),
  // m = ep_size / num_experts. Fewer ranks than experts, not dividing them: an uneven contiguous
  // split, the first num_experts % ep_size ranks holding one expert more (8 over 3: 3, 3, 2;
  // IsUnevenSplit says so, for the start-up log). More ranks than experts and not a multiple:
  // InvalidArgument naming both numbers (use a placement file).
  static absl::StatusOr<ExpertPlacement> Contiguous(int64_t num_layers, int64_t num_experts,
                                                    int ep_size);

  // The JSON format above. `source` names the input in error messages (a file path).
  static absl::StatusOr<ExpertPlacement> FromJson(const std::string& text, int64_t num_layers,
                                                  int64_t num_experts, int ep_size,
                                                  const std::string& source = "placement");
  static absl::StatusOr<ExpertPlacement> FromJsonFile(const std::string& path, int64_t num_layers,
                                                      int64_t num_experts, int ep_size);

  int world_size() const { return world_size_; }
  int64_t num_layers() const { return static_cast<int64_t>(ranks_.size()); }
  int64_t num_experts() const {
    return ranks_.empty() ? 0 : static_cast<int64_t>(ranks_[0].size());
  }

  // The ranks holding (layer, expert), ascending, at least one.
  const std::vector<int>& replicas(int64_t layer, int64_t expert) const {
    return ranks_[layer][expert];
  }
  bool Holds(int rank, int64_t layer, int64_t expert) const;
  // Experts of `layer` held by `rank`, ascending.
  std::vector<int64_t> LocalExperts(int rank, int64_t layer) const;
  // Every (layer, expert) held by `rank`: what that rank loads.
  std::vector<std::pair<int64_t, int64_t>> ExpertsOf(int rank) const;

  // The rank that computes a row routed to (layer, expert) by `source_rank`, where `ordinal`
  // numbers that source's rows for this expert in one call from 0 (in ascending token order).
  // Round robin over the replicas, starting at replica (source_rank mod R): one source spreads
  // its rows evenly, and different sources start on different replicas. Deterministic.
  int ReplicaFor(int64_t layer, int64_t expert, int source_rank, int64_t ordinal) const {
    const std::vector<int>& r = ranks_[layer][expert];
    if (r.size() == 1) return r[0];
    const int64_t n = static_cast<int64_t>(r.size());
    return r[static_cast<size_t>((source_rank % n + ordinal % n) % n)];
  }

  // Whether the ranks hold different numbers of (layer, expert) pairs (an uneven split).
  bool IsUnevenSplit() const;

  // Canonical JSON ("world_size", "experts" when all layers agree, else "layers"), readable by
  // FromJson; for start-up logs and ModelInfo.
  std::string ToJson() const;
  // One line, e.g. "ep_size=4, 8 experts x 32 layers, 2 per rank, 0 replicated".
  std::string Summary() const;

 private:
  ExpertPlacement(int world_size, std::vector<std::vector<std::vector<int>>> ranks)
      : world_size_(world_size), ranks_(std::move(ranks)) {}

  int world_size_ = 1;
  std::vector<std::vector<std::vector<int>>> ranks_;  // [layer][expert] -> sorted ranks
};

}  // namespace moeserve::parallel
