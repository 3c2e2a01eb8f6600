// libFuzzer harness: ExpertPlacement::FromJson on arbitrary text, against a few model shapes
// (layers x experts, ep_size) so both the happy path and the size checks are reached.
// Oracle: no crash, throw or abort; an accepted placement has a valid rank for every expert and
// its ToJson() is accepted again with the same table.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "parallel/placement/expert_placement.h"

namespace {

struct Shape {
  int64_t layers;
  int64_t experts;
  int ep_size;
};
constexpr Shape kShapes[] = {{4, 8, 2}, {2, 8, 4}, {3, 4, 1}, {1, 2, 8}};

void CheckSame(const moeserve::parallel::ExpertPlacement& a,
               const moeserve::parallel::ExpertPlacement& b) {
  if (a.world_size() != b.world_size() || a.num_layers() != b.num_layers() ||
      a.num_experts() != b.num_experts()) {
    std::abort();
  }
  for (int64_t l = 0; l < a.num_layers(); ++l) {
    for (int64_t e = 0; e < a.num_experts(); ++e) {
      if (a.replicas(l, e) != b.replicas(l, e)) std::abort();
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  for (const Shape& s : kShapes) {
    auto placement =
        moeserve::parallel::ExpertPlacement::FromJson(text, s.layers, s.experts, s.ep_size, "fuzz");
    if (!placement.ok()) continue;
    for (int64_t l = 0; l < s.layers; ++l) {
      for (int64_t e = 0; e < s.experts; ++e) {
        const auto& ranks = placement->replicas(l, e);
        if (ranks.empty()) std::abort();
        for (int r : ranks) {
          if (r < 0 || r >= s.ep_size) std::abort();
        }
        (void)placement->ReplicaFor(l, e, /*source_rank=*/s.ep_size - 1, /*ordinal=*/7);
      }
    }
    auto again = moeserve::parallel::ExpertPlacement::FromJson(placement->ToJson(), s.layers,
                                                               s.experts, s.ep_size, "ToJson");
    if (!again.ok()) std::abort();
    CheckSame(*placement, *again);
  }
  return 0;
}
