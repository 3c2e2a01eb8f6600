// Where a rank gets the weights of an expert it did not load (EPLB replicas, issue 12): the
// model's own source read again (the checkpoint, or the random / embedded model regenerated: its
// tensors are a pure function of seed and name), packed for the CPU matmul exactly as the loader
// packs them (cpu_weights.h), so a replica computes the same bits as the original.
//
// Threading: an ExpertSource may be called from any thread, concurrently with the rank's steps
// (it touches neither the model nor its weights; Checkpoint::Load is thread-safe).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/tensor.h"
#include "parallel/moe/moe_layer.h"
#include "runtime/model/model_loader.h"

namespace moeserve::runtime {

// One expert's weights, packed, and the buffer its views point into.
struct PreparedExpert {
  int64_t layer = 0, expert = 0;
  parallel::ExpertWeights weights;  // w1 / w3 / w2 views into `storage`
  kernels::DeviceBuffer storage;
};

using ExpertSource =
    std::function<absl::StatusOr<std::shared_ptr<PreparedExpert>>(int64_t layer, int64_t expert)>;

// The source of `loaded` (which must outlive it): its checkpoint, else the random weights of
// its source string ("random:<seed>", "embedded:tiny"). Unimplemented on a non-CPU backend
// (replicas are CPU-only for now) and for a source it cannot read again.
absl::StatusOr<ExpertSource> MakeExpertSource(const LoadedModel& loaded,
                                              const kernels::Backend& backend);

}  // namespace moeserve::runtime
