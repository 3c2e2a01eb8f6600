// The HTTP routes of the daemon as data: which paths exist, which method each takes, and the
// fixed set of endpoint labels /metrics uses (an unknown path is counted as "other", so clients
// cannot grow the exposition by inventing paths). Pure functions; server/http does the I/O.
#pragma once

#include <string_view>

namespace moeserve::server {

// kRecorder*: the imbalance lab's load recorder (server/api/recorder_json.h); kLabPage /
// kLabStats: the live imbalance view (server/lab) and the JSON it polls.
enum class RouteId {
  kCompletions,
  kChat,
  kModels,
  kHealth,
  kMetrics,
  kRecorderStart,
  kRecorderStop,
  kRecorderDump,
  kLabPage,
  kLabStats,
  kRebalance,  // EPLB: plan and switch to a placement with replicas (server/lab/rebalance_json.h)
};

struct Route {
  std::string_view path;
  std::string_view method;  // the one method the route answers; others get 405
  RouteId id;
};

// The route for a request target ("/v1/models?x=1" -> /v1/models); null for an unknown path.
const Route* FindRoute(std::string_view target);

// The endpoint label for /metrics: the route's path, or "other".
std::string_view EndpointLabel(std::string_view target);

// True for "application/json", any case, with or without parameters ("; charset=utf-8").
bool IsJsonMediaType(std::string_view content_type);

}  // namespace moeserve::server
