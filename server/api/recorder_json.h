// The load recorder (runtime/engine/load_recorder.h) on the HTTP wire:
//   POST /v1/lab/recorder/start, POST /v1/lab/recorder/stop   -> the state, without steps
//   GET  /v1/lab/recorder/dump                                -> the state and every kept step
//
//   {"recording": bool, "max_steps": N, "steps_dropped": D, "num_layers": L, "num_experts": E,
//    "world_size": R,
//    "steps": [ {"step": s,
//                "expert_tokens": [L][E],   rows routed to each expert, summed over ranks
//                "rank_rows":     [L][R]} ] rows each rank's experts computed
//   }
// A row is one (token, expert choice) pair (top-2 routing: two rows a token).
#pragma once

#include "nlohmann/json.hpp"
#include "runtime/engine/load_recorder.h"

namespace moeserve::server::api {

nlohmann::json RecorderJson(const runtime::RecorderDump& dump, bool with_steps);

}  // namespace moeserve::server::api
