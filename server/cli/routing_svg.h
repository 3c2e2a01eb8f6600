// A self-contained SVG of a routing analysis (no script, no external resource), after the
// Mixtral paper's Figure 7 and Table 5:
//   top row      one panel per paper layer: the share of routed rows of each expert, one bar
//                per prompt set, the uniform share 1/E as a dashed line
//   bottom row   per paper layer: how often consecutive tokens keep their first expert and
//                share one of their top-k, per prompt set, the random baselines dashed
#pragma once

#include <string>

#include "server/cli/routing_analysis.h"

namespace moeserve::server {

std::string RoutingSvg(const RoutingAnalysis& analysis);

}  // namespace moeserve::server
