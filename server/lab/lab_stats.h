// The JSON document of GET /v1/lab/stats, which the live imbalance page (GET /lab) polls. The
// same numbers /metrics exposes for the imbalance lab (docs/imbalance-lab.md lists both), grouped
// by span so that a page can draw them without parsing the Prometheus text:
//
//   {"object": "moeserve.lab.stats", "engine_steps", "world_size", "num_layers", "num_experts",
//    "window_steps",
//    "expert_ranks": [L][E] -> ranks holding the expert (ascending),
//    "last_step" / "window": {"expert_tokens": [L][E], "expert_imbalance_ratio": [L],
//                             "expert_cv": [L], "rank_rows": [L][R], "rank_imbalance_ratio": [L],
//                             "rank_cv": [L]},
//    "last_step" also: {"link_rows": [R][R], "link_bytes": [R][R]},
//    "total": {"expert_tokens": [L][E], "rank_rows": [R], "link_rows": [R][R],
//              "link_bytes": [R][R]}}
//
// L layers, E experts, R ranks; links are [src][dst]. Rows are (token, expert choice) pairs.
// Pure function of its inputs (no I/O); server/http serves it.
#pragma once

#include "nlohmann/json.hpp"
#include "parallel/placement/expert_placement.h"
#include "runtime/engine/engine.h"

namespace moeserve::server {

// `placement` null: world size 1, every expert on rank 0.
nlohmann::json LabStatsJson(const runtime::EngineStats& stats,
                            const parallel::ExpertPlacement* placement);

}  // namespace moeserve::server
