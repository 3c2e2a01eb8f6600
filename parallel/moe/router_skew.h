// Skew injection for load tests: a bias added to the router logits of chosen experts, in every
// layer, before top-k. A positive bias makes those experts win more often (hot experts and so a
// hot rank); the measured imbalance (ep_stats.h) grows with it. Off by default: no experts or a
// zero bias leaves routing untouched, and the model then passes no bias at all.
//
// Text form (for a CLI flag or a request field): "E[,E...]:BIAS", e.g. "0:2.5" or "0,5:-1".
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace moeserve::parallel {

struct RouterSkew {
  std::vector<int64_t> experts;  // the experts whose logits are biased
  float bias = 0.0f;             // added to each of their logits

  bool enabled() const { return !experts.empty() && bias != 0.0f; }
};

// The [num_experts] bias vector; InvalidArgument for an expert outside [0, num_experts) or a
// non-finite bias. An empty vector when the skew is not enabled.
absl::StatusOr<std::vector<float>> MakeRouterBias(int64_t num_experts, const RouterSkew& skew);

absl::StatusOr<RouterSkew> ParseRouterSkew(const std::string& text);

}  // namespace moeserve::parallel
