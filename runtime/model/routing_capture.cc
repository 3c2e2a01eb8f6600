#include "runtime/model/routing_capture.h"

#include <algorithm>
#include <utility>

#include "kernels/base/status_macros.h"
#include "runtime/model/mixtral_model.h"
#include "runtime/model/routing_trace.h"

namespace moeserve::runtime {

absl::Status RoutingCapture::Prepare(kernels::Backend& backend,
                                     absl::Span<const SequenceStep> batch, int64_t num_layers,
                                     int64_t num_tokens, int64_t top_k) {
  active_ = false;
  bool any = false;
  for (const SequenceStep& step : batch) any = any || step.routing != nullptr;
  if (!any || num_tokens == 0) return absl::OkStatus();
  const size_t entries = static_cast<size_t>(num_layers * num_tokens * top_k);
  const size_t bytes = entries * (sizeof(int32_t) + sizeof(float));
  if (host_.bytes() < bytes) {
    // Grows only; the previous step's copies finished at its Synchronize.
    MOESERVE_ASSIGN_OR_RETURN(host_, backend.AllocateHost(bytes * 2));
  }
  ids_ = host_.as<int32_t>();
  weights_ = reinterpret_cast<float*>(ids_ + entries);
  num_layers_ = num_layers;
  num_tokens_ = num_tokens;
  top_k_ = top_k;
  active_ = true;
  return absl::OkStatus();
}

absl::Status RoutingCapture::Enqueue(kernels::Backend& backend, int64_t layer,
                                     const int32_t* device_ids, const float* device_weights) const {
  const size_t n = static_cast<size_t>(num_tokens_ * top_k_);
  MOESERVE_RETURN_IF_ERROR(backend.CopyToHostAsync(ids(layer), device_ids, sizeof(int32_t) * n));
  return backend.CopyToHostAsync(weights(layer), device_weights, sizeof(float) * n);
}

void RoutingCapture::Scatter(absl::Span<const SequenceStep> batch) const {
  if (!active_) return;
  int64_t t0 = 0;  // the sequence's first row in the step's flattened tokens
  for (const SequenceStep& step : batch) {
    const int64_t n = static_cast<int64_t>(step.new_tokens.size());
    if (RoutingTrace* trace = step.routing; trace != nullptr) {
      if (trace->num_layers == 0) *trace = RoutingTrace(num_layers_, top_k_);
      for (int64_t i = 0; i < n; ++i) {
        const int64_t position = step.kv->num_tokens + i;
        trace->Reserve(position, 0);
        trace->tokens[static_cast<size_t>(position)] = step.new_tokens[static_cast<size_t>(i)];
        for (int64_t l = 0; l < num_layers_; ++l) {
          const int64_t dst = trace->Reserve(position, l);
          const int64_t src = (t0 + i) * top_k_;
          int32_t* e = trace->experts.data() + dst;
          float* w = trace->weights.data() + dst;
          std::copy_n(ids(l) + src, top_k_, e);
          std::copy_n(weights(l) + src, top_k_, w);
          // The router emits a token's choices by ascending expert id (the combine order);
          // traces list them best first: descending weight, ties by ascending id (insertion
          // sort over k entries, stable).
          for (int64_t j = 1; j < top_k_; ++j) {
            for (int64_t i2 = j; i2 > 0 && w[i2] > w[i2 - 1]; --i2) {
              std::swap(w[i2], w[i2 - 1]);
              std::swap(e[i2], e[i2 - 1]);
            }
          }
        }
      }
    }
    t0 += n;
  }
}

}  // namespace moeserve::runtime
