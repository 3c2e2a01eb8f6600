// POST /v1/lab/rebalance (EPLB, runtime/engine/eplb.h): the request body and the response JSON.
//
// Request body (optional; empty or {}: the daemon's --eplb-extra-experts):
//   {"extra_experts_per_rank": N}     replica budget per rank per layer, N >= 0
// Response:
//   {"object": "moeserve.lab.rebalance", "changed": bool,
//    "old_placement": {...}, "new_placement": {...}      (placement JSON, expert_placement.h)
//    "imbalance_before": measured rank max/mean over the statistics window,
//    "projected_imbalance_before", "projected_imbalance_after": the planner's projection,
//    "replicas", "experts_prepared", "prepare_ms", "pause_ms", "total_ms"}
// Pure functions of their inputs; server/http serves them.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "runtime/engine/eplb.h"

namespace moeserve::server {

// The budget the body asks for, -1 when it names none. InvalidArgument for bad JSON, unknown
// fields or a negative / non-integer budget.
absl::StatusOr<int64_t> ParseRebalanceBody(const std::string& body);

nlohmann::json RebalanceJson(const runtime::RebalanceResult& result);

}  // namespace moeserve::server
