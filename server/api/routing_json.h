// Routing traces (return_routing) on the OpenAI wire: the top-level `routing` object of a
// non-stream response, and of the stream chunk in which a choice finishes.
//
//   "routing": {
//     "num_layers": L, "top_k": k,
//     "choices": [ { "index": i,
//                    "token_ids": [T],          the token run at each position 0..T-1
//                    "experts":  [T][L][k],     expert ids the router chose, best first
//                    "weights":  [T][L][k] } ]  their combine weights (softmax over the k)
//   }
//
// T covers the prompt and every generated token but the last (which is never run).
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "nlohmann/json.hpp"
#include "runtime/model/routing_trace.h"

namespace moeserve::server::api {

// (choice index, its trace) pairs; traces are non-null.
nlohmann::json RoutingJson(
    const std::vector<std::pair<int32_t, const runtime::RoutingTrace*>>& choices);

}  // namespace moeserve::server::api
