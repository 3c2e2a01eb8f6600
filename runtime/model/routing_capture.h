// Per-step capture of the router's choices for the sequences that asked for their routing
// (SequenceStep::routing). The model calls, per step:
//
//   Prepare(batch, T)            before the layers: sizes the pinned host buffer when a sequence
//                                of the batch wants its routing; otherwise active() is false and
//                                the step does exactly what it did without this class
//   ids(l) / weights(l)          host destinations [T, top_k] of layer l's expert ids / weights
//   Enqueue(l, ids, weights)     world size 1: async copies from the MoE workspace's device
//                                routing of layer l (stream-ordered before the next layer
//                                overwrites it)
//   Scatter(batch)               after the step's Synchronize: each asking sequence's rows into
//                                its RoutingTrace, by position (before kv->num_tokens advances)
//
// Host buffer: [layers, T, top_k] int32 ids, then [layers, T, top_k] fp32 weights; grows only.
// Threading: the model's thread.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "kernels/backend.h"

namespace moeserve::runtime {

struct SequenceStep;

class RoutingCapture {
 public:
  absl::Status Prepare(kernels::Backend& backend, absl::Span<const SequenceStep> batch,
                       int64_t num_layers, int64_t num_tokens, int64_t top_k);
  bool active() const { return active_; }
  int32_t* ids(int64_t layer) const { return ids_ + layer * num_tokens_ * top_k_; }
  float* weights(int64_t layer) const { return weights_ + layer * num_tokens_ * top_k_; }
  absl::Status Enqueue(kernels::Backend& backend, int64_t layer, const int32_t* device_ids,
                       const float* device_weights) const;
  void Scatter(absl::Span<const SequenceStep> batch) const;

 private:
  bool active_ = false;
  kernels::DeviceBuffer host_;
  int32_t* ids_ = nullptr;
  float* weights_ = nullptr;
  int64_t num_layers_ = 0, num_tokens_ = 0, top_k_ = 0;
};

}  // namespace moeserve::runtime
