#include "parallel/placement/expert_placement.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace moeserve::parallel {

absl::StatusOr<ExpertPlacement> ExpertPlacement::FromTable(
    int world_size, std::vector<std::vector<std::vector<int>>> ranks) {
  if (world_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("ep_size=", world_size, " must be >= 1"));
  }
  if (ranks.empty() || ranks[0].empty()) {
    return absl::InvalidArgumentError("expert placement: no layers or no experts");
  }
  const size_t num_experts = ranks[0].size();
  for (size_t l = 0; l < ranks.size(); ++l) {
    if (ranks[l].size() != num_experts) {
      return absl::InvalidArgumentError(absl::StrCat("expert placement: layer ", l, " places ",
                                                     ranks[l].size(), " experts, layer 0 places ",
                                                     num_experts));
    }
    for (size_t e = 0; e < num_experts; ++e) {
      std::vector<int>& holders = ranks[l][e];
      if (holders.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("expert placement: layer ", l, " expert ", e, " is held by no rank"));
      }
      std::sort(holders.begin(), holders.end());
      for (size_t i = 0; i < holders.size(); ++i) {
        if (holders[i] < 0 || holders[i] >= world_size) {
          return absl::InvalidArgumentError(
              absl::StrCat("expert placement: layer ", l, " expert ", e, " names rank ", holders[i],
                           ", outside [0, ", world_size, ") for ep_size ", world_size));
        }
        if (i > 0 && holders[i] == holders[i - 1]) {
          return absl::InvalidArgumentError(absl::StrCat("expert placement: layer ", l, " expert ",
                                                         e, " lists rank ", holders[i], " twice"));
        }
      }
    }
  }
  return ExpertPlacement(world_size, std::move(ranks));
}

absl::StatusOr<ExpertPlacement> ExpertPlacement::Contiguous(int64_t num_layers, int64_t num_experts,
                                                            int ep_size) {
  if (num_layers < 1 || num_experts < 1) {
    return absl::InvalidArgumentError(absl::StrCat("expert placement: ", num_layers, " layers and ",
                                                   num_experts, " experts; both must be >= 1"));
  }
  if (ep_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("--ep-size ", ep_size, " must be >= 1"));
  }
  std::vector<std::vector<int>> layer(static_cast<size_t>(num_experts));
  if (num_experts % ep_size == 0) {
    const int64_t per_rank = num_experts / ep_size;
    for (int64_t e = 0; e < num_experts; ++e) layer[e] = {static_cast<int>(e / per_rank)};
  } else if (ep_size % num_experts == 0) {
    const int64_t copies = ep_size / num_experts;
    for (int64_t e = 0; e < num_experts; ++e) {
      for (int64_t c = 0; c < copies; ++c) layer[e].push_back(static_cast<int>(e * copies + c));
    }
  } else if (ep_size < num_experts) {
    // Uneven contiguous split: the first num_experts % ep_size ranks hold one expert more
    // (8 over 3: 3, 3, 2). The caller logs it (IsUnevenSplit): those ranks carry more load.
    const int64_t base = num_experts / ep_size, extra = num_experts % ep_size;
    int64_t e = 0;
    for (int r = 0; r < ep_size; ++r) {
      const int64_t held = base + (r < extra ? 1 : 0);
      for (int64_t i = 0; i < held; ++i) layer[e++] = {r};
    }
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "--ep-size ", ep_size, " is more than num_local_experts=", num_experts,
        " and not a multiple of it; give an expert placement file that places the experts "
        "explicitly, replicating some of them"));
  }
  return FromTable(
      ep_size, std::vector<std::vector<std::vector<int>>>(static_cast<size_t>(num_layers), layer));
}

bool ExpertPlacement::Holds(int rank, int64_t layer, int64_t expert) const {
  const std::vector<int>& r = ranks_[layer][expert];
  return std::binary_search(r.begin(), r.end(), rank);
}

std::vector<int64_t> ExpertPlacement::LocalExperts(int rank, int64_t layer) const {
  std::vector<int64_t> out;
  for (int64_t e = 0; e < num_experts(); ++e) {
    if (Holds(rank, layer, e)) out.push_back(e);
  }
  return out;
}

std::vector<std::pair<int64_t, int64_t>> ExpertPlacement::ExpertsOf(int rank) const {
  std::vector<std::pair<int64_t, int64_t>> out;
  for (int64_t l = 0; l < num_layers(); ++l) {
    for (int64_t e : LocalExperts(rank, l)) out.emplace_back(l, e);
  }
  return out;
}

bool ExpertPlacement::IsUnevenSplit() const {
  for (int r = 1; r < world_size_; ++r) {
    if (ExpertsOf(r).size() != ExpertsOf(0).size()) return true;
  }
  return false;
}

std::string ExpertPlacement::Summary() const {
  int64_t replicated = 0, min_held = num_experts() * num_layers(), max_held = 0;
  for (const auto& layer : ranks_) {
    for (const auto& holders : layer) replicated += holders.size() > 1 ? 1 : 0;
  }
  for (int r = 0; r < world_size_; ++r) {
    const int64_t held = static_cast<int64_t>(ExpertsOf(r).size());
    min_held = std::min(min_held, held);
    max_held = std::max(max_held, held);
  }
  return absl::StrCat("ep_size=", world_size_, ", ", num_experts(), " experts x ", num_layers(),
                      " layers, ", min_held, "..", max_held, " (layer, expert) pairs per rank, ",
                      replicated, " replicated");
}

}  // namespace moeserve::parallel
